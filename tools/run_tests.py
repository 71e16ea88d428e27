"""The project's test run (called by `make test`): notebook tests through nbdev's `test_nb` (cells flagged
`notest`/`slow`/`gpu` skipped, 2 notebooks at a time), then `pytest tests/` (skipped tests listed with their reasons),
then one closing line `N passed, N failed, N skipped` covering both (a notebook counts as one test, passed or failed)."""
import os, re, subprocess, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKERS = int(os.environ.get('NB_WORKERS', 2))

_RUN_NB = ("import sys; from nbdev.test import test_nb; "
           "ok, _ = test_nb(sys.argv[1], skip_flags=['notest', 'slow', 'gpu'], cell_timeout=900); sys.exit(0 if ok else 1)")

def _one(fn):
    "Test one notebook in its own interpreter (a crash or a leaked thread can't take the others down)."
    t = time.time()
    # one share of the cores per notebook: 2 notebooks x 2 torch threads on 2 cores run 5x slower than 2 x 1
    env = {**os.environ, 'OMP_NUM_THREADS': os.environ.get('OMP_NUM_THREADS', str(max(1, (os.cpu_count() or 1) // WORKERS)))}
    r = subprocess.run([sys.executable, '-c', _RUN_NB, str(fn)], cwd=ROOT, capture_output=True, text=True, env=env)
    return fn.name, r.returncode == 0, time.time() - t, (r.stdout + r.stderr)[-6000:]

def notebooks():
    nbs = sorted(p for p in (ROOT/'nbs').glob('*.ipynb') if not p.name.startswith('_'))
    passed = failed = 0
    with ThreadPoolExecutor(WORKERS) as ex:
        for name, ok, dt, out in ex.map(_one, nbs):
            print(f'notebook {name}: {"passed" if ok else "FAILED"} ({dt:.0f}s)', flush=True)
            if not ok: print(out, flush=True)
            passed += ok; failed += not ok
    return passed, failed

def summary_counts(line:str) -> tuple[int, int, int]:
    "(passed, failed, skipped) from pytest's closing line, e.g. '=== 1 failed, 40 passed, 2 skipped, 1 error in 9.1s ==='."
    c = {k: int(n) for n, k in re.findall(r'(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)\b', line)}
    return (c.get('passed', 0) + c.get('xfailed', 0) + c.get('xpassed', 0),     # as pytest itself judges them
            c.get('failed', 0) + c.get('error', 0) + c.get('errors', 0), c.get('skipped', 0))

def pytest():
    if not any((ROOT/'tests').glob('test_*.py')): return 0, 0, 0
    # -rsfE: the short summary lists skipped tests with their reasons (a missing browser, no transformers 4.x), failures
    # and errors
    r = subprocess.run([sys.executable, '-m', 'pytest', '-rsfE', '-p', 'no:cacheprovider', 'tests/'], cwd=ROOT,
                       capture_output=True, text=True)
    print(r.stdout[-20000:], r.stderr[-5000:], sep='\n', flush=True)
    passed, failed, skipped = summary_counts(r.stdout.strip().splitlines()[-1] if r.stdout.strip() else '')
    if r.returncode not in (0, 5) and not failed: failed = 1  # pytest crashed before counting
    return passed, failed, skipped

if __name__ == '__main__':
    t = time.time()
    np_, nf = notebooks()
    pp, pf, ps = pytest()
    print(f'\nnotebooks: {np_} passed, {nf} failed; pytest: {pp} passed, {pf} failed, {ps} skipped; {time.time()-t:.0f}s')
    print(f'{np_ + pp} passed, {nf + pf} failed, {ps} skipped')
    sys.exit(1 if nf + pf else 0)
