"""`make lab` in a real browser: JupyterLab started by the Makefile's own `lab` recipe (its command line, read with
`make -n`, on a free local port, no token, a temp folder as root) and driven by headless Chromium through Playwright.
It opens 08_attention, runs the cells up to the ipywidgets attention explorer, moves the explorer's "query col" slider
with the keyboard and checks that the figure changed, and that the kernel runs in the venv.

The notebook is a copy, so Lab's checkpoints and the run's outputs stay out of nbs/: the 08_attention cells up to and
including the one that shows the explorer (the cells after it drive the widgets themselves), without the `slow`,
`notest` and `gpu` cells the test runner skips too, outputs cleared, and one first cell printing the kernel's `sys.prefix`.
With no demo checkpoint under the temp folder the notebook uses its tiny random model (~10 s of cells).
Jupyter's config, data, runtime and IPython folders are temp folders too: nothing of the user's is read or written."""
import base64, io, json, os, re, shlex, shutil, subprocess, sys
from pathlib import Path
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from helpers import ROOT, free_port, need_chromium, chromium_page, start_server, stop

NB = '08_attention.ipynb'
TIMEOUT = 60_000                 # ms, per UI wait: the machine is small and shared
RUN_TIMEOUT = 300_000            # ms, for the cells up to the explorer (≈10 s on a quiet 2-core machine)
SKIP_FLAGS = ('slow', 'notest', 'gpu')
EXPLORER = '.jp-Cell:has(.widget-hslider)'    # the cell whose output holds the explorer's sliders

def _flags(cell):
    return {w for l in cell['source'] if l.startswith('#|') for w in l[2:].split()}

def notebook_copy(folder: Path) -> Path:
    "The cells of nbs/08_attention.ipynb up to the explorer's, as described above, in `folder`."
    nb = json.loads((ROOT/'nbs'/NB).read_text())
    cells = nb['cells']
    shows = [i for i, c in enumerate(cells) if c['cell_type'] == 'code' and 'attention_explorer(' in ''.join(c['source'])
             and '#| export' not in ''.join(c['source'])]
    assert shows, f'no cell of nbs/{NB} calls attention_explorer'
    end = shows[0]
    keep = [c for c in cells[:end + 1] if c['cell_type'] != 'code' or not _flags(c) & set(SKIP_FLAGS)]
    for c in keep:
        if c['cell_type'] == 'code': c['outputs'], c['execution_count'] = [], None
    probe = dict(cell_type='code', execution_count=None, metadata={}, outputs=[],
                 source=["import sys; print('kernel prefix:', sys.prefix)"])
    nb['cells'] = [probe] + keep
    (folder/NB).write_text(json.dumps(nb, indent=1))
    return folder/NB

def lab_command(port: int) -> str:
    """The line `make lab` runs (from `make -n`, so nothing is installed), for this interpreter's venv, with the test's
    options. Its notebook folder is `nbs` relative to where it runs: the test runs it in a temp folder with its own nbs/."""
    args = ['--ServerApp.token=', '--ServerApp.password=', '--LabApp.expose_app_in_browser=True',
            '--LabApp.news_url=None', '--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate']
    r = subprocess.run(['make', '-s', '-n', 'lab', f'PORT={port}', f'BIN={Path(sys.executable).parent}',
                        'ARGS=' + ' '.join(map(shlex.quote, args))], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    line = r.stdout.replace('\\\n', ' ').strip().splitlines()[-1]   # install steps (if the venv is stale) come before it
    assert ' lab ' in line and f'--port={port}' in line and '--notebook-dir=nbs' in line, r.stdout
    return line

@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    need_chromium()
    pytest.importorskip('jupyterlab', reason='jupyterlab (a dev extra) is not installed; `make install` adds it')
    pytest.importorskip('jupyterlab_widgets', reason='jupyterlab_widgets (with ipywidgets) is not installed')
    if not shutil.which('make'): pytest.skip('make is missing: the test runs the Makefile\'s `lab` recipe')
    tmp = tmp_path_factory.mktemp('lab')
    root = tmp/'nbs'; root.mkdir()
    notebook_copy(root)
    quiet = tmp/'config'/'lab'/'user-settings'/'@jupyterlab'/'apputils-extension'/'notification.jupyterlab-settings'
    quiet.parent.mkdir(parents=True)
    quiet.write_text(json.dumps(dict(fetchNews='false', checkForUpdates=False)))    # no "Jupyter news?" toast
    env = {k: v for k, v in os.environ.items() if k not in ('MPLBACKEND', 'JUPYTER_PATH', 'JUPYTER_PLATFORM_DIRS')}
    env.update({f'JUPYTER_{k}_DIR': str(tmp/k.lower()) for k in ('CONFIG', 'DATA', 'RUNTIME')},
               IPYTHONDIR=str(tmp/'ipython'), OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    proc, m, lines = start_server(['bash', '-c', lab_command(free_port())], r'(http://127\.0\.0\.1:\d+/)lab',
                                  timeout=180, name='jupyter lab', cwd=tmp, env=env)
    yield dict(url=m.group(1), root=root, lines=lines)
    stop(proc)

def _png(src: str) -> np.ndarray:
    from PIL import Image
    assert src.startswith('data:image/png;base64,'), src[:80]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(',', 1)[1]))).convert('RGB'))

_FIGURE_JS = f"""(() => {{ const i = document.querySelector('{EXPLORER} .widget-output img');
                             return i && i.complete && i.naturalWidth > 0 ? i.src : null; }})"""
_ERRORS_JS = """(() => { const out = [];
    for (const c of window.jupyterapp.shell.currentWidget.content.widgets) {
        if (c.model.type !== 'code') continue;
        for (let i = 0; i < c.model.outputs.length; i++) {
            const o = c.model.outputs.get(i).toJSON();
            if (o.output_type === 'error') out.push(c.model.sharedModel.getSource() + '\\n' + o.ename + ': ' + o.evalue);
        } }
    return out; })"""

def _figure_src(page):
    "The explorer's current figure: the src of the image in its output widget, once loaded (else None)."
    return page.evaluate(f'{_FIGURE_JS}()')

def run_explorer(page, url):
    "Open the notebook, wait for its kernel, Run > Run All Cells, wait for the explorer's figure; returns its src."
    page.goto(f'{url}lab/tree/{NB}', wait_until='domcontentloaded')
    page.wait_for_selector('.jp-NotebookPanel .jp-Cell', timeout=TIMEOUT)
    page.wait_for_function('''() => {             // the notebook's kernel started, connected and idle (Lab's own state)
        const s = window.jupyterapp && window.jupyterapp.shell.currentWidget?.sessionContext, k = s?.session?.kernel;
        return s && s.isReady && k && k.connectionStatus === 'connected' && k.status === 'idle'; }''', timeout=TIMEOUT)
    page.locator('.lm-MenuBar-item', has_text=re.compile(r'^Run$')).click()
    page.locator('.lm-Menu-item', has=page.locator('.lm-Menu-itemLabel', has_text=re.compile(r'^Run All Cells$'))).click()
    # the explorer's figure, or a cell's error (Run All stops there), whichever comes first; errors read from Lab's model
    # (a warning on stderr looks like an error in the DOM)
    page.wait_for_function(f'''() => {_ERRORS_JS}().length > 0 || {_FIGURE_JS}() !== null''', timeout=RUN_TIMEOUT)
    errors = page.evaluate(f'{_ERRORS_JS}()')
    assert not errors, 'a cell failed:\n' + '\n'.join(errors)[-3000:]
    return _figure_src(page)

def test_lab_runs_the_attention_explorer(lab, tmp_path):
    with chromium_page(1400, 1000) as (page, page_errors):
        try:
            src0 = run_explorer(page, lab['url'])
            probe = page.locator('.jp-Cell .jp-OutputArea-output', has_text='kernel prefix:').first.text_content()
            explorer = page.locator(EXPLORER)
            explorer.scroll_into_view_if_needed()
            sliders = explorer.locator('.widget-hslider')
            assert sliders.count() == 4, sliders.all_inner_texts()       # layer, head, query row, query col
            col = sliders.filter(has_text='query col')
            before = col.locator('.widget-readout').inner_text()
            col.locator('.noUi-handle').focus()
            page.keyboard.press('ArrowRight')                             # query col one patch right
            page.wait_for_function(f'old => {{ const s = {_FIGURE_JS}(); return s !== null && s !== old; }}', arg=src0,
                                   timeout=TIMEOUT)
            after = col.locator('.widget-readout').inner_text()
            src1 = _figure_src(page)
        except Exception:
            page.screenshot(path=str(tmp_path/'lab.png'))
            raise
    assert probe.strip() == f'kernel prefix: {sys.prefix}', probe                  # the kernel runs in this venv
    assert int(after) == int(before) + 1, (before, after)
    a, b = _png(src0), _png(src1)
    assert a.shape == b.shape and a.std() > 1 and (a != b).any()                   # a real figure, and it changed
    assert not page_errors, page_errors
