"""System tests of the `beit-train-tokenizer` console script: it trains a (tiny) dVAE on an image folder, survives a
corrupt file, saves a folder `load_tokenizer` reads, and answers bad paths with one clear line (no traceback)."""
import json, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from helpers import console_script
from beit_nb.synthetic import synthetic_scenes
from beit_nb.tokenizer import load_tokenizer
from beit_nb.dvae import DiscreteVAE

TINY = ['--image-size', '16', '--num-tokens', '32', '--codebook-dim', '16', '--hidden-dim', '16',
        '--epochs', '1', '--batch-size', '8', '--quiet']

@pytest.fixture(scope='module')
def script():
    "The installed console script, or (if the package was installed without scripts) what pip's wrapper runs."
    return console_script('beit-train-tokenizer')

@pytest.fixture(scope='module')
def image_folder(tmp_path_factory):
    "40 synthetic scenes in nested folders, one grayscale image, one RGBA image and one corrupt file."
    root = tmp_path_factory.mktemp('imgs')
    sc = synthetic_scenes(40, 48, seed=7)
    for i, im in enumerate(sc.images):
        d = root / f'part{i % 3}'; d.mkdir(exist_ok=True)
        Image.fromarray(im).save(d / f'{i:03d}.png')
    Image.fromarray(sc.images[0].mean(-1).astype(np.uint8)).save(root / 'gray.png')
    Image.fromarray(np.dstack([sc.images[1], np.full((48, 48), 200, np.uint8)])).save(root / 'rgba.png')
    (root / 'broken.jpg').write_bytes(b'\xff\xd8\xff\xe0 definitely not a jpeg')
    return root

def run(script, *args):
    return subprocess.run([*script, *map(str, args)], capture_output=True, text=True, timeout=300)

def test_trains_and_saves(script, image_folder, tmp_path):
    out = tmp_path / 'tok'
    r = run(script, image_folder, out, *TINY)
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'saved' in r.stdout and 'PSNR' in r.stdout
    assert 'broken.jpg' in r.stdout + r.stderr                  # the corrupt file is reported ...
    tok = load_tokenizer(out)                                    # ... and skipped: 42 readable images
    assert isinstance(tok, DiscreteVAE)
    assert (tok.input_size, tok.grid_size, tok.vocab_size) == (16, 4, 32)
    assert tok.meta['n_train'] + tok.meta['n_valid'] == 42
    cfg = json.loads((out / 'config.json').read_text())
    assert cfg['type'] == 'DiscreteVAE' and cfg['num_layers'] == 2
    ids = tok.encode(torch.rand(2, 3, 16, 16))
    assert ids.shape == (2, 4, 4) and ids.dtype == torch.long
    assert tok.decode(ids).shape == (2, 3, 16, 16)

def test_deterministic(script, image_folder, tmp_path):
    "Same seed, same data -> the same weights (single process, CPU)."
    a, b = tmp_path / 'a', tmp_path / 'b'
    for o in (a, b): assert run(script, image_folder, o, *TINY, '--device', 'cpu', '--max-images', '24').returncode == 0
    ta, tb = load_tokenizer(a), load_tokenizer(b)
    for (k, va), vb in zip(ta.state_dict().items(), tb.state_dict().values()): assert torch.equal(va, vb), k

def _one_clear_line(r, *needles):
    assert r.returncode != 0
    assert 'Traceback' not in r.stderr, r.stderr
    msg = r.stderr.strip().splitlines()
    assert len(msg) == 1 and msg[0].startswith('beit-train-tokenizer: error:'), r.stderr
    for n in needles: assert n in msg[0], msg[0]

def test_missing_folder(script, tmp_path):
    _one_clear_line(run(script, tmp_path / 'no_such_dir', tmp_path / 'out', *TINY), 'no_such_dir', 'does not exist')
    assert not (tmp_path / 'out').exists()

def test_folder_without_images(script, tmp_path):
    (tmp_path / 'empty').mkdir(); (tmp_path / 'empty' / 'notes.txt').write_text('hi')
    _one_clear_line(run(script, tmp_path / 'empty', tmp_path / 'out', *TINY), 'no images')

def test_output_is_a_file(script, image_folder, tmp_path):
    (tmp_path / 'out').write_text('x')
    _one_clear_line(run(script, image_folder, tmp_path / 'out', *TINY), 'not a folder')

def test_too_few_images(script, tmp_path):
    d = tmp_path / 'few'; d.mkdir()
    for i, im in enumerate(synthetic_scenes(3, 32, seed=0).images): Image.fromarray(im).save(d / f'{i}.png')
    _one_clear_line(run(script, d, tmp_path / 'out', *TINY), 'too few')

def test_help(script):
    r = run(script, '--help')
    assert r.returncode == 0 and '--image-size' in r.stdout and '--num-tokens' in r.stdout

# --- --kind vqkd: BEiT v2's VQ-KD tokenizer distilled from a local teacher checkpoint (chapter 01d) ---
VQKD_TINY = ['--kind', 'vqkd', '--image-size', '32', '--patch-size', '8', '--num-tokens', '64', '--embed-dim', '32',
             '--depth', '1', '--num-heads', '2', '--epochs', '1', '--batch-size', '8', '--quiet']

@pytest.fixture(scope='module')
def teacher(tmp_path_factory):
    "A tiny BEiT saved as our MIM runs save theirs (safetensors with the grid, eps and normalisation in the metadata)."
    from beit_nb.backbone import BeitForMIM
    from beit_nb.checkpoint import save_beit_checkpoint
    torch.manual_seed(0)
    model = BeitForMIM(vocab_size=16, img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=2)
    return save_beit_checkpoint(model, tmp_path_factory.mktemp('teacher') / 'model.safetensors',
                                metadata=dict(mean=json.dumps([0.5] * 3), std=json.dumps([0.5] * 3)))

def test_vqkd_trains_and_saves(script, image_folder, teacher, tmp_path):
    from beit_nb.vqkd import VQKDTokenizer                     # registers the type with load_tokenizer
    out = tmp_path / 'vqkd'
    r = run(script, image_folder, out, *VQKD_TINY, '--teacher', teacher)
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'saved' in r.stdout and 'codes used' in r.stdout and 'cosine' in r.stdout
    tok = load_tokenizer(out)
    assert isinstance(tok, VQKDTokenizer) and not tok.training
    assert (tok.input_size, tok.grid_size, tok.vocab_size, tok.codebook_dim, tok.teacher_dim) == (32, 4, 64, 32, 48)
    assert tok.meta['teacher']['path'] == str(teacher) and tok.meta['teacher']['block'] == 1
    assert tok.meta['n_train'] + tok.meta['n_valid'] == 42 and len(tok.meta['history']) == 1
    cfg = json.loads((out / 'config.json').read_text())
    assert cfg['type'] == 'VQKDTokenizer' and cfg['restart_after'] == 50
    ids = tok.encode(torch.rand(2, 3, 32, 32))
    assert ids.shape == (2, 4, 4) and ids.dtype == torch.long and int(ids.max()) < 64

@pytest.mark.parametrize('case', ['missing', 'unreadable'])
def test_vqkd_teacher_errors(script, image_folder, tmp_path, case):
    "A missing or unreadable --teacher is one line naming it, before any training (no --teacher at all: chapter 01d)."
    junk = tmp_path / 'junk.safetensors'; junk.write_bytes(b'not a checkpoint')
    path = tmp_path / 'nope.safetensors' if case == 'missing' else junk
    _one_clear_line(run(script, image_folder, tmp_path / 'out', *VQKD_TINY, '--teacher', path), path.name)
    assert not (tmp_path / 'out').exists()
