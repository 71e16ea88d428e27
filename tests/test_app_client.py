"""System test of the Gradio explorer through its named API: start `beit-app` in a subprocess on a free local port
(a tiny random BEiT and tokenizer saved to a temp folder, and a tiny random segmentor) and call each endpoint with
`gradio_client`."""
import os, re, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault('GRADIO_ANALYTICS_ENABLED', 'False')
gradio_client = pytest.importorskip('gradio_client')
from gradio_client import Client, handle_file

sys.path.insert(0, str(Path(__file__).parent))
from helpers import console_script, free_port, stop
from app_helpers import VOCAB, IMAGENET, SEG, save_tiny_run, save_tiny_segmentor, tiny_run_args, start_app

VIEW = 384

@pytest.fixture(scope='module')
def app(tmp_path_factory):
    folder = tmp_path_factory.mktemp('app_client')
    ckpt, tok = save_tiny_run(folder)
    seg = save_tiny_segmentor(folder)
    proc, url, lines = start_app(tiny_run_args(ckpt, tok) + ['--segmentor', str(seg)], free_port())
    yield dict(url=url, ckpt=ckpt, tok=tok, seg=seg, folder=folder, lines=lines)
    stop(proc)

@pytest.fixture(scope='module')
def client(app): return Client(app['url'], verbose=False)

@pytest.fixture(scope='module')
def photo(app):
    from beit_nb.synthetic import sample_photos
    p = app['folder'] / 'coffee.png'
    Image.fromarray(sample_photos(size=200, names=('coffee',))['coffee']).save(p)
    return p

def read(path): return np.asarray(Image.open(path).convert('RGB'))

def test_binds_localhost_and_lists_endpoints(app, client):
    assert app['url'].startswith('http://127.0.0.1:'), app['url']
    assert not any('gradio.live' in l for l in app['lines'])
    names = set(client.view_api(print_info=False, return_format='dict')['named_endpoints'])
    assert {'/mask', '/reconstruct', '/attention', '/segment', '/segment_pixel'} <= names, names

def test_mask(client, photo):
    img, txt = client.predict(handle_file(str(photo)), 'random', 0.5, 4, 7, api_name='/mask')
    a = read(img)
    assert a.shape == (VIEW, VIEW, 3)
    assert '32 of 64 patches masked' in txt, txt            # random masking hits the budget exactly
    img2, txt2 = client.predict(handle_file(str(photo)), 'blockwise', 0.4, 4, 7, api_name='/mask')
    n = int(re.search(r'(\d+) of 64 patches masked', txt2).group(1))
    assert 1 <= n <= 26, txt2                               # blockwise: at most round(0.4·64) patches
    img3, _ = client.predict(handle_file(str(photo)), 'blockwise', 0.4, 4, 7, api_name='/mask')
    assert (read(img2) == read(img3)).all()                 # same seed, same mask
    from beit_nb.masking import MaskingGenerator            # the app draws Algorithm 1's mask for that seed
    m = MaskingGenerator((8, 8), 26, min_num_patches=4, seed=7)()
    assert int(m.sum()) == n

def test_reconstruct(client, photo):
    o, t, p, txt = client.predict(handle_file(str(photo)), 'blockwise', 0.4, 4, 3, api_name='/reconstruct')
    for f in (o, t, p): assert read(f).shape == (VIEW, VIEW, 3)
    m = re.search(r'accuracy on this image: (\d+)/(\d+) = ([\d.]+)%', txt)
    assert m, txt
    k, n = int(m.group(1)), int(m.group(2))
    assert 0 <= k <= n and n > 0

def test_attention_matches_local_computation(app, client, photo):
    "The endpoint's map equals the map computed here from the same checkpoint with beit_nb.attention."
    import timm, beit_nb.backbone
    from beit_nb.checkpoint import load_beit_checkpoint
    from beit_nb.attention import get_attention, query_map, overlay, prepare_image
    q, amap, txt = client.predict(handle_file(str(photo)), 300, 50, 2, '1', api_name='/attention')
    assert 'row 1, col 6' in txt and 'layer 2' in txt and 'head 1' in txt, txt
    model = timm.create_model('beit_tiny_patch8_64_8k_vocab', vocab_size=VOCAB)
    load_beit_checkpoint(model, str(app['ckpt']))
    x, rgb = prepare_image(Image.open(photo), 64)
    a = get_attention(model.eval(), x)
    big = np.asarray(Image.fromarray(rgb).resize((VIEW, VIEW), Image.NEAREST))
    want = overlay(big, query_map(a, 1, 6, layer=2, head=1), query=(1, 6))
    got = read(amap)
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 2

def test_attention_follows_the_click(client, photo):
    f = handle_file(str(photo))
    a1 = read(client.predict(f, 10, 10, 3, 'mean', api_name='/attention')[1])
    a2 = read(client.predict(f, 370, 370, 3, 'mean', api_name='/attention')[1])
    a3 = read(client.predict(f, 20, 20, 3, 'mean', api_name='/attention')[1])   # same patch (0, 0) as (10, 10)
    assert (a1 != a2).any() and (a1 == a3).all()
    r = client.predict(f, 200, 200, 3, 'rollout', api_name='/attention')
    assert 'rollout' in r[2]

@pytest.fixture(scope='module')
def wide(app):
    "A non-square photo (150×90): x and y cannot be swapped unseen."
    from beit_nb.synthetic import sample_photos
    p = app['folder'] / 'wide.png'
    Image.fromarray(sample_photos(size=160, names=('chelsea',))['chelsea']).resize((150, 90)).save(p)
    return p

def local_labels(seg, image_path) -> np.ndarray:
    "The labels computed here, straight from beit_nb.seg_model with the settings the test saved (not through the app)."
    from beit_nb.seg_model import load_segmentor, predict_image
    model, _ = load_segmentor(seg)
    return predict_image(model, Image.open(image_path).convert('RGB'), 'slide', SEG['crop_size'], SEG['stride'], IMAGENET['mean'], IMAGENET['std'],
                         img_scale=SEG['img_scale'])

def legend_rows(legend_html) -> dict:
    "{class: (share %, pixels)} of the legend's table rows."
    rows = re.findall(r'data-class="(\d+)".*?seg-share">([\d.]+)%</td><td class="seg-pixels">(\d+)<', legend_html)
    return {int(k): (float(s), int(n)) for k, s, n in rows}

def test_segment_matches_local_prediction(app, client, wide):
    "The overlay, the legend's areas and the pixel lookups equal what predict_image gives here for the same segmentor."
    from beit_nb.seg_model import overlay_labels
    img, legend, txt = client.predict(handle_file(str(wide)), 0.5, api_name='/segment')
    labels = local_labels(app['seg'], wide)
    assert labels.shape == (90, 150)
    assert (read(img) == np.asarray(overlay_labels(Image.open(wide).convert('RGB'), labels, 0.5, SEG['num_classes']))).all()
    rows, counts = legend_rows(legend), np.bincount(labels.ravel(), minlength=SEG['num_classes'])
    assert {k: n for k, (_, n) in rows.items()} == {k: int(n) for k, n in enumerate(counts) if n}, (rows, counts)
    assert len(rows) >= 2 and round(sum(s for s, _ in rows.values()), 6) == 100.0, rows      # the areas add up to 100 %
    assert all(abs(s - 100 * n / labels.size) <= 0.1 for s, n in rows.values()), rows
    assert 'in this 150×90 image' in txt and 'img_scale 128×32, sliding windows of 32 px every 21 px' in txt, txt
    assert 'std (0.229, 0.224, 0.225) (' in txt, txt
    for x, y in [(0, 0), (149, 89), (120, 10), (10, 80)]:
        got = client.predict(handle_file(str(wide)), x, y, api_name='/segment_pixel')
        assert f'Pixel (x {x}, y {y}): **class {labels[y, x]}**' in got, (x, y, got)
    with pytest.raises(Exception, match='inside the 150×90 image'):
        client.predict(handle_file(str(wide)), 150, 0, api_name='/segment_pixel')
    img2, legend2, _ = client.predict(handle_file(str(wide)), 1.0, api_name='/segment')          # full opacity: the palette
    from beit_nb.seg_model import palette
    assert (read(img2) == palette(SEG['num_classes'])[labels]).all() and legend2 == legend

def test_log_says_which_normalisation(app):
    "The backbone's checkpoint records none (saved without mean/std): the log says so and what it uses; the segmentor's does."
    log = ''.join(app['lines'])
    assert "inputs normalised with mean (0.5, 0.5, 0.5), std (0.5, 0.5, 0.5) (not recorded by the checkpoint" in log, log
    assert re.search(r'Segmentor .*std \(0\.229, 0\.224, 0\.225\) \((checkpoint metadata|recorded by the segmentor)\)', log), log

@pytest.mark.parametrize('kind', ['rgba', 'gray', 'gray16', 'tiny', 'huge_jpeg', 'palette'])
def test_uploads_of_any_size_and_mode(app, client, kind):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (90, 140, 3), np.uint8)
    im = {'rgba': lambda: Image.fromarray(np.dstack([rgb, rng.integers(0, 255, (90, 140), np.uint8)]), 'RGBA'),
          'gray': lambda: Image.fromarray(rgb[..., 0], 'L'),
          'gray16': lambda: Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)).convert('I;16'),
          'tiny': lambda: Image.fromarray(rgb[:3, :5]),
          'huge_jpeg': lambda: Image.fromarray(rgb).resize((2400, 1600)),
          'palette': lambda: Image.fromarray(rgb).convert('P')}[kind]()
    p = app['folder'] / f'upload_{kind}.{"jpg" if kind == "huge_jpeg" else "png"}'
    im.save(p)
    img, txt = client.predict(handle_file(str(p)), 'blockwise', 0.4, 4, 0, api_name='/mask')
    assert read(img).shape == (VIEW, VIEW, 3) and 'patches masked' in txt
    q, amap, _ = client.predict(handle_file(str(p)), 100, 100, 0, 'mean', api_name='/attention')
    assert read(amap).shape == (VIEW, VIEW, 3)
    if kind != 'huge_jpeg':                                 # labels at the image's own size (5×3 px too: rescaled first)
        seg, legend, txt = client.predict(handle_file(str(p)), 0.5, api_name='/segment')
        assert read(seg).shape == (im.height, im.width, 3) and 'classes** in this' in txt, txt
        assert sum(n for _, n in legend_rows(legend).values()) == im.width * im.height

def test_clear_errors(app, client, photo):
    bad = app['folder'] / 'notes.txt'
    bad.write_text('this is not an image')
    with pytest.raises(Exception, match='notes.txt is not an image'):
        client.predict(handle_file(str(bad)), 'blockwise', 0.4, 4, 0, api_name='/mask')
    with pytest.raises(Exception, match='seven is not in the list of choices'):   # Gradio checks the dropdown
        client.predict(handle_file(str(photo)), 10, 10, 0, 'seven', api_name='/attention')
    with pytest.raises(Exception, match='greater than maximum'):                  # and the sliders' ranges
        client.predict(handle_file(str(photo)), 'blockwise', 1.5, 4, 0, api_name='/mask')
    with pytest.raises(Exception, match='No image yet'):
        client.predict(None, 10, 10, 0, 'mean', api_name='/attention')

def test_cli_refuses_missing_checkpoint(tmp_path):
    r = subprocess.run(console_script('beit-app') + ['--run', str(tmp_path / 'nothing')], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and 'no checkpoint' in (r.stdout + r.stderr)
