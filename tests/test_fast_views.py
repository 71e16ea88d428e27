"""The pretraining data feed after 00a_fast_views: the workers send uint8 views and `DeviceViewsCallback` makes them
float on the device, before the MIM targets. With the jitter in PIL (`--color-jitter-on cpu`) the float views the
target callback receives are the reference's (`BeitPretrainTransform` with the same seeds) bit for bit, also through
worker processes; with `--color-jitter-on device` a run trains on the CPU too, and `--decode-draft` reads a JPEG
folder lazily. Each run: beit_tiny (64 px, 1 block), a few seconds."""
import csv, json, math, os, subprocess, sys
from pathlib import Path
import numpy as np, pytest, torch
from PIL import Image
from fastai.callback.core import Callback, CancelFitException

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'CUDA_VISIBLE_DEVICES': ''}

class _FirstViews(Callback):
    "Keep the float views of the first batch as the target callback will see them, then stop."
    def __init__(self, order): self.order, self.views = order, None
    def before_batch(self):
        self.views = tuple(t.detach().clone() for t in self.learn.xb[:2]); raise CancelFitException()

@pytest.mark.parametrize('where', ['cpu', 'device'])
def test_target_callback_sees_the_reference_views(where, tmp_path):
    from beit_nb.pretrain import PretrainConfig, pretrain_learner, DeviceViewsCallback
    from beit_nb.targets import TargetCallback
    from beit_nb.data import BeitPretrainTransform
    from beit_nb.training import SeededSamples
    cfg = PretrainConfig.from_preset('demo', n_demo=32, depth=1, epochs=1, warmup_epochs=0, save_every=0, batch_size=8,
                                     base_batch=8, num_workers=2, color_jitter_on=where)
    learn = pretrain_learner(cfg, run_dir=tmp_path/'run', progress=False)
    seen = _FirstViews((DeviceViewsCallback.order + TargetCallback.order) / 2)
    learn.add_cb(seen)
    learn.fit(1)
    ds, st = learn.run_state.dataset, learn.run_state
    first = st.sampler.indices()[:cfg.batch_size]
    ref_tfm = BeitPretrainTransform(cfg.input_size, cfg.second_input_size, color_jitter=cfg.color_jitter, scale=cfg.crop_scale,
                                    imagenet_default_mean_and_std=cfg.imagenet_mean_std)
    ref = SeededSamples(ds.base, ref_tfm, cfg.seed)
    v1 = torch.stack([ref[(0, i)][0] for i in first]); v2 = torch.stack([ref[(0, i)][1] for i in first])
    got1, got2 = seen.views
    assert got1.dtype == got2.dtype == torch.float32
    if where == 'cpu': assert torch.equal(got1, v1) and torch.equal(got2, v2)
    else: assert (got2 - v2).abs().mean() < 1.5 / 255 and (got1 * 0.5 + 0.5 - (v1 * 0.5 + 0.5)).abs().mean() < 1.5 / 255

def _pretrain(*args, timeout=600):
    return subprocess.run([sys.executable, '-m', 'beit_nb.pretrain', '--depth', '1', '--batch-size', '8', '--base-batch', '8',
                           '--warmup-epochs', '0', '--save-every', '0', '--num-workers', '0', '--epochs', '1', *args],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)

def test_device_jitter_trains_on_cpu(tmp_path):
    r = _pretrain('--preset', 'demo', '--n-demo', '32', '--color-jitter-on', 'device', '--run-dir', str(tmp_path/'run'))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    log = list(csv.DictReader(open(tmp_path/'run'/'log.csv')))
    assert len(log) == 1 and math.isfinite(float(log[0]['loss']))
    assert json.loads((tmp_path/'run'/'config.json').read_text())['color_jitter_on'] == 'device'

def test_decode_draft_reads_a_jpeg_folder(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path/'images').mkdir()
    for i in range(16): Image.fromarray(rng.integers(0, 256, (300, 280, 3), dtype=np.uint8)).save(tmp_path/'images'/f'{i:02d}.jpg', quality=90)
    r = _pretrain('--data', str(tmp_path/'images'), '--model-name', 'beit_tiny_patch8_64_8k_vocab', '--input-size', '64',
                  '--second-input-size', '32', '--num-masking-patches', '26', '--min-num-patches', '4', '--target', 'pixels',
                  '--decode-draft', '--run-dir', str(tmp_path/'run'))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert json.loads((tmp_path/'run'/'config.json').read_text())['decode_draft'] is True
