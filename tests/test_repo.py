"""Repository-level checks: the README is generated from nbs/index.ipynb, the Quarto config is valid YAML,
and every console script declared in pyproject.toml resolves to a callable."""
import importlib, subprocess, sys, tomllib
from pathlib import Path
import yaml

ROOT = Path(__file__).resolve().parent.parent

def test_readme_in_step_with_index():
    r = subprocess.run([sys.executable, 'tools/readme.py', '--check'], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr

def test_quarto_config_is_valid():
    cfg = yaml.safe_load((ROOT/'nbs'/'_quarto.yml').read_text())
    assert cfg['project']['type'] == 'website'
    assert 'nbdev.yml' in cfg['metadata-files']
    nbdev_yml = yaml.safe_load((ROOT/'nbs'/'nbdev.yml').read_text())
    assert nbdev_yml['website']['title'] == 'beit_nb'

def test_console_scripts_resolve():
    scripts = tomllib.loads((ROOT/'pyproject.toml').read_text())['project']['scripts']
    assert scripts, 'no console scripts declared'
    for name, target in scripts.items():
        mod, fn = target.split(':')
        assert callable(getattr(importlib.import_module(mod), fn)), f'{name} -> {target} is not callable'
