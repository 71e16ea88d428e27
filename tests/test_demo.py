"""`beit-demo` (what `make demo` runs), shrunk: 6 epochs of 384 scenes (72 steps, ~30 s). It prints the four stages with the tokenizer's
reconstruction quality and the held-out masked-token accuracy against the majority baseline, writes the run folder the
app reads (model.safetensors + tokenizer/) with the figures, and a second call reuses the finished run."""
import json, re, subprocess, sys
from pathlib import Path
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from helpers import ROOT, console_script

ENV_THREADS = {'OMP_NUM_THREADS': '1', 'CUDA_VISIBLE_DEVICES': ''}

@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    import os
    out = tmp_path_factory.mktemp('demo')/'run'
    cmd = console_script('beit-demo') + ['--run-dir', str(out), '--epochs', '6', '--n-train', '384', '--n-val', '64']
    r = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **ENV_THREADS}, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return out, r.stdout, cmd

def test_prints_the_stages(demo):
    out, log, _ = demo
    for stage in ('[1/4] demo data', '[2/4] tokenizer', '[3/4] pretraining', '[4/4] held-out masked-token accuracy'):
        assert stage in log, log
    assert re.search(r'PSNR \d+\.\d dB', log) and 'the copy shipped with the package' in log   # no training on a fresh machine
    acc, base = map(float, re.search(r'accuracy (\d+\.\d)% vs (\d+\.\d)% for the majority', log).groups())
    assert acc > 1.5 * base                                   # 72 steps already use the visible context

def test_run_folder(demo):
    out, log, _ = demo
    for f in ('model.safetensors', 'tokenizer/config.json', 'loss.png', 'masks.png', 'reconstructions.png', 'summary.json',
              'steps.csv', 'log.csv', 'data/imagenet/train', 'data/imagenet/val'):
        assert (out/f).exists(), f
    s = json.loads((out/'summary.json').read_text())
    assert s['mim']['accuracy'] > s['mim']['majority_baseline'] and s['mim']['n_masked'] == 2 * 64 * 26

def test_final_weights_open_as_a_beit(demo):
    import timm, torch
    import beit_nb.backbone
    from beit_nb.checkpoint import load_beit_checkpoint
    from safetensors import safe_open
    out, _, _ = demo
    with safe_open(str(out/'model.safetensors'), 'pt') as f: meta = f.metadata()
    assert meta['model'] == 'beit_tiny_patch8_64_8k_vocab' and meta['vocab_size'] == '512' and meta['img_size'] == '64'
    model = timm.create_model(meta['model'], vocab_size=int(meta['vocab_size']))
    load_beit_checkpoint(model, out/'model.safetensors')            # strict: every key and shape fits

def test_second_call_reuses_the_run(demo):
    import os
    out, log, cmd = demo
    r = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **ENV_THREADS}, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'nothing to do' in r.stdout and 'the copy shipped with the package' in r.stdout
    first, second = (re.search(r'accuracy (\d+\.\d)%', t).group(1) for t in (log, r.stdout))
    assert first == second
