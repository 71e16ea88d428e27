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

# The package's layering (DESIGN.md): data flows one way along the core chain, no module imports one later in it,
# and none imports the demo data (`synthetic`) at module level; attention, app and demo sit on top.
CHAIN = ['data', 'fast_views', 'shards', 'tokenizer', 'dvae', 'dvae_training', 'masking', 'backbone', 'checkpoint', 'classifier', 'vqkd', 'seg_data', 'seg_model', 'seg_checkpoint',
         'mim', 'targets', 'dino', 'training', 'run_files', 'recipe', 'probe', 'pretrain', 'finetune', 'segmentation']
RECIPES = ['pretrain', 'finetune', 'segmentation']      # side by side on the recipe layer: none imports another
ON_TOP = ['synthetic', 'attention', 'app', 'app_segmentation', 'demo', 'experiments', 'measure', 'bench_components', 'bench']

def _module_imports(name):
    import ast
    tree = ast.parse((ROOT/'beit_nb'/f'{name}.py').read_text())
    out = set()
    for node in tree.body:                                   # module level only: a lazy import inside a function is allowed
        if isinstance(node, ast.ImportFrom):
            mod = ('beit_nb.' + node.module if node.level else node.module or '') if node.module else ''
            if node.level and not node.module: out.update(a.name for a in node.names)
            elif mod.startswith('beit_nb.'): out.add(mod.split('.')[1])
        elif isinstance(node, ast.Import):
            out.update(a.name.split('.')[1] for a in node.names if a.name.startswith('beit_nb.'))
    return out

def test_every_module_has_its_place():
    mods = {p.stem for p in (ROOT/'beit_nb').glob('*.py') if not p.stem.startswith('_')}
    assert mods == set(CHAIN) | set(ON_TOP), f'not placed in CHAIN or ON_TOP: {sorted(mods - set(CHAIN) - set(ON_TOP))}'

def test_core_chain_imports_only_earlier_modules():
    for i, m in enumerate(CHAIN):
        later = _module_imports(m) - set(CHAIN[:i])
        assert not later, f'beit_nb.{m} imports {sorted(later)}, which come later in the chain or sit on top of it'

def test_no_recipe_imports_another():
    for r in RECIPES:
        others = _module_imports(r) & (set(RECIPES) - {r})
        assert not others, f'beit_nb.{r} imports the recipe(s) {sorted(others)}: shared code belongs in recipe or below'
        assert 'recipe' in _module_imports(r), f'beit_nb.{r} does not stand on beit_nb.recipe'

def test_mim_loss_pulls_in_neither_fastai_nor_dall_e():
    code = ("import sys, beit_nb.mim; print(sorted({m.split('.')[0] for m in sys.modules} & {'fastai', 'dall_e'})"
            " + sorted(m for m in sys.modules if m == 'beit_nb.synthetic'))")
    r = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == '[]', r.stdout + r.stderr

def test_wheel_ships_the_demo_tokenizer(tmp_path):
    "A non-editable install carries the trained demo tokenizer (package data), so the demo's tokens are the same everywhere."
    import zipfile
    r = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '--no-build-isolation', '-w', str(tmp_path), str(ROOT)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    names = zipfile.ZipFile(next(tmp_path.glob('*.whl'))).namelist()
    for f in ('beit_nb/assets/demo_tokenizer/config.json', 'beit_nb/assets/demo_tokenizer/model.safetensors', 'beit_nb/synthetic.py'):
        assert f in names, f
