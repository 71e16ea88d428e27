"""Developer helper: execute notebooks in place (all cells, `slow` ones too unless --skip-slow) and keep their outputs,
so the committed notebooks show figures and logs.  Usage: python tools/runnb.py nbs/02_masking.ipynb [...] [--skip-slow]"""
import sys, time
from pathlib import Path
from nbdev.test import test_nb

if __name__ == '__main__':
    args = [a for a in sys.argv[1:] if not a.startswith('--')]
    skip = ['notest', 'gpu'] + (['slow'] if '--skip-slow' in sys.argv else [])
    bad = 0
    for fn in args:
        t = time.time()
        ok, _ = test_nb(Path(fn).resolve(), skip_flags=skip, save=True, cell_timeout=1800)
        print(f'{fn}: {"ok" if ok else "FAILED"} in {time.time()-t:.0f}s', flush=True)
        bad += not ok
    sys.exit(bad)
