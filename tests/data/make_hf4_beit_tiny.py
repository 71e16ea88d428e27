"""Regenerate the `hf4_beit_tiny_*` fixtures with Hugging Face transformers 4.x, the independent reference for the
4.x key layout (transformers 5.x, the version beit_nb develops against, renamed BEiT's weights).

    pip install --no-deps --target /tmp/hf4 "transformers==4.57.*" "tokenizers==0.22.*" "huggingface_hub<1.0"
    PYTHONPATH=/tmp/hf4 python tests/data/make_hf4_beit_tiny.py

Writes, next to this file, what 4.x `save_pretrained` writes for two tiny random models (weights `*.safetensors`,
config `*.json`): `hf4_beit_tiny_mim` (BeitForMaskedImageModeling, shared relative position bias + absolute position
embedding) and `hf4_beit_tiny_model` (BeitModel, one relative position table per layer, final layernorm), and
`hf4_beit_tiny_io.safetensors`: a fixed input, a fixed mask and both models' outputs with and without the mask.
"""
import shutil, tempfile
from pathlib import Path
import torch, transformers
from safetensors.torch import save_file
from transformers import BeitConfig, BeitForMaskedImageModeling, BeitModel

assert transformers.__version__.startswith('4.'), f'needs transformers 4.x, found {transformers.__version__}'
out = Path(__file__).parent

def jitter(m, seed):
    "Random weights everywhere (HF initialises the bias tables to zero and layer scale to a constant)."
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters(): p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return m.eval()

small = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
             layer_norm_eps=1e-6, layer_scale_init_value=0.1, use_mask_token=True, attn_implementation='eager')
torch.manual_seed(0)                    # HF's own initialisation draws from the global generator
models = dict(
    mim=jitter(BeitForMaskedImageModeling(BeitConfig(**small, vocab_size=64, use_shared_relative_position_bias=True,
                                                     use_absolute_position_embeddings=True)), 1),
    model=jitter(BeitModel(BeitConfig(**small, use_relative_position_bias=True, use_mean_pooling=False),
                           add_pooling_layer=False), 2))
g = torch.Generator().manual_seed(0)
x = torch.randn(2, 3, 32, 32, generator=g)
mask = torch.rand(2, 16, generator=g) < 0.4
mim, model = models['mim'], models['model']
with torch.no_grad():
    io = dict(pixel_values=x, bool_masked_pos=mask,
              mim_logits=mim(x).logits, mim_logits_masked=mim(x, bool_masked_pos=mask).logits,
              model_hidden=model(x).last_hidden_state, model_hidden_masked=model(x, bool_masked_pos=mask).last_hidden_state)
with tempfile.TemporaryDirectory() as d:
    for name, m in models.items():
        m.save_pretrained(f'{d}/{name}', safe_serialization=True)
        shutil.copy(f'{d}/{name}/model.safetensors', out/f'hf4_beit_tiny_{name}.safetensors')
        shutil.copy(f'{d}/{name}/config.json', out/f'hf4_beit_tiny_{name}.json')
save_file({k: v.contiguous() for k, v in io.items()}, str(out/'hf4_beit_tiny_io.safetensors'),
          metadata={'transformers_version': transformers.__version__, 'torch_version': torch.__version__})
print('wrote', out, 'with transformers', transformers.__version__)
