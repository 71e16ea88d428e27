"""transformers 4.x reads what `export_hf(layout='4.x')` writes (and 5.x reads it too, in the notebook).

transformers 4.x cannot be installed next to the 5.x the project develops against, so this test runs only where a 4.x
install is given as a directory to put on PYTHONPATH. `make test` installs one into `.venv/hf4` and sets it; by hand:

    pip install --no-deps --target /tmp/hf4 "transformers==4.57.*" "tokenizers==0.22.*" "huggingface_hub<1.0"
    BEIT_NB_HF4=/tmp/hf4 pytest tests/test_checkpoint_hf4.py

The other direction (4.x checkpoints into beit_nb) is covered without 4.x by the fixtures in tests/data/, in
nbs/03b_checkpoints.ipynb.
"""
import os, subprocess, sys, textwrap
import pytest, torch
from safetensors.torch import load_file, save_file

HF4 = os.environ.get('BEIT_NB_HF4')
pytestmark = pytest.mark.skipif(not HF4, reason='set BEIT_NB_HF4 to a directory holding transformers 4.x')

@pytest.mark.parametrize('kind', ['mim', 'classifier'])
def test_transformers4_loads_our_4x_export(tmp_path, kind):
    import timm
    from beit_nb.backbone import BeitForMIM
    from beit_nb.checkpoint import export_hf
    tiny = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
    if kind == 'mim': model = BeitForMIM(**tiny, vocab_size=64, use_abs_pos_emb=True)
    else: model = timm.create_model('beit_base_patch16_224', **tiny, num_classes=5)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters(): p.add_(torch.randn(p.shape, generator=g) * 0.1)
    model.eval()
    x = torch.randn(2, 3, 32, 32, generator=g)
    mask = torch.rand(2, 16, generator=g) < 0.4
    export_hf(model, tmp_path/'hf', layout='4.x')
    save_file({'x': x, 'mask': mask}, str(tmp_path/'in.safetensors'))
    cls = 'BeitForMaskedImageModeling' if kind == 'mim' else 'BeitForImageClassification'
    code = textwrap.dedent(f'''
        import torch, transformers
        from safetensors.torch import load_file, save_file
        assert transformers.__version__.startswith('4.'), transformers.__version__
        m, info = transformers.{cls}.from_pretrained(r"{tmp_path/'hf'}", output_loading_info=True)
        assert not any(info.values()), info
        i = load_file(r"{tmp_path/'in.safetensors'}")
        with torch.no_grad():
            y = m.eval()(i['x'], bool_masked_pos=i['mask']).logits[i['mask']] if {kind == 'mim'} else m.eval()(i['x']).logits
        save_file({{'y': y.contiguous()}}, r"{tmp_path/'out.safetensors'}")
    ''')
    env = {**os.environ, 'PYTHONPATH': HF4}
    r = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    with torch.no_grad(): ref = model(x, mask) if kind == 'mim' else model(x)
    assert (load_file(str(tmp_path/'out.safetensors'))['y'] - ref).abs().max() <= 1e-5
