"""Evaluation split across processes gives the one-process numbers. `beit-finetune --eval-only` (top-1, top-5, loss) and
`beit-segment --eval-only` (mIoU, aAcc, mAcc and every class's IoU) under `accelerate launch` with two gloo processes
equal one process on the same weights and the same data: a validation set of 13 images, so the shards are uneven (7 and
6 images) and nothing is padded or read twice.

Weights: random tiny models (2 blocks at 32 px), jittered so that their predictions vary from image to image."""
import json, os, subprocess, sys
from pathlib import Path
import pytest, torch

sys.path.insert(0, str(Path(__file__).parent))
from helpers import ROOT, console_script, free_port

ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'CUDA_VISIBLE_DEVICES': ''}
N_VAL = 13

def jitter(m, seed=0, s=0.2):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters(): p.add_(torch.randn(p.shape, generator=g) * s)
    return m.eval()

@pytest.fixture(scope='module')
def data(tmp_path_factory):
    from beit_nb.synthetic import write_demo_folders
    return write_demo_folders(tmp_path_factory.mktemp('demo')/'demo', n_train=12, n_val=N_VAL)

def both(module, script, args, tmp):
    "eval.json of one process (the console script) and of two (accelerate launch), on the same arguments."
    one = subprocess.run(console_script(script) + args + ['--run-dir', str(tmp/'one')], cwd=ROOT, env=ENV, capture_output=True,
                         text=True, timeout=600)
    assert one.returncode == 0, one.stdout[-3000:] + one.stderr[-4000:]
    two = subprocess.run(console_script('accelerate') + ['launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1',
                         '--mixed_precision', 'no', '--dynamo_backend', 'no', '--main_process_ip', '127.0.0.1', '--main_process_port',
                         str(free_port()), '-m', module, *args, '--run-dir', str(tmp/'two')], cwd=ROOT, env=ENV, capture_output=True,
                         text=True, timeout=600)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-4000:]
    return [json.loads((tmp/k/'eval.json').read_text()) for k in ('one', 'two')]

def test_classification_eval_two_processes(data, tmp_path):
    from timm.models.beit import Beit
    from beit_nb.checkpoint import save_beit_checkpoint
    torch.manual_seed(0)
    clf = jitter(Beit(img_size=32, patch_size=8, embed_dim=192, depth=2, num_heads=3, init_values=0.1, num_classes=6,
                      use_abs_pos_emb=False, use_rel_pos_bias=True))
    save_beit_checkpoint(clf, tmp_path/'clf.safetensors')
    args = ['--eval-only', '--preset', 'demo', '--data', str(data['imagenet']), '--checkpoint', str(tmp_path/'clf.safetensors'),
            '--depth', '2', '--input-size', '32', '--batch-size', '4', '--num-workers', '0']
    one, two = both('beit_nb.finetune', 'beit-finetune', args, tmp_path)
    assert one['n_val'] == two['n_val'] == N_VAL
    assert 0 < one['top1'] < 1, one                                   # a score that could differ
    assert (two['top1'], two['top5']) == (one['top1'], one['top5'])  # counts of hits: exact
    assert two['loss'] == pytest.approx(one['loss'], rel=1e-6)       # a float64 sum in another order

def test_segmentation_eval_two_processes(data, tmp_path):
    from beit_nb.checkpoint import save_beit_checkpoint
    from beit_nb.seg_model import beit_segmentor, segmentor_config
    torch.manual_seed(0)
    seg, _ = beit_segmentor(None, 'beit_tiny_patch8_64_8k_vocab', num_classes=6, input_size=32, channels=32, aux_channels=16,
                            depth=2, drop_path=0., verbose=False)
    jitter(seg, s=0.05)
    for m in seg.modules():                                           # BatchNorm statistics of a trained model, not 0/1
        if isinstance(m, torch.nn.BatchNorm2d): m.running_var.uniform_(0.5, 2.0); m.running_mean.normal_(0, 0.1)
    save_beit_checkpoint(seg, tmp_path/'seg.safetensors', metadata=dict(segmentor=json.dumps(segmentor_config(seg)), crop_size=32,
                         stride=21, test_mode='slide', reduce_zero_label=True, mean='[0.5, 0.5, 0.5]', std='[0.5, 0.5, 0.5]'))
    args = ['--eval-only', '--preset', 'demo', '--data', str(data['ade20k']), '--checkpoint', str(tmp_path/'seg.safetensors'),
            '--num-workers', '0']
    one, two = both('beit_nb.segmentation', 'beit-segment', args, tmp_path)
    assert one['n_val'] == two['n_val'] == N_VAL
    assert 0 < one['mIoU'] < 1, one
    for k in ('mIoU', 'aAcc', 'mAcc'): assert two[k] == pytest.approx(one[k], abs=1e-12), k   # sums of pixel counts
    assert two['IoU'] == pytest.approx(one['IoU'], abs=1e-12, nan_ok=True)
