"""The Gradio explorer in a real browser: `beit-app` (tiny random BEiT + tokenizer in a temp folder) on a free local
port, driven by headless Chromium through Playwright. Debian's /usr/bin/chromium is used; Playwright never downloads
a browser. Also: `python tests/test_app_browser.py [--out docs/screenshots] [beit-app args...]` takes the README's
screenshots of the three tabs from an app started with the given arguments (by default the demo run's files)."""
import io, re, sys
from pathlib import Path
import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from helpers import free_port, need_chromium, launch_chromium, chromium_page, stop
from app_helpers import save_tiny_run, tiny_run_args, start_app
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

@pytest.fixture(scope='module')
def app_url(tmp_path_factory):
    need_chromium()
    proc, url, _ = start_app(tiny_run_args(*save_tiny_run(tmp_path_factory.mktemp('app_browser'))), free_port())
    yield url
    stop(proc)

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

if __name__ == '__main__':        # README screenshots: python tests/test_app_browser.py [--out DIR] [beit-app args]
    argv = sys.argv[1:]
    out = 'docs/screenshots'
    if '--out' in argv: i = argv.index('--out'); out = argv[i + 1]; del argv[i:i + 2]
    example = 0
    if '--example' in argv: i = argv.index('--example'); example = int(argv[i + 1]); del argv[i:i + 2]
    proc, url, _ = start_app(argv, free_port())
    try:
        from playwright.sync_api import sync_playwright
        with sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_page(viewport={'width': 1200, 'height': 820})
            seen = drive(page, url, out=out, example=example)
            browser.close()
        print(seen['mask_info'], seen['recon_info'], seen['info_after'], sep='\n')
        print('screenshots in', out)
    finally: stop(proc)
