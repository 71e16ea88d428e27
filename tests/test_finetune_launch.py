"""`beit-finetune`: one-line errors, and a 2-process CPU (gloo) fine-tune through `accelerate launch` that is killed
with SIGKILL at a fixed step and resumed with `--resume auto`, ending at the same step with the same loss curve as an
uninterrupted 2-process run (same data order, augmentations, Mixup/CutMix draws and stochastic depth), and the same model
EMA: the EMA is saved in every checkpoint and restored on resume.

Each run: beit_tiny (2 blocks) at 32 px on the demo folders (48 training / 12 validation scenes, 6 classes),
batch 4 per process (global 8), 2 epochs of 6 steps, Mixup 0.8 / CutMix 1.0 and drop path 0.1 on, model EMA with decay 0.9
(low enough that 12 steps move it well away from the initial weights)."""
import csv, json, os, signal, subprocess, sys
from pathlib import Path
import pytest, torch

sys.path.insert(0, str(Path(__file__).parent))
from helpers import ROOT, console_script, free_port
from safetensors.torch import load_file

ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'CUDA_VISIBLE_DEVICES': ''}
N, BS, EPOCHS = 48, 4, 2
STEPS = EPOCHS * (N // 2 // BS)               # 12 optimizer steps
KILL_AT = 9                                   # checkpoints 4, 6 (epoch end) and 8 are complete; 8 is mid-epoch 2
ARGS = ['--preset', 'demo', '--n-demo', str(N), '--depth', '2', '--input-size', '32', '--batch-size', str(BS), '--epochs', str(EPOCHS),
        '--warmup-epochs', '1', '--save-every', '4', '--keep-checkpoints', '10', '--num-workers', '0', '--drop-path', '0.1',
        '--mixup', '0.8', '--cutmix', '1.0', '--reprob', '0.25', '--model-ema', '--model-ema-decay', '0.9', '--no-progress',
        '--lr', '2e-3']                     # larger than the demo's 2.5e-4: 12 steps must move the weights well away from the EMA

def launch(out, *extra):
    cmd = console_script('accelerate') + ['launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1', '--mixed_precision', 'no',
           '--dynamo_backend', 'no', '--main_process_ip', '127.0.0.1', '--main_process_port', str(free_port()),
           '-m', 'beit_nb.finetune', *ARGS, '--run-dir', str(out), *extra]
    return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)

def rows(run): return list(csv.DictReader(open(run/'steps.csv')))
def ckpts(run): return sorted(p.name for p in run.glob('checkpoint-*.pt'))

def test_cli_errors(tmp_path):
    ft = console_script('beit-finetune')
    r = subprocess.run(ft + ['--data', str(tmp_path/'nope'), '--run-dir', str(tmp_path/'run')], cwd=ROOT, env=ENV,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and r.stderr.strip().splitlines()[-1] == f'beit-finetune: --data {tmp_path/"nope"}: no such folder', r.stderr[-2000:]
    (tmp_path/'flat').mkdir()
    r = subprocess.run(ft + ['--data', str(tmp_path/'flat'), '--run-dir', str(tmp_path/'run')], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and 'beit-finetune: --data' in r.stderr and 'no train/ folder' in r.stderr, r.stderr[-2000:]
    (tmp_path/'noval/train/a').mkdir(parents=True)                        # no val/: only a run without validation may do without it
    r = subprocess.run(ft + ['--data', str(tmp_path/'noval'), '--run-dir', str(tmp_path/'run')], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and 'no val/ folder' in r.stderr and 'pass --eval-every 0' in r.stderr, r.stderr[-2000:]

@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp('ref')/'run'
    r = launch(out)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return out, r

def test_two_process_finetune(reference):
    out, r = reference
    cfg = json.loads((out/'config.json').read_text())
    assert cfg['run']['distributed_type'] == 'MULTI_CPU' and cfg['run']['world_size'] == 2 and cfg['run']['global_batch'] == 2 * BS
    assert cfg['run']['num_classes'] == 6 and cfg['layer_decay'] == 0.75 and cfg['mixup'] == 0.8
    assert (cfg['run']['mean'], cfg['run']['std']) == ([0.5] * 3, [0.5] * 3)       # from scratch: the fallback, said once (rank 0)
    assert r.stdout.count('inputs normalised with mean/std 0.5/0.5 (the fallback): no checkpoint') == 1, r.stdout[-3000:]
    assert 'the official script uses --lr 0.002 as given, the same as this at a global batch of 32' in r.stdout, r.stdout[-3000:]
    assert [int(x['step']) for x in rows(out)] == list(range(1, STEPS + 1))        # rank 0 alone writes the logs
    m = json.loads((out/'metrics.json').read_text())
    assert m['step'] == STEPS and m['n_val'] == 12 and 0 <= m['top1'] <= m['top5'] <= 1
    assert (out/'model.safetensors').exists() and r.stdout.count('validation after epoch') == EPOCHS   # every epoch, rank 0 prints
    val = list(csv.DictReader(open(out/'val.csv')))                                  # and logs it: one row per epoch
    assert [int(x['epoch']) for x in val] == list(range(EPOCHS)) and float(val[-1]['top1']) == pytest.approx(m['top1'], abs=1e-6)
    assert m['ema_decay'] == 0.9 and 0 <= m['ema_top1'] <= m['ema_top5'] <= 1 and r.stdout.count('validation of the ema') == 1
    ema, model = load_file(out/'model_ema.safetensors'), load_file(out/'model.safetensors')
    assert ema.keys() == model.keys() and max((ema[k] - model[k]).abs().max().item() for k in ema if ema[k].is_floating_point()) > 1e-3

def test_resume_after_sigkill(reference, tmp_path):
    ref, _ = reference
    run = tmp_path/'run'
    r = launch(run, '--kill-at-step', str(KILL_AT))
    assert r.returncode != 0, r.stdout[-2000:]
    before = ckpts(run)
    assert before == [f'checkpoint-{s:08d}.pt' for s in (4, 6, 8)], (before, r.stderr[-3000:])
    assert len(rows(run)) == KILL_AT and not (run/'metrics.json').exists()
    ck = torch.load(run/before[-1], map_location='cpu', weights_only=True)
    assert ck['model_ema'].keys() == ck['model'].keys()                             # the EMA travels in the checkpoint
    r = launch(run, '--resume', 'auto')
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    assert f'resuming from {run/before[-1]}' in r.stdout + r.stderr
    assert set(before) <= set(ckpts(run)) and f'checkpoint-{STEPS:08d}.pt' in ckpts(run)
    got, want = rows(run), rows(ref)
    assert [int(x['step']) for x in got] == list(range(1, STEPS + 1))
    for a, b in zip(got, want):
        assert abs(float(a['loss']) - float(b['loss'])) < 1e-4, (a, b)
        assert a['lr'] == b['lr'], (a, b)
    m, mref = (json.loads((p/'metrics.json').read_text()) for p in (run, ref))
    assert m['step'] == mref['step'] == STEPS
    assert abs(m['loss'] - mref['loss']) < 1e-4 and m['top1'] == mref['top1']
    # the resumed EMA is the uninterrupted one (restarting it from the step-8 weights would leave it off by
    # 0.9^4 × its distance from the model, which test_two_process_finetune shows is > 1e-3)
    ema, eref = load_file(run/'model_ema.safetensors'), load_file(ref/'model_ema.safetensors')
    assert max((ema[k] - eref[k]).abs().max().item() for k in ema if ema[k].is_floating_point()) < 1e-5
    assert m['ema_top1'] == mref['ema_top1']
