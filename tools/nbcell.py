"""Developer helper: read and edit single notebook cells from the shell (source of truth stays the .ipynb).

    python tools/nbcell.py list NB                 # index, type, id, first line of every cell
    python tools/nbcell.py get NB I [I2 ...]       # print cells' sources
    python tools/nbcell.py set NB I FILE|-         # replace cell I's source (outputs cleared)
    python tools/nbcell.py insert NB I code|markdown FILE|-   # new cell before index I (I = len appends)
    python tools/nbcell.py delete NB I

Cells are addressed by index (as `list` prints) or by id."""
import json, secrets, sys
from pathlib import Path

def load(p): return json.loads(Path(p).read_text())
def save(p, nb): Path(p).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')

def idx(nb, k):
    for i, c in enumerate(nb['cells']):
        if c.get('id') == k: return i
    return int(k)

def text(arg): return sys.stdin.read() if arg == '-' else Path(arg).read_text()

def lines(s):
    s = s.rstrip('\n'); out = [l + '\n' for l in s.split('\n')]
    out[-1] = out[-1][:-1]
    return out

def new_cell(kind, src):
    c = dict(cell_type=kind, id=secrets.token_hex(4), metadata={}, source=lines(src))
    if kind == 'code': c.update(execution_count=None, outputs=[])
    return c

if __name__ == '__main__':
    cmd, p, *rest = sys.argv[1:]
    nb = load(p)
    if cmd == 'list':
        for i, c in enumerate(nb['cells']):
            s = ''.join(c['source']).split('\n')
            print(f"{i:3d} {c['cell_type'][:4]} {c.get('id', '-'):>8} {len(s):4d}L  {s[0][:90]}")
    elif cmd == 'get':
        for k in rest:
            i = idx(nb, k); print(f'# ---- cell {i} ({nb["cells"][i]["cell_type"]})'); print(''.join(nb['cells'][i]['source']))
    elif cmd == 'set':
        i = idx(nb, rest[0]); c = nb['cells'][i]; c['source'] = lines(text(rest[1]))
        if c['cell_type'] == 'code': c['outputs'], c['execution_count'] = [], None
        save(p, nb)
    elif cmd == 'insert':
        i = len(nb['cells']) if rest[0] == 'end' else idx(nb, rest[0])
        nb['cells'].insert(i, new_cell(rest[1], text(rest[2]))); save(p, nb)
    elif cmd == 'delete':
        del nb['cells'][idx(nb, rest[0])]; save(p, nb)
    else: sys.exit(__doc__)
