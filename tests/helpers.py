"""What the system tests share: a free local port, the argv that runs a console script, a server started in a
subprocess and stopped again, and headless Chromium (Debian's /usr/bin/chromium, driven by Playwright, which never
downloads a browser here). App-specific helpers live in app_helpers.py."""
import contextlib, importlib.metadata, os, re, signal, socket, subprocess, sys, tempfile, threading, time, tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

def free_port() -> int:
    "A TCP port on 127.0.0.1 that nothing listens on right now."
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def _entry_point(name):
    "'module:function' of console script `name`: from the installed distributions, else from our pyproject.toml."
    for ep in importlib.metadata.entry_points(group='console_scripts', name=name): return ep.value
    return tomllib.loads((ROOT/'pyproject.toml').read_text())['project']['scripts'].get(name)

def console_script(name:str, target:str|None=None) -> list[str]:
    """The argv prefix that runs console script `name`: the installed script beside this interpreter, or else (a package
    installed without its scripts) the wrapper pip would write, in a temp folder, for `target` 'module:function' (by
    default looked up by name). The wrapper is a file named `name`, so argv[0] and the error messages are the script's."""
    exe = Path(sys.executable).parent / name
    if exe.exists(): return [str(exe)]
    target = target or _entry_point(name)
    if not target: raise LookupError(f'no console script {name!r}')
    mod, fn = target.split(':')
    d = Path(tempfile.gettempdir()) / f'beit_nb-scripts-{os.getuid()}'; d.mkdir(exist_ok=True)
    w, tmp = d / name, d / f'.{name}.{os.getpid()}'
    tmp.write_text(f"import sys\nfrom {mod} import {fn}\nif __name__ == '__main__':\n    sys.exit({fn}())\n")
    tmp.replace(w)                                  # atomic: tests running side by side may write it at once
    return [sys.executable, str(w)]

def start_server(cmd, ready:str, timeout:float=120, name:str|None=None, **kw):
    """Start `cmd` (stdout and stderr merged, in its own process group) and wait until an output line matches the regex
    `ready`; return (process, match, output lines). A thread keeps reading the output into that list, so a chatty server
    never blocks on a full pipe. Raises with the output's tail if the process exits first or `timeout` seconds pass."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, **kw)
    proc.own_group = True
    lines, ended, seen = [], [], threading.Condition()
    def read():
        for line in proc.stdout:
            with seen: lines.append(line); seen.notify_all()
        with seen: ended.append(True); seen.notify_all()
    threading.Thread(target=read, daemon=True).start()
    deadline, i = time.time() + timeout, 0
    with seen:
        while True:
            while i < len(lines):
                m = re.search(ready, lines[i]); i += 1
                if m: return proc, m, lines
            if ended or time.time() >= deadline: break
            seen.wait(deadline - time.time())
    stop(proc)
    raise RuntimeError(f'{name or cmd[0]} did not start:\n' + ''.join(lines[-40:]))

def stop(proc, timeout:float=10):
    """SIGTERM, then SIGKILL if it lingers; for a process that `start_server` started, to its whole process group (a
    shell's child, Jupyter's kernels), and whatever of the group outlives its leader gets SIGKILL."""
    group = getattr(proc, 'own_group', False)
    def send(sig):
        try: os.killpg(proc.pid, sig) if group else proc.send_signal(sig)
        except ProcessLookupError: pass
    if proc.poll() is None: send(signal.SIGTERM)
    try: proc.wait(timeout)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL); proc.wait(timeout)
    if group: send(signal.SIGKILL)

# Headless Chromium: Debian's package (`make browser` installs it); Playwright drives it and downloads nothing.
CHROMIUM = '/usr/bin/chromium'
CHROMIUM_ARGS = ['--no-sandbox', '--headless', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
                 '--disable-sync', '--no-first-run']

def need_chromium():
    "Skip the calling test (with the reason shown) unless Chromium and Playwright are there."
    import pytest
    if not Path(CHROMIUM).exists(): pytest.skip(f'{CHROMIUM} is missing (Debian package chromium, `make browser`); no browser to drive')
    pytest.importorskip('playwright.sync_api', reason='playwright (a dev extra) is not installed')

def launch_chromium(playwright):
    "A headless Chromium browser from a `sync_playwright()` context."
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)

@contextlib.contextmanager
def chromium_page(width:int, height:int):
    "`(page, page_errors)` in a fresh headless Chromium; the browser is closed afterwards."
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page, errors = browser.new_page(viewport={'width': width, 'height': height}), []
            page.on('pageerror', lambda e: errors.append(str(e)))
            yield page, errors
        finally: browser.close()
