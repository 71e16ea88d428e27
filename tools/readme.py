"""Write README.md from nbs/index.ipynb (nbdev's own `nbdev-readme` needs Quarto, which is not installable everywhere).
Markdown cells are copied; visible code cells become fenced code blocks; `#| hide` cells are left out.
`python tools/readme.py --check` exits 1 if README.md is out of step with the notebook (used by the tests)."""
import json, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

def render(nb_path=ROOT/'nbs'/'index.ipynb'):
    nb = json.loads(Path(nb_path).read_text())
    parts = []
    for c in nb['cells']:
        src = ''.join(c['source']).strip()
        if not src: continue
        if c['cell_type'] == 'markdown': parts.append(src)
        elif c['cell_type'] == 'code':
            lines = src.splitlines()
            if any(l.strip().replace(' ', '') in ('#|hide', '#|export', '#|exporti') for l in lines[:3]): continue
            parts.append('```python\n' + '\n'.join(l for l in lines if not l.startswith('#|')) + '\n```')
    return '<!-- generated from nbs/index.ipynb by tools/readme.py: edit the notebook, not this file -->\n\n' + '\n\n'.join(parts) + '\n'

if __name__ == '__main__':
    txt, dst = render(), ROOT/'README.md'
    if '--check' in sys.argv:
        ok = dst.exists() and dst.read_text() == txt
        print('README.md is in step with nbs/index.ipynb' if ok else 'README.md is out of step: run python tools/readme.py')
        sys.exit(0 if ok else 1)
    dst.write_text(txt); print(f'wrote {dst}')
