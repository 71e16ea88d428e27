"""The Gradio explorer in a real browser: `beit-app` (tiny random BEiT + tokenizer + segmentor in a temp folder) on a
free local port, driven by headless Chromium through Playwright. Debian's /usr/bin/chromium is used; Playwright never
downloads a browser. Also: `python tests/test_app_browser.py [--out docs/screenshots] [--example N] [--seg-example N]
[beit-app args...]` takes the README's screenshots of the tabs from an app started with the given arguments (by
default the demo run's files; the Segmentation tab's too when they include --segmentor)."""
import io, re, sys
from pathlib import Path
import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from helpers import free_port, need_chromium, launch_chromium, chromium_page, stop
from app_helpers import IMAGENET, SEG, save_tiny_run, save_tiny_segmentor, tiny_run_args, start_app
TIMEOUT = 60_000  # ms, per wait: the machine is small and shared

def img_src(page, elem_id):
    loc = page.locator(f'#{elem_id} img')
    return loc.get_attribute('src') if loc.count() else None

def wait_src_change(page, elem_id, old):
    page.wait_for_function(
        '([id, old]) => { const i = document.querySelector(`#${id} img`); return i && i.src && i.src !== old && i.complete; }',
        arg=[elem_id, old or ''], timeout=TIMEOUT)
    return img_src(page, elem_id)

def fetch(page, src) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(page.request.get(src).body())).convert('RGB'))

def shot(page, path):
    "A small PNG of the page: 256-colour palette."
    if path is None: return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    im = Image.open(io.BytesIO(page.screenshot(full_page=False))).convert('RGB')
    im.quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)

def drive(page, url, out=None, example=0):
    "Load an example, visit the three tabs, click a patch on the attention tab; returns what was observed."
    page.goto(url, wait_until='domcontentloaded')
    page.wait_for_selector('#examples button', timeout=TIMEOUT)
    page.locator('#examples button').nth(example).click()
    page.wait_for_selector('#mask_image img', timeout=TIMEOUT)
    page.wait_for_function("document.querySelector('#mask_info') && /patches masked/.test(document.querySelector('#mask_info').innerText)",
                           timeout=TIMEOUT)
    seen = dict(mask_info=page.locator('#mask_info').inner_text())
    shot(page, out and Path(out) / 'masks.png')

    page.get_by_role('tab', name='Token reconstructions').click()
    for i in ('rec_original', 'rec_tokenizer', 'rec_mim'): page.wait_for_selector(f'#{i} img', timeout=TIMEOUT)
    page.wait_for_function("/accuracy/.test(document.querySelector('#recon_info').innerText)", timeout=TIMEOUT)
    seen['recon_info'] = page.locator('#recon_info').inner_text()
    seen['recon'] = [fetch(page, img_src(page, i)) for i in ('rec_original', 'rec_tokenizer', 'rec_mim')]
    shot(page, out and Path(out) / 'reconstruction.png')

    page.get_by_role('tab', name='Attention').click()
    page.wait_for_selector('#attn_map img', timeout=TIMEOUT)
    page.wait_for_function("/Query patch/.test(document.querySelector('#attn_info').innerText)", timeout=TIMEOUT)
    src0 = img_src(page, 'attn_map')
    seen['before'] = fetch(page, src0)
    seen['info_before'] = page.locator('#attn_info').inner_text()
    box = page.locator('#attn_query img').bounding_box()
    page.locator('#attn_query img').click(position={'x': box['width'] * 0.1, 'y': box['height'] * 0.85})  # a patch far from the centre
    src1 = wait_src_change(page, 'attn_map', src0)
    page.wait_for_function("!/row 4, col 4/.test(document.querySelector('#attn_info').innerText)", timeout=TIMEOUT)
    seen['after'] = fetch(page, src1)
    seen['info_after'] = page.locator('#attn_info').inner_text()
    shot(page, out and Path(out) / 'attention.png')
    return seen

def drive_segmentation(page, url, out=None, example=0, click=(0.3, 0.7)):
    "Load an example, open the Segmentation tab, read its legend, click a pixel of the overlay; returns what was observed."
    page.goto(url, wait_until='domcontentloaded')
    page.wait_for_selector('#examples button', timeout=TIMEOUT)
    page.locator('#examples button').nth(example).click()
    page.wait_for_selector('#input_image img', timeout=TIMEOUT)
    page.get_by_role('tab', name='Segmentation').click()
    page.wait_for_selector('#seg_image img', timeout=TIMEOUT)
    page.wait_for_function("/classes in this/.test(document.querySelector('#seg_info').innerText)", timeout=TIMEOUT)
    seen = dict(input=fetch(page, img_src(page, 'input_image')), overlay=fetch(page, img_src(page, 'seg_image')),
                info=page.locator('#seg_info').inner_text())
    rows = page.locator('#seg_legend tr[data-class]')
    seen['legend'] = [(int(r.get_attribute('data-class')), r.locator('.seg-name').inner_text(),
                       float(r.locator('.seg-share').inner_text().rstrip('%')), int(r.locator('.seg-pixels').inner_text()))
                      for r in rows.all()]
    img = page.locator('#seg_image img')
    box = img.bounding_box()
    seen['natural'] = img.evaluate('i => [i.naturalWidth, i.naturalHeight]')
    seen['click'] = (box['width'] * click[0], box['height'] * click[1], box['width'], box['height'])
    img.click(position={'x': seen['click'][0], 'y': seen['click'][1]})
    page.wait_for_function("/Pixel \\(x \\d+, y \\d+\\)/.test(document.querySelector('#seg_pixel').innerText)", timeout=TIMEOUT)
    seen['pixel'] = page.locator('#seg_pixel').inner_text()
    seen['xy'] = [page.get_by_label('pixel x').input_value(), page.get_by_label('pixel y').input_value()]
    shot(page, out and Path(out) / 'segmentation.png')
    return seen

@pytest.fixture(scope='module')
def app(tmp_path_factory):
    need_chromium()
    folder = tmp_path_factory.mktemp('app_browser')
    seg = save_tiny_segmentor(folder)
    proc, url, _ = start_app(tiny_run_args(*save_tiny_run(folder)) + ['--segmentor', str(seg)], free_port())
    yield dict(url=url, seg=seg)
    stop(proc)

@pytest.fixture(scope='module')
def app_url(app): return app['url']

def test_browser_click_updates_attention(app_url, tmp_path):
    with chromium_page(1200, 820) as (page, errors): seen = drive(page, app_url, out=tmp_path)
    assert re.search(r'\d+ of 64 patches masked', seen['mask_info']), seen['mask_info']
    assert re.search(r'accuracy on this image: \d+/\d+', seen['recon_info']), seen['recon_info']
    for a in seen['recon']:                                   # the three panels rendered real pictures
        assert a.shape == (384, 384, 3) and a.std() > 1
    assert 'row 4, col 4' in seen['info_before'], seen['info_before']      # the default query: the centre patch
    m = re.search(r'row (\d), col (\d)', seen['info_after'])
    assert m and int(m.group(1)) >= 6 and int(m.group(2)) <= 1, seen['info_after']
    assert seen['before'].shape == seen['after'].shape and (seen['before'] != seen['after']).any()
    assert not errors, errors
    for name in ('masks', 'reconstruction', 'attention'): assert (tmp_path / f'{name}.png').stat().st_size > 1000

def expected_click(click, natural):
    """The picture pixel under a click at (cx, cy) of a (bw, bh) <img> showing a (W, H) picture centred, shrunk to fit but
    never enlarged (Gradio's `object-fit: scale-down`)."""
    (cx, cy, bw, bh), (W, H) = click, natural
    s = min(bw / W, bh / H, 1)
    return (cx - (bw - W * s) / 2) / s, (cy - (bh - H * s) / 2) / s

def test_browser_segmentation_tab(app, tmp_path):
    """On a 64-px demo scene (shown 6× enlarged: 384 px) the overlay and the legend are those of the labels computed here,
    the areas add up to 100 %, and a click names the class of the pixel under the pointer."""
    from beit_nb.seg_model import load_segmentor, predict_image, overlay_labels
    with chromium_page(1200, 900) as (page, errors): seen = drive_segmentation(page, app['url'], out=tmp_path)
    model, _ = load_segmentor(app['seg'])                        # independently of the app: 07a's predict_image
    img = Image.fromarray(seen['input'])
    labels = predict_image(model, img, 'slide', SEG['crop_size'], SEG['stride'], IMAGENET['mean'], IMAGENET['std'], img_scale=SEG['img_scale'])
    (H, W), z = labels.shape, 6
    assert (W, H) == (64, 64) and tuple(seen['natural']) == (W * z, H * z), seen['natural']
    assert (seen['overlay'][::z, ::z] == np.asarray(overlay_labels(img, labels, 0.5, SEG['num_classes']))).all()
    counts = np.bincount(labels.ravel(), minlength=SEG['num_classes'])
    legend = {k: (name, share, n) for k, name, share, n in seen['legend']}
    assert {k: n for k, (_, _, n) in legend.items()} == {k: int(n) for k, n in enumerate(counts) if n}, (legend, counts)
    assert len(legend) >= 2 and round(sum(s for _, s, _ in legend.values()), 6) == 100.0, legend
    assert all(abs(s - 100 * n / labels.size) <= 0.1 and name == f'class {k}' for k, (name, s, n) in legend.items()), legend
    assert [n for *_, n in seen['legend']] == sorted(counts[counts > 0], reverse=True)      # largest first
    assert f'in this {W}×{H} image' in seen['info'] and 'img_scale 128×32' in seen['info'], seen['info']
    m = re.search(r'Pixel \(x (\d+), y (\d+)\): class (\d+)', seen['pixel'])
    assert m, seen['pixel']
    x, y, k = map(int, m.groups())
    ex, ey = expected_click(seen['click'], seen['natural'])
    assert abs(x - ex / z) <= 1 and abs(y - ey / z) <= 1, (x, y, ex / z, ey / z)     # the pixel under the pointer
    assert k == labels[y, x], (k, labels[y, x])                                          # and its class
    assert seen['xy'] == [str(x), str(y)], seen['xy']
    assert not errors, errors
    assert (tmp_path / 'segmentation.png').stat().st_size > 1000

if __name__ == '__main__':        # README screenshots: python tests/test_app_browser.py [--out DIR] [beit-app args]
    argv = sys.argv[1:]
    out = 'docs/screenshots'
    if '--out' in argv: i = argv.index('--out'); out = argv[i + 1]; del argv[i:i + 2]
    example, seg_example = 0, 0
    if '--example' in argv: i = argv.index('--example'); example = int(argv[i + 1]); del argv[i:i + 2]
    if '--seg-example' in argv: i = argv.index('--seg-example'); seg_example = int(argv[i + 1]); del argv[i:i + 2]
    proc, url, _ = start_app(argv, free_port())
    try:
        from playwright.sync_api import sync_playwright
        with sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_page(viewport={'width': 1200, 'height': 820})
            seen = drive(page, url, out=out, example=example)
            if '--segmentor' in argv: seen.update(seg=drive_segmentation(page, url, out=out, example=seg_example))
            browser.close()
        print(seen['mask_info'], seen['recon_info'], seen['info_after'], *([seen['seg']['info'], seen['seg']['pixel']] if 'seg' in seen else []), sep='\n')
        print('screenshots in', out)
    finally: stop(proc)
