"""`read_segmentor` on what transformers 4.x writes, the layout of the hub's ADE20K folders (`pytorch_model.bin`, 4.x key
names), and on an official `.pth` made from those weights by inverting HF's own conversion table.

A tiny `BeitForSemanticSegmentation` (5 blocks × 64, 16-px patches, 64 px) is built, jittered, saved with
`safe_serialization=False` and run by transformers 4.x in a subprocess. Its logits are the reference for:
- the folder read as it is (the 'transformers' reading: HF's `out_indices` [2, 3, 4, 5] are blocks 0..3),
- an official `.pth` whose names come from `convert_beit_unilm_to_pytorch.py`'s `create_rename_keys`/`read_in_q_k_v`
  (transcribed below, official → HF 4.x, and inverted), with an official-style `meta['config']` saying `out_indices`
  [0, 1, 2, 3].

transformers 4.x cannot share the venv with 5.x, so this runs only where `BEIT_NB_HF4` names a directory holding it
(`make test` installs one into `.venv/hf4`; see tests/test_checkpoint_hf4.py)."""
import os, re, subprocess, sys, textwrap
import pytest, torch
from safetensors.torch import load_file

HF4 = os.environ.get('BEIT_NB_HF4')
pytestmark = pytest.mark.skipif(not HF4, reason='set BEIT_NB_HF4 to a directory holding transformers 4.x')
DEPTH, DIM = 5, 64

def official_to_hf4(sd:dict) -> dict:
    "The official segmentor names → HF 4.x, as convert_beit_unilm_to_pytorch.py renames them (is_semantic=True)."
    out, sd = {}, dict(sd)
    for i in range(DEPTH):
        p, q = f'backbone.blocks.{i}.', f'beit.encoder.layer.{i}.'
        for a, b in (('norm1', 'layernorm_before'), ('attn.proj', 'attention.output.dense'), ('norm2', 'layernorm_after'),
                     ('mlp.fc1', 'intermediate.dense'), ('mlp.fc2', 'output.dense')):
            for t in ('weight', 'bias'): out[f'{q}{b}.{t}'] = sd.pop(f'{p}{a}.{t}')
        w = sd.pop(f'{p}attn.qkv.weight')
        out[f'{q}attention.attention.query.weight'], out[f'{q}attention.attention.key.weight'] = w[:DIM], w[DIM:2 * DIM]
        out[f'{q}attention.attention.value.weight'] = w[-DIM:]
        out[f'{q}attention.attention.query.bias'], out[f'{q}attention.attention.value.bias'] = sd.pop(f'{p}attn.q_bias'), sd.pop(f'{p}attn.v_bias')
        out[f'{q}lambda_1'], out[f'{q}lambda_2'] = sd.pop(f'{p}gamma_1'), sd.pop(f'{p}gamma_2')
        out[f'{q}attention.attention.relative_position_bias.relative_position_bias_table'] = sd.pop(f'{p}attn.relative_position_bias_table')
        sd.pop(f'{p}attn.relative_position_index', None)
    for a, b in (('backbone.cls_token', 'beit.embeddings.cls_token'), ('backbone.patch_embed.proj.weight', 'beit.embeddings.patch_embeddings.projection.weight'),
                 ('backbone.patch_embed.proj.bias', 'beit.embeddings.patch_embeddings.projection.bias'),
                 ('decode_head.conv_seg.weight', 'decode_head.classifier.weight'), ('decode_head.conv_seg.bias', 'decode_head.classifier.bias'),
                 ('auxiliary_head.conv_seg.weight', 'auxiliary_head.classifier.weight'), ('auxiliary_head.conv_seg.bias', 'auxiliary_head.classifier.bias')):
        out[b] = sd.pop(a)
    out.update({k.replace('backbone.fpn', 'fpn'): v for k, v in sd.items()})
    return out

def hf4_to_official(hf:dict) -> dict:
    "The inverse, built key by key from official_to_hf4 on a probe state dict of the official names."
    out = {}
    for i in range(DEPTH):
        p, q = f'backbone.blocks.{i}.', f'beit.encoder.layer.{i}.attention.attention.'
        out[f'{p}attn.qkv.weight'] = torch.cat([hf[f'{q}query.weight'], hf[f'{q}key.weight'], hf[f'{q}value.weight']])
        assert hf.get(f'{q}key.bias') is None or not hf[f'{q}key.bias'].any()
    names = [f'backbone.blocks.{i}.{n}' for i in range(DEPTH) for n in ('norm1.weight', 'norm1.bias', 'attn.proj.weight', 'attn.proj.bias',
             'norm2.weight', 'norm2.bias', 'mlp.fc1.weight', 'mlp.fc1.bias', 'mlp.fc2.weight', 'mlp.fc2.bias', 'attn.q_bias', 'attn.v_bias',
             'gamma_1', 'gamma_2', 'attn.relative_position_bias_table')]
    names += ['backbone.cls_token', 'backbone.patch_embed.proj.weight', 'backbone.patch_embed.proj.bias', 'decode_head.conv_seg.weight',
              'decode_head.conv_seg.bias', 'auxiliary_head.conv_seg.weight', 'auxiliary_head.conv_seg.bias']
    probe = {n: torch.tensor([float(j)]) for j, n in enumerate(names)}
    probe.update({f'backbone.blocks.{i}.attn.qkv.weight': torch.zeros(3 * DIM, 1) for i in range(DEPTH)})
    for hk, v in official_to_hf4(probe).items():
        if v.numel() == 1: out[names[int(v)]] = hf[hk]
    for k, v in hf.items():                                  # the heads' other keys and the pyramid: names kept, `fpn` under backbone.
        if not k.startswith('beit.') and 'classifier' not in k: out[re.sub(r'^fpn', 'backbone.fpn', k)] = v
    return out

HF_SCRIPT = '''
import torch, transformers
from safetensors.torch import save_file
assert transformers.__version__.startswith('4.'), transformers.__version__
from transformers import BeitConfig, BeitForSemanticSegmentation, BeitImageProcessor
cfg = BeitConfig(image_size=64, patch_size=16, hidden_size={DIM}, num_hidden_layers={DEPTH}, num_attention_heads=4, intermediate_size=256,
                 use_relative_position_bias=True, use_absolute_position_embeddings=False, layer_scale_init_value=0.1, layer_norm_eps=1e-6,
                 out_indices=[2, 3, 4, 5], num_labels=5, auxiliary_channels=16, use_auxiliary_head=True)
torch.manual_seed(0)
m = BeitForSemanticSegmentation(cfg).eval()
g = torch.Generator().manual_seed(1)
with torch.no_grad():
    for p in m.parameters(): p.add_(torch.randn(p.shape, generator=g) * 0.05)
    for n, b in m.named_buffers():
        if n.endswith('running_var'): b.copy_(torch.rand(b.shape, generator=g) * 1.5 + 0.5)
        elif n.endswith('running_mean'): b.copy_(torch.randn(b.shape, generator=g) * 0.1)
m.save_pretrained(r"{out}/hf", safe_serialization=False)
BeitImageProcessor(size=64, do_center_crop=False).save_pretrained(r"{out}/hf")
x = torch.randn(2, 3, 64, 64, generator=g)
with torch.no_grad(): y = m(x).logits
save_file({{'x': x, 'y': y.contiguous()}}, r"{out}/io.safetensors")
'''

@pytest.fixture(scope='module')
def hf4(tmp_path_factory):
    out = tmp_path_factory.mktemp('hf4seg')
    code = HF_SCRIPT.format(DIM=DIM, DEPTH=DEPTH, out=out)
    r = subprocess.run([sys.executable, '-c', code], env={**os.environ, 'PYTHONPATH': HF4, 'OMP_NUM_THREADS': '1'},
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return out, load_file(str(out/'io.safetensors'))

def test_hub_layout_folder_gives_transformers4_logits(hf4):
    from beit_nb.seg_checkpoint import read_segmentor
    out, io = hf4
    assert (out/'hf/pytorch_model.bin').exists() and not (out/'hf/model.safetensors').exists()
    seg, meta, rep = read_segmentor(out/'hf', verbose=False)
    with torch.no_grad(): got = seg(io['x'])
    assert got.shape == io['y'].shape and (got - io['y']).abs().max() <= 1e-5
    assert rep.initialised == [] and seg.blocks == (0, 1, 2, 3)
    assert (meta['mean'], meta['std'], meta['crop_size']) == ([0.5] * 3, [0.5] * 3, 64)

def test_official_pth_from_hf_conversion_table(hf4, tmp_path):
    from beit_nb.seg_checkpoint import read_segmentor
    out, io = hf4
    hf_sd = torch.load(out/'hf/pytorch_model.bin', weights_only=True)
    hf_sd = {k: v for k, v in hf_sd.items() if not k.endswith('relative_position_index')}
    official = hf4_to_official(hf_sd)
    back = official_to_hf4(official)                          # the transcribed table maps the official file back onto HF's exactly
    assert set(back) == set(hf_sd) - {k for k in hf_sd if k.endswith('attention.key.bias')} and all(torch.equal(back[k], hf_sd[k]) for k in back)
    text = textwrap.dedent('''\
        crop_size = (64, 64)
        img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
        model = dict(type='EncoderDecoder', backbone=dict(type='BEiT', img_size=64, patch_size=16, embed_dim=64, depth=5, num_heads=4,
                     use_rel_pos_bias=True, init_values=0.1, out_indices=[0, 1, 2, 3]),
                     test_cfg=dict(mode='slide', crop_size=crop_size, stride=(43, 43)))
        test_pipeline = [dict(type='LoadImageFromFile'), dict(type='MultiScaleFlipAug', img_scale=(256, 64), flip=False,
                         transforms=[dict(type='Resize', keep_ratio=True), dict(type='Normalize', **img_norm_cfg)])]
        data = dict(test=dict(type='ADE20KDataset', pipeline=test_pipeline))
        ''')
    torch.save({'meta': {'config': text, 'CLASSES': tuple('abcde')}, 'state_dict': official}, tmp_path/'official.pth')
    seg, meta, rep = read_segmentor(tmp_path/'official.pth', verbose=False)
    with torch.no_grad(): assert (seg(io['x']) - io['y']).abs().max() <= 1e-5
    assert rep.initialised == [] and rep.layout.startswith('official')
    assert {k: meta[k] for k in ('crop_size', 'stride', 'img_scale', 'reduce_zero_label', 'class_names')} == \
           dict(crop_size=64, stride=43, img_scale=[256, 64], reduce_zero_label=True, class_names=list('abcde'))
