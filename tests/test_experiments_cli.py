"""`beit-experiments` as installed, with `--jobs 2` (the stages in two spawned worker processes): a tiny reproduction
(40 pool scenes, 48 + 12 + 30 labelled, one pretraining epoch, one fine-tuning epoch, one grid point, two seeds of two
arms, and a 4-step segmentation run of each on 16 + 6 + 8 scenes) writes results.json with the config as given, a test
prediction for every test image of every final run, the per-image areas of every test scene of every segmentation run,
and both tables' baselines; an unknown arm and a malformed `--search` end in one line naming the flag and a non-zero exit."""
import json, os, subprocess, sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from helpers import ROOT, console_script

ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'CUDA_VISIBLE_DEVICES': ''}
TINY = ['--pool', '40', '--labelled', '48', '--val', '12', '--test', '30', '--seeds', '0,1', '--pretrain-seeds', '0',
        '--arms', 'beit,scratch', '--pretrain-epochs', '1', '--finetune-epochs', '1', '--search', 'lr=1e-3', '--no-reference',
        '--seg-arms', 'beit,scratch', '--seg-train', '16', '--seg-val', '6', '--seg-test', '8', '--seg-iters', '4', '--seg-search', 'lr=1e-3']

def run(args, tmp):
    return subprocess.run(console_script('beit-experiments') + args, cwd=tmp, env=ENV, capture_output=True, text=True, timeout=900)

def test_two_jobs(tmp_path):
    p = run(TINY + ['--jobs', '2', '--run-dir', str(tmp_path/'exp')], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads((tmp_path/'exp'/'results.json').read_text())
    assert res['config']['search'] == {'lr': [0.001]} and res['config']['seeds'] == [0, 1] and res['jobs'] == 2
    n_test = sum(1 for _ in (tmp_path/'exp'/'labelled'/'test').rglob('*.png'))
    assert n_test == 30 and sorted(res['test']) == ['beit', 'scratch']
    assert all(len(r['pred']) == 30 for rs in res['test'].values() for r in rs)
    arms = [r['arm'] for r in res['table']]
    assert arms[:2] == ['beit', 'scratch'] and arms[-1] == 'chance' and arms[-2].startswith('majority class')
    assert all((tmp_path/'exp'/'finetune'/f'{a}-lr0.001-seed{s}'/'test.json').is_file() for a in ('beit', 'scratch') for s in (0, 1))
    sg = res['segmentation']
    assert sorted((r['arm'], r['seed']) for r in sg['finetune']) == [('beit', 0), ('beit', 1), ('scratch', 0), ('scratch', 1)]
    assert all(len(json.loads((Path(r['checkpoint']).parent/'test.json').read_text())['areas']) == 8 for r in sg['finetune'])
    assert [r['arm'] for r in sg['table']][-1] == 'uniform guess' and sg['comparisons'][0]['b'] == 'scratch'

def test_bad_flags(tmp_path):
    for args, msg in ((['--arms', 'beit,mae'], "arms ['mae']: unknown"), (['--search', 'lr'], '--search lr: expected')):
        p = run(args + ['--run-dir', str(tmp_path/'x')], tmp_path)
        assert p.returncode != 0 and msg in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr[-2000:]
        assert not (tmp_path/'x').exists()
