"""`beit-probe` as installed: probes of a tiny random checkpoint (2 blocks, 32 px) on a tiny ImageNet-layout folder
(2 classes, 6 training / 3 validation images each) write probe.json and probe.csv with one row per block × pooling and
accuracies in [0, 1], normalising the images as the checkpoint records; `--protocol official` writes one row per block
and the official number (the best over blocks and epochs); a block index outside the model ends in one line and a
non-zero exit status. The three runs go side by side (each spends most of its time importing torch and timm)."""
import csv, json, os, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from helpers import ROOT, console_script

ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'CUDA_VISIBLE_DEVICES': ''}
MODEL = ['--model-name', 'beit_tiny_patch8_64_8k_vocab', '--depth', '2', '--input-size', '32']
IMNET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])

def write_folder(root):
    "2 classes (dark, light) × 6 training / 3 validation images of 36×40 px."
    rng = np.random.default_rng(0)
    for split, n in (('train', 6), ('val', 3)):
        for k, c in enumerate(('dark', 'light')):
            (root/split/c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray((rng.random((36, 40, 3)) * 90 + 150 * k).astype(np.uint8)).save(root/split/c/f'{i}.png')

def start(args):
    return subprocess.Popen(console_script('beit-probe') + args, cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)

@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp('probe')
    write_folder(d/'data')
    bad = start(['--data', str(d/'data'), *MODEL, '--blocks', '0,5', '--run-dir', str(d/'bad')])   # needs no checkpoint: start it first
    import torch, timm
    import beit_nb.backbone  # registers beit_tiny_patch8_64_8k_vocab
    from beit_nb.checkpoint import save_beit_checkpoint
    torch.manual_seed(0)
    ck = save_beit_checkpoint(timm.create_model('beit_tiny_patch8_64_8k_vocab', img_size=32, depth=2, vocab_size=64), d/'mim.safetensors',
                              metadata=dict(mean=json.dumps(IMNET[0]), std=json.dumps(IMNET[1])))    # as beit-pretrain records them
    ok = start(['--checkpoint', str(ck), '--data', str(d/'data'), *MODEL, '--knn-k', '3', '--epochs', '5', '--blocks', 'all',
                '--pool', 'mean,cls+mean', '--run-dir', str(d/'out')])
    official = start(['--checkpoint', str(ck), '--data', str(d/'data'), *MODEL, '--epochs', '3', '--protocol', 'official',
                      '--no-imagenet-mean-std', '--run-dir', str(d/'official')])
    res = {}
    for name, p in (('ok', ok), ('bad', bad), ('official', official)):
        out, err = p.communicate(timeout=300)
        res[name] = (p.returncode, out, err)
    return d, res

def test_probe_writes_table(runs):
    d, res = runs
    rc, out, err = res['ok']
    assert rc == 0, out[-2000:] + err[-3000:]
    rep = json.loads((d/'out'/'probe.json').read_text())
    assert rep['classes'] == ['dark', 'light'] and (rep['n_train'], rep['n_val'], rep['depth']) == (12, 6, 2)
    assert 'lm_head' in rep['load_report'] and rep['args']['blocks'] == 'all'
    assert [(r['block'], r['pool']) for r in rep['rows']] == [(0, 'mean'), (1, 'mean'), (0, 'cls+mean'), (1, 'cls+mean')]
    keys = ('linear_top1', 'linear_top5', 'linear_best_top1', 'knn_top1', 'knn_top5')
    for r in rep['rows']:
        assert all(0 <= r[k] <= 1 for k in keys), r
        assert r['dim'] == (192 if r['pool'] == 'mean' else 384)
    rows = list(csv.DictReader(open(d/'out'/'probe.csv')))
    assert len(rows) == 4 and list(rows[0]) == ['block', 'pool', 'dim', *keys]
    assert 'knn_top1' in out and 'wrote' in out
    assert (rep['mean'], rep['std'], rep['protocol']) == (*IMNET, 'cached') and 'inputs normalised as the checkpoint records (metadata)' in out

def test_official_protocol(runs):
    d, res = runs
    rc, out, err = res['official']
    assert rc == 0, out[-2000:] + err[-3000:]
    rep = json.loads((d/'official'/'probe.json').read_text())
    assert rep['protocol'] == 'official' and (rep['mean'], rep['std']) == ([0.5] * 3, [0.5] * 3)    # --no-imagenet-mean-std wins
    assert [(r['block'], r['pool'], r['dim']) for r in rep['rows']] == [(0, 'cls+mean', 384), (1, 'cls+mean', 384)]
    o = rep['official']
    assert o['best_top1'] == max(r['linear_best_top1'] for r in rep['rows']) and o['best_block'] in (0, 1) and 0 <= o['best_epoch'] < 3
    assert o['lr'] == 1e-3 * 12 / 256                                        # official: base lr × batch / 256, the batch capped at the 12 images
    assert 'official protocol: best top-1' in out and 'note: the checkpoint records mean' in out

def test_bad_block_is_one_line(runs):
    d, res = runs
    rc, out, err = res['bad']
    assert rc != 0 and 'Traceback' not in err, err[-3000:]
    assert err.strip().splitlines()[-1] == 'beit-probe: block 5: the model has 2 blocks (0 to 1, or -2 to -1)', err[-2000:]
    assert not (d/'bad'/'probe.json').exists()
