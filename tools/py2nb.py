"""Developer helper: turn a py:percent draft (`# %%` code cells, `# %% [markdown]` prose cells) into an nbdev notebook.

    python tools/py2nb.py draft.py nbs/00_data.ipynb

The notebook in `nbs/` is the source of truth once written; drafts are scratch files and are not committed.
"""
import json, re, sys
from pathlib import Path

def parse(text):
    cells, kind, buf = [], None, []
    def flush():
        if kind is None: return
        lines = buf[:]
        while lines and not lines[-1].strip(): lines.pop()
        while lines and not lines[0].strip(): lines.pop(0)
        if kind == 'markdown': lines = [re.sub(r'^# ?', '', l) for l in lines]
        if lines or kind == 'code': cells.append((kind, lines))
    for line in text.splitlines():
        m = re.match(r'^# %%( \[markdown\])?\s*$', line)
        if m:
            flush(); kind, buf = ('markdown' if m.group(1) else 'code'), []
        else: buf.append(line)
    flush()
    return cells

def to_nb(cells):
    out = []
    for kind, lines in cells:
        src = [l + '\n' for l in lines]
        if src: src[-1] = src[-1][:-1]
        c = dict(cell_type=kind, metadata={}, source=src)
        if kind == 'code': c.update(execution_count=None, outputs=[])
        out.append(c)
    return dict(cells=out, metadata=dict(kernelspec=dict(display_name='python3', language='python', name='python3')),
                nbformat=4, nbformat_minor=5)

if __name__ == '__main__':
    src, dst = map(Path, sys.argv[1:3])
    Path(dst).write_text(json.dumps(to_nb(parse(src.read_text())), indent=1) + '\n')
    print(f'wrote {dst}')
