"""Kill-and-resume: a pretraining run killed with SIGKILL mid-epoch (at a fixed step, so the test does not depend on
the machine's speed) continues with `--resume auto` from its latest
checkpoint, reaches the same step count, loses no completed checkpoint, and its loss curve continues exactly where an
uninterrupted run's does (same data order, augmentations, masks and stochastic depth draws). A truncated latest
checkpoint falls back to the previous good one; repeated non-finite losses stop the run with a message.

Each run: beit_tiny (64 px, 4 blocks), 160 scenes, batch 16, 3 epochs of 10 steps, with stochastic depth on."""
import csv, os, signal, shutil, subprocess, sys, time
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
PRETRAIN = [sys.executable, '-m', 'beit_nb.pretrain', '--preset', 'demo', '--n-demo', '160', '--batch-size', '16', '--epochs', '3',
            '--warmup-epochs', '1', '--save-every', '4', '--keep-checkpoints', '20', '--num-workers', '0', '--drop-path', '0.1']
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'CUDA_VISIBLE_DEVICES': ''}
STEPS = 3 * (160 // 16)
KILL_AT = 16   # the run SIGKILLs itself in step 16, after the step's log row and before its checkpoint (the window where
               # a checkpoint written before its row would lose that row): checkpoints 4, 8, 10 (epoch end), 12 are complete,
               # and 12 is mid-epoch 2 (10 steps per epoch)

def rows(run): return list(csv.DictReader(open(run/'steps.csv')))
def ckpts(run): return sorted(p.name for p in run.glob('checkpoint-*.pt'))

def run_to_end(out, *extra):
    r = subprocess.run(PRETRAIN + ['--run-dir', str(out), *extra], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return r.stdout + r.stderr

@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp('ref')/'run'
    run_to_end(out)
    return out

@pytest.fixture(scope='module')
def killed(tmp_path_factory):
    "A run killed by SIGKILL in step 16 (`--kill-at-step`, a testing flag): at a known point, whatever the load."
    out = tmp_path_factory.mktemp('killed')/'run'
    r = subprocess.run(PRETRAIN + ['--run-dir', str(out), '--kill-at-step', str(KILL_AT)], cwd=ROOT, env=ENV, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr[-4000:])
    return out, ckpts(out), len(rows(out))

def test_resume_after_sigkill(killed, reference):
    run, before, n_logged = killed
    assert before == [f'checkpoint-{s:08d}.pt' for s in (4, 8, 10, 12)], before
    assert n_logged == KILL_AT                                   # every step logged, the last four past the last checkpoint
    latest = before[-1]
    out = run_to_end(run, '--resume', 'auto')
    assert f'resuming from {run/latest}' in out
    after = ckpts(run)
    assert set(before) <= set(after), 'a completed checkpoint was lost'
    assert f'checkpoint-{STEPS:08d}.pt' in after
    got, ref = rows(run), rows(reference)
    assert [int(r['step']) for r in got] == list(range(1, STEPS + 1))   # every step logged exactly once: no gap, no repeat
    for a, b in zip(got, ref):                                          # and it is the uninterrupted run's curve
        assert abs(float(a['loss']) - float(b['loss'])) < 1e-4, (a, b)
        assert a['lr'] == b['lr'], (a, b)
    assert [r['epoch'] for r in csv.DictReader(open(run/'log.csv'))] == ['0', '1', '2']

def test_truncated_checkpoint_falls_back(killed, tmp_path):
    src, before, _ = killed
    run = tmp_path/'run'; shutil.copytree(src, run)
    for p in run.glob('checkpoint-*.pt'):
        if p.name not in before[-2:]: p.unlink()                     # keep the two newest of the killed run
    good, bad = run/before[-2], run/before[-1]
    data = bad.read_bytes(); bad.write_bytes(data[:len(data) // 3])  # a half-written file, as after a full disk
    out = run_to_end(run, '--resume', 'auto')
    assert f'checkpoint {bad} is unusable' in out and f'resuming from {good}' in out
    assert [int(r['step']) for r in rows(run)] == list(range(1, STEPS + 1))

def test_existing_run_needs_resume_flag(killed):
    r = subprocess.run(PRETRAIN + ['--run-dir', str(killed[0])], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and '--resume auto' in r.stderr

def test_nonfinite_losses_stop_the_run(tmp_path):
    cmd = PRETRAIN + ['--run-dir', str(tmp_path/'nan'), '--inject-nan-batches', '2,3', '--max-nonfinite', '2', '--epochs', '1']
    r = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert 'non-finite loss at batch 2: step skipped (1 so far)' in r.stdout + r.stderr
    assert 'beit-pretrain: 2 non-finite losses (limit max_nonfinite=2): stopping' in r.stderr

def test_config_file_starts_the_same_run(reference):
    "`--config RUN/config.json` gives back the config the flags made (its `run` entry, resolved at start, is skipped)."
    import json
    from dataclasses import asdict
    from beit_nb.pretrain import beit_pretrain
    saved = json.loads((reference/'config.json').read_text())
    from_flags, _ = beit_pretrain.parse(PRETRAIN[3:] + ['--run-dir', str(reference)])
    from_file, run = beit_pretrain.parse(['--config', str(reference/'config.json'), '--run-dir', str(reference), '--resume', 'auto'])
    assert asdict(from_file) == asdict(from_flags) == {k: v for k, v in saved.items() if k != 'run'}
    assert run == dict(run_dir=str(reference), resume='auto')
    assert saved['run']['world_size'] == 1 and saved['run']['total_steps'] == STEPS
