"""`beit-segment`: a 2-process CPU (gloo) segmentation run through `accelerate launch` that is killed with SIGKILL at a
fixed step and resumed with `--resume auto`, ending at the same step with the same loss curve, learning rates and
validation mIoU as an uninterrupted 2-process run (same data order, joint augmentations and stochastic depth; the
BatchNorm statistics travel in the checkpoint; the validation images split over the two processes); then `--predict` and
`--eval-only` (the `beit-segment` function, in one process) on the trained segmentor, and one-line errors. Also: a
mid-run pretraining checkpoint (`checkpoint-N.pt`) hands its normalisation to fine-tuning and segmentation.

Each run: beit_tiny (2 blocks) + UPerNet (32 channels) at 32 px crops on the demo scenes in the ADE20K layout (48
training / 12 validation, 6 shape classes, background ignored), batch 4 per process (global 8), 12 iterations = 2 passes of 6 steps, drop path 0.1."""
import csv, json, os, subprocess, sys
from pathlib import Path
import numpy as np, pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from helpers import ROOT, console_script, free_port, _entry_point

ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'CUDA_VISIBLE_DEVICES': ''}
N, BS, ITERS = 48, 4, 12
KILL_AT = 9                                   # checkpoints 4, 6 (end of the first pass) and 8 are complete
ARGS = ['--preset', 'demo', '--n-demo', str(N), '--depth', '2', '--crop-size', '32', '--stride', '32', '--channels', '32',
        '--aux-channels', '16', '--batch-size', str(BS), '--iters', str(ITERS), '--warmup-iters', '2', '--save-every', '4',
        '--keep-checkpoints', '10', '--num-workers', '0', '--drop-path', '0.1', '--eval-every', '0', '--no-progress']

def launch(out, *extra, wait=True):
    cmd = console_script('accelerate') + ['launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1', '--mixed_precision', 'no',
           '--dynamo_backend', 'no', '--main_process_ip', '127.0.0.1', '--main_process_port', str(free_port()),
           '-m', 'beit_nb.segmentation', *ARGS, '--run-dir', str(out), *extra]
    p = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return finish(p) if wait else p

def finish(p):
    out, err = p.communicate(timeout=600)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)

def rows(run): return list(csv.DictReader(open(run/'steps.csv')))
def ckpts(run): return sorted(p.name for p in run.glob('checkpoint-*.pt'))

@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    "The uninterrupted run and the run killed in step KILL_AT, launched side by side (their start-up overlaps)."
    ref, killed = tmp_path_factory.mktemp('ref')/'run', tmp_path_factory.mktemp('killed')/'run'
    pr, pk = launch(ref, wait=False), launch(killed, '--kill-at-step', str(KILL_AT), wait=False)
    r, k = finish(pr), finish(pk)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return ref, r, killed, k

@pytest.fixture(scope='module')
def reference(runs): return runs[:2]

def test_two_process_segment(reference):
    out, r = reference
    cfg = json.loads((out/'config.json').read_text())
    run = cfg['run']
    assert run['distributed_type'] == 'MULTI_CPU' and run['world_size'] == 2 and run['global_batch'] == 2 * BS
    assert cfg['num_classes'] == 6 and cfg['head'] == 'upernet' and cfg['schedule'] == 'poly' and cfg['iters'] == ITERS
    assert run['epochs_run'] == 2 and run['steps_per_epoch'] == 6 and run['total_steps'] == ITERS and run['n_val'] == 12
    assert [int(x['step']) for x in rows(out)] == list(range(1, ITERS + 1))          # rank 0 alone writes the logs
    m = json.loads((out/'metrics.json').read_text())
    assert m['step'] == ITERS and m['n_val'] == 12 and 0 <= m['mIoU'] <= 1 and r.stdout.count('validation after') == 1   # --eval-every 0: the end only
    assert [int(x['step']) for x in csv.DictReader(open(out/'val.csv'))] == [ITERS]

def test_resume_after_sigkill(runs):
    ref, _, run, r = runs
    assert r.returncode != 0, r.stdout[-2000:]
    before = ckpts(run)
    assert before == [f'checkpoint-{s:08d}.pt' for s in (4, 6, 8)], (before, r.stderr[-3000:])
    assert len(rows(run)) == KILL_AT and not (run/'metrics.json').exists()
    r = launch(run, '--resume', 'auto')
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    assert f'resuming from {run/before[-1]}' in r.stdout + r.stderr
    got, want = rows(run), rows(ref)
    assert [int(x['step']) for x in got] == list(range(1, ITERS + 1))
    for a, b in zip(got, want):
        assert abs(float(a['loss']) - float(b['loss'])) < 1e-4 and a['lr'] == b['lr'], (a, b)
    m, mref = (json.loads((p/'metrics.json').read_text()) for p in (run, ref))
    assert m['step'] == mref['step'] == ITERS and abs(m['mIoU'] - mref['mIoU']) < 1e-6 and abs(m['aAcc'] - mref['aAcc']) < 1e-6

def test_cli_predict_eval_and_errors(reference, tmp_path):
    ref, _ = reference
    images = tmp_path/'images'; images.mkdir()
    for f in sorted((ref/'demo_data/ade20k/images/validation').glob('*.jpg'))[:2]: (images/f.name).write_bytes(f.read_bytes())
    from beit_nb.segmentation import beit_segment                          # the console script's function, in this process
    assert _entry_point('beit-segment') == 'beit_nb.segmentation:beit_segment'
    beit_segment(['--predict', str(images), '--checkpoint', str(ref/'model.safetensors'), '--run-dir', str(tmp_path/'pred')])
    labels = sorted((tmp_path/'pred').glob('*_label.png'))
    assert len(labels) == 2 and len(list((tmp_path/'pred').glob('*_overlay.png'))) == 2
    lab = np.array(Image.open(labels[0]))
    assert lab.shape == (64, 64) and lab.max() < 6
    beit_segment(['--eval-only', '--checkpoint', str(ref/'model.safetensors'), '--data', str(ref/'demo_data/ade20k'), '--run-dir', str(tmp_path/'eval')])
    m = beit_segment.result                                                # what segment() returned: the evaluation
    mref = json.loads((ref/'metrics.json').read_text())   # scored by two processes, each on half of the images
    assert abs(m['mIoU'] - mref['mIoU']) < 1e-9 and abs(m['aAcc'] - mref['aAcc']) < 1e-9
    assert json.loads((tmp_path/'eval/eval.json').read_text())['n_val'] == 12 and (m['crop_size'], m['stride']) == (32, 32)
    # the official test pipeline's settings from the segmentor: img_scale (the demo preset's), and the ImageNet mean/std
    # a run without a checkpoint saves (ade20k.py's img_norm_cfg / 255); --no-imagenet-mean-std overrides them
    assert m['img_scale'] == [256, 64] and np.allclose(np.array(m['mean']) * 255, [123.675, 116.28, 103.53])
    assert np.allclose(np.array(m['std']) * 255, [58.395, 57.12, 57.375])
    beit_segment(['--eval-only', '--checkpoint', str(ref/'model.safetensors'), '--data', str(ref/'demo_data/ade20k'),
                  '--run-dir', str(tmp_path/'eval-half'), '--no-imagenet-mean-std'])
    assert beit_segment.result['mean'] == [0.5] * 3 and beit_segment.result['std'] == [0.5] * 3
    for args, msg in ((['--predict', str(images), '--checkpoint', str(tmp_path/'nope.safetensors')],
                       f'beit-segment: --checkpoint {tmp_path/"nope.safetensors"}: no such file or folder'),
                      (['--predict', str(tmp_path/'none'), '--checkpoint', str(ref/'model.safetensors')],
                       f'beit-segment: --predict {tmp_path/"none"}: no such file or folder'),
                      (['--eval-only', '--checkpoint', str(ref/'model.safetensors'), '--data', str(tmp_path/'flat')],
                       f'beit-segment: --data {tmp_path/"flat"}: no such folder'),
                      (['--data', str(tmp_path/'flat')], f'beit-segment: --data {tmp_path/"flat"}: no such folder')):
        with pytest.raises(SystemExit) as e: beit_segment(args)
        assert str(e.value) == msg

def test_mid_run_pretraining_checkpoint_normalisation(tmp_path, capsys):
    "A pretraining run's `checkpoint-N.pt` says how its inputs were normalised (its `config.imagenet_mean_std`, as Checkpointer saves it): fine-tuning and segmentation from it use that."
    from beit_nb.checkpoint import read_checkpoint
    from beit_nb.finetune import FinetuneConfig, finetune_learner
    from beit_nb.pretrain import beit_pretrain
    from beit_nb.segmentation import SegConfig, segment_learner
    # the demo pretraining normalises with 0.5/0.5 (--no-imagenet-mean-std); 2 passes of 2 steps, a checkpoint after each step
    beit_pretrain(['--preset', 'demo', '--n-demo', '32', '--batch-size', '16', '--epochs', '2', '--warmup-epochs', '1', '--depth', '2',
                   '--save-every', '1', '--keep-checkpoints', '10', '--num-workers', '0', '--no-progress', '--run-dir', str(tmp_path/'pre')])
    ck = tmp_path/'pre/checkpoint-00000001.pt'                              # mid-run: step 1 of 4, no model.safetensors yet beside it
    assert not beit_pretrain.result.cfg.imagenet_mean_std
    info = read_checkpoint(ck)[1]
    assert info['mean_std'] == ((0.5,) * 3, (0.5,) * 3) and 'imagenet_mean_std=False' in info['mean_std_source'], info
    capsys.readouterr()
    seg = segment_learner(SegConfig.from_preset('demo', n_demo=8, depth=2, crop_size=32, stride=32, channels=16, aux_channels=8),
                          checkpoint=str(ck), run_dir=tmp_path/'seg', progress=False)
    out = capsys.readouterr().out                                           # segmentation's fallback would be ImageNet's
    assert seg.mean_std == ((0.5,) * 3, (0.5,) * 3)
    assert "inputs normalised as the checkpoint records (the run checkpoint's config: imagenet_mean_std=False)" in out, out[-2000:]
    ft = finetune_learner(FinetuneConfig.from_preset('demo', n_demo=12, depth=2, epochs=1, batch_size=4), checkpoint=str(ck), run_dir=tmp_path/'ft',
                          progress=False)
    out = capsys.readouterr().out                                           # fine-tuning's fallback is 0.5/0.5 too: the source says
    assert "inputs normalised as the checkpoint records (the run checkpoint's config: imagenet_mean_std=False)" in out, out[-2000:]
    # and ImageNet's, for a run that pretrained with it (Checkpointer's entries, the config as asdict writes it)
    import torch
    torch.save(dict(torch.load(ck, weights_only=True), config=dict(torch.load(ck, weights_only=True)['config'], imagenet_mean_std=True)),
               tmp_path/'imnet.pt')
    assert read_checkpoint(tmp_path/'imnet.pt')[1]['mean_std'] == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
