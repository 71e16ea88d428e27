"""The default resize of the relative position bias table against the official code's own, run with SciPy 1.13's
`interp2d(kind='cubic')`.

SciPy removed `interp2d` in 1.14, so the official resize (microsoft/unilm `beit/run_class_finetuning.py`, ~L346–411:
the geometric-progression positions found by bisection, the integer targets, `interp2d(x, y, z, kind='cubic')` per
head, the three extra rows kept) is re-typed below and run in a subprocess that puts a SciPy 1.13 install first on
PYTHONPATH; it imports only NumPy and SciPy. `make test` installs one into `.venv/scipy113` and sets
BEIT_NB_SCIPY113; by hand:

    pip install --no-deps --target /tmp/scipy113 "scipy==1.13.*" "numpy==2.2.*"
    BEIT_NB_SCIPY113=/tmp/scipy113 pytest -s tests/test_checkpoint_interp2d.py

The official code resizes square windows only; for non-square ones the same code is applied per axis (an axis that
keeps its size keeps its offsets), which is what beit_nb does, so the axis order (`interp2d` takes `z` as
`(len(y), len(x))`) is checked too. The notebook (nbs/03b_checkpoints.ipynb) tests the same function without SciPy
1.13: cubic polynomial tables must be reproduced exactly.
"""
import os, subprocess, sys
import numpy as np, pytest, torch

SCIPY113 = os.environ.get('BEIT_NB_SCIPY113')
pytestmark = pytest.mark.skipif(not SCIPY113, reason='SciPy 1.13 not available: set BEIT_NB_SCIPY113 to a directory '
                                                     'holding it (`make scipy113` installs one into .venv/scipy113)')

OFFICIAL = r'''
import sys, warnings
import numpy as np, scipy
from scipy import interpolate
assert scipy.__version__.startswith('1.13.'), scipy.__version__
warnings.simplefilter('ignore')                            # interp2d's deprecation notice

def positions(src_size, dst_size):
    "The official placement of one axis's offsets (an axis that keeps its size: unchanged, as the official code skips it)."
    if src_size == dst_size: return list(np.arange(-(src_size // 2), src_size // 2 + 1.0))
    def geometric_progression(a, r, n): return a * (1.0 - r ** n) / (1.0 - r)
    left, right = 1.01, 1.5
    while right - left > 1e-6:
        q = (left + right) / 2.0
        if geometric_progression(1, q, src_size // 2) > dst_size // 2: right = q
        else: left = q
    dis, cur = [], 1
    for i in range(src_size // 2):
        dis.append(cur)
        cur += q ** (i + 1)
    return [-d for d in reversed(dis)] + [0] + dis

def official_resize(rel_pos_bias, src, dst, num_extra_tokens=3):
    "src, dst: table sizes (rows, cols) = (2h-1, 2w-1). For square ones this is the official code line by line."
    extra_tokens, rel_pos_bias = rel_pos_bias[-num_extra_tokens:], rel_pos_bias[:-num_extra_tokens]
    y, x = positions(src[0], dst[0]), positions(src[1], dst[1])
    dy = np.arange(-(dst[0] // 2.0), dst[0] // 2.0 + 0.1, 1.0)
    dx = np.arange(-(dst[1] // 2.0), dst[1] // 2.0 + 0.1, 1.0)
    out = []
    for i in range(rel_pos_bias.shape[1]):
        z = rel_pos_bias[:, i].reshape(src[0], src[1])
        f = interpolate.interp2d(x, y, z, kind='cubic')
        out.append(f(dx, dy).astype(rel_pos_bias.dtype).reshape(-1, 1))
    return np.concatenate([np.concatenate(out, 1), extra_tokens])

d = np.load(sys.argv[1])
np.savez(sys.argv[2], **{k: official_resize(d[k], tuple(d[k + '_src']), tuple(d[k + '_dst']))
                         for k in d.files if not k.endswith(('_src', '_dst'))})
'''

def _smooth(h, w, heads=4):
    "A made-up trained-looking table: the bias falls with distance, different per head."
    dy, dx = np.meshgrid(np.arange(1 - h, h), np.arange(1 - w, w), indexing='ij')
    maps = [-(0.35 * abs(dy) + 0.2 * abs(dx)) + 0.6 * np.exp(-(dy ** 2 + dx ** 2) / 3) * (k + 1) for k in range(heads)]
    return np.concatenate([np.stack([m.ravel() for m in maps], 1), np.full((3, heads), 0.5)])

CASES = [((14, 14), (24, 24)), ((14, 14), (7, 7)), ((4, 4), (6, 6)), ((6, 6), (4, 4)), ((7, 7), (12, 12)),
         ((5, 3), (8, 6)), ((3, 5), (6, 3)), ((4, 4), (4, 7)), ((4, 6), (6, 6))]

def test_cubic_resize_matches_official_interp2d(tmp_path):
    from beit_nb.checkpoint import resize_rel_pos_table
    rng, tables = np.random.default_rng(0), {}
    for n, (old, new) in enumerate(CASES):
        rows = (2 * old[0] - 1) * (2 * old[1] - 1) + 3
        for kind, t in (('smooth', _smooth(*old)), ('rough', rng.normal(size=(rows, 4)))):
            for dt in ('float32', 'float64'):
                k = f'c{n}_{kind}_{dt}'
                tables[k] = t.astype(dt)
                tables[k + '_src'], tables[k + '_dst'] = [2 * old[0] - 1, 2 * old[1] - 1], [2 * new[0] - 1, 2 * new[1] - 1]
    np.savez(tmp_path/'in.npz', **tables)
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([SCIPY113, os.environ.get('PYTHONPATH', '')]).rstrip(os.pathsep)}
    r = subprocess.run([sys.executable, '-c', OFFICIAL, str(tmp_path/'in.npz'), str(tmp_path/'out.npz')],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    ref, worst = np.load(tmp_path/'out.npz'), {}
    for n, (old, new) in enumerate(CASES):
        for kind in ('smooth', 'rough'):
            for dt, tol in (('float32', 1e-5), ('float64', 1e-9)):
                k = f'c{n}_{kind}_{dt}'
                ours = resize_rel_pos_table(torch.from_numpy(tables[k]), new, old).numpy()
                lin = resize_rel_pos_table(torch.from_numpy(tables[k]), new, old, mode='linear').numpy()
                d = float(np.abs(ours - ref[k]).max())
                worst[(kind, dt)] = max(worst.get((kind, dt), 0.), d)
                assert d <= tol, f'{old}→{new} {kind} {dt}: max |ours − interp2d| {d:.3g}'
                if (old, new, dt) == ((14, 14), (24, 24), 'float64'):
                    print(f'14×14 → 24×24, {kind} table: cubic vs interp2d {d:.2g}, '
                          f'linear vs interp2d {np.abs(lin - ref[k]).max():.3g}')
    print('max |ours (cubic) − official interp2d| over', len(CASES), 'resizes:',
          ', '.join(f'{kind} {dt} {v:.2g}' for (kind, dt), v in worst.items()))
