"""Table 4's ablations through the command line: `beit-pretrain --target pixels` trains on a plain image folder with
no tokenizer (a p·p·3 = 192-output head, the masked-patch MSE as its loss, no token accuracy), `--masking random` and
`--crop-scale` reach the run's config, and the final `model.safetensors` records the target and the masking in its
metadata. A token run without a tokenizer still stops with the one-line message. The targets beyond the paper's
(04a) run from the command line too: `--target hog` with its options, and `--target pca`, whose basis is fitted once
into the run folder and read back, unchanged, by a run resumed after a SIGKILL.

Each run: beit_tiny (64 px, 1 block), batch 8, 1 or 2 epochs: a few seconds."""
import csv, json, math, os, subprocess, sys
from pathlib import Path
import numpy as np, pytest
from PIL import Image
from safetensors import safe_open

ROOT = Path(__file__).resolve().parent.parent
PRETRAIN = [sys.executable, '-m', 'beit_nb.pretrain', '--depth', '1', '--batch-size', '8', '--base-batch', '8',
            '--warmup-epochs', '0', '--save-every', '0', '--num-workers', '0']
TINY = ['--model-name', 'beit_tiny_patch8_64_8k_vocab', '--input-size', '64', '--second-input-size', '32',
        '--num-masking-patches', '26', '--min-num-patches', '4', '--no-imagenet-mean-std']
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'CUDA_VISIBLE_DEVICES': ''}

def run(*args):
    return subprocess.run(PRETRAIN + list(args), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)

def metadata(path):
    with safe_open(str(path), framework='pt') as f: return dict(f.metadata()), {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}

@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    "16 random 80×72 RGB images in a plain folder (no tokenizer anywhere)."
    d = tmp_path_factory.mktemp('images')
    rng = np.random.default_rng(0)
    for i in range(16): Image.fromarray(rng.integers(0, 256, (72, 80, 3), dtype=np.uint8)).save(d/f'{i:02d}.png')
    return d

@pytest.fixture(scope='module')
def pixels_run(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp('pixels')/'run'
    r = run('--data', str(folder), *TINY, '--epochs', '2', '--target', 'pixels', '--masking', 'random', '--crop-scale', '0.5,1',
            '--run-dir', str(out))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return out

def test_pixels_without_tokenizer(pixels_run):
    meta, shapes = metadata(pixels_run/'model.safetensors')
    assert (meta['target'], meta['masking'], meta['vocab_size']) == ('pixels', 'random', str(8 * 8 * 3))
    assert shapes['lm_head.weight'] == (8 * 8 * 3, 192)                   # p·p·3 outputs from the tiny model's 192 channels
    cfg = json.loads((pixels_run/'config.json').read_text())
    assert (cfg['target'], cfg['masking'], cfg['crop_scale'], cfg['pixel_norm']) == ('pixels', 'random', [0.5, 1.0], True)

def test_pixels_loss_logged(pixels_run):
    steps = list(csv.DictReader(open(pixels_run/'steps.csv')))
    assert len(steps) == 2 * 16 // 8
    losses = [float(s['loss']) for s in steps]
    assert all(math.isfinite(l) and l > 0 for l in losses)
    # standardised patches: a model predicting ~0 starts near the targets' mean square, (D-1)/D = 191/192 for random pixels
    assert abs(losses[0] - 191 / 192) < 0.2, losses
    assert {s['accuracy'] for s in steps} == {''}                      # no token accuracy for a regression target: an empty cell

def test_tokens_still_need_a_tokenizer(folder, tmp_path):
    r = run('--data', str(folder), *TINY, '--epochs', '1', '--run-dir', str(tmp_path/'run'))
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1].startswith('beit-pretrain: pretraining needs a tokenizer')

def test_demo_random_masking_metadata(tmp_path):
    out = tmp_path/'run'
    r = run('--preset', 'demo', '--n-demo', '16', '--epochs', '1', '--masking', 'random', '--run-dir', str(out))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    meta, shapes = metadata(out/'model.safetensors')
    assert (meta['target'], meta['masking'], meta['vocab_size']) == ('tokens', 'random', '512')
    assert shapes['lm_head.weight'] == (512, 192)

def test_hog_target(tmp_path):
    out = tmp_path/'run'
    r = run('--preset', 'demo', '--n-demo', '32', '--epochs', '1', '--target', 'hog', '--hog-norm', 'patch', '--run-dir', str(out))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    meta, shapes = metadata(out/'model.safetensors')
    assert (meta['target'], meta['vocab_size'], json.loads(meta['mim_target'])['norm']) == ('hog', str(3 * 9), 'patch')
    assert shapes['lm_head.weight'] == (3 * 9, 192)                     # 3 channels × 9 bins of the one 8-px cell of a patch
    assert json.loads((out/'config.json').read_text())['hog_norm'] == 'patch'
    steps = list(csv.DictReader(open(out/'steps.csv')))
    assert len(steps) == 32 // 8 and {s['accuracy'] for s in steps} == {''} and all(math.isfinite(float(s['loss'])) for s in steps)

def test_pca_target_survives_a_kill(tmp_path):
    out = tmp_path/'run'
    args = ('--preset', 'demo', '--n-demo', '32', '--epochs', '2', '--target', 'pca', '--pca-k', '8', '--pca-codes', '16',
            '--pca-fit-images', '32', '--run-dir', str(out))
    r = run(*args, '--kill-at-step', '6')                               # 4 steps per epoch: killed after the epoch-1 checkpoint
    assert r.returncode == -9, r.stdout[-3000:] + r.stderr[-5000:]
    assert 'PCA target: 8 components fitted on 2048 patches of 32 images' in r.stdout, r.stdout[-3000:]
    saved = (out/'target.safetensors').read_bytes()
    r = run(*args, '--resume', 'auto')
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    assert 'PCA target: read from' in r.stdout and 'fitted' not in r.stdout, r.stdout[-3000:]
    assert (out/'target.safetensors').read_bytes() == saved                # the same basis and codes, not a second fit
    meta, shapes = metadata(out/'model.safetensors')
    assert (meta['target'], meta['vocab_size'], shapes['lm_head.weight']) == ('pca', '16', (16, 192))
    steps = list(csv.DictReader(open(out/'steps.csv')))
    assert [int(s['step']) for s in steps] == list(range(1, 9)) and all(0 <= float(s['accuracy']) <= 1 for s in steps)
