"""timm's model contract for our registered `*_8k_vocab` models, with timm's own `beit_base_patch16_224` as the control.

The models live in timm's registry, so they are checked for what timm's generic model tests (`tests/test_models.py` in
huggingface/pytorch-image-models) check for every registered model: `model(x)` with the default, `num_classes=42` and
`num_classes=0` heads; `forward_features` / `forward_head(pre_logits=True)` / `reset_classifier` / `get_classifier`;
the pretrained config; backward; `torch.fx` tracing (timm's feature extraction) against eager; TorchScript against
eager; `forward_intermediates` and `features_only`. Plus what is ours alone: the MIM call `model(x, bool_masked_pos)`
is unchanged, and the default build keeps the state-dict keys (timm's + `mask_token` + `lm_head.*`).

Where the rule is ours rather than timm's: timm's backward tests ask every parameter for a gradient from `model(x)`.
`mask_token` and `lm_head` only serve the MIM call, and `head` only timm's call, so here each call must give a gradient
to every parameter it uses, and the two calls together to every parameter; a traced graph (which holds only what
timm's call uses) must give one to all of its parameters.

The models run at a test size — 32 px, 3 blocks of width 64 with 2 heads, a vocabulary of 256, their own patch size,
layer scale and position options; the tiny one as registered but for the vocabulary — and are built at full size on
the meta device only (config and keys), so the whole file runs in well under a minute on 2 CPU cores."""
import math
import pytest, torch, torch.nn as nn
import timm
from timm import set_scriptable
from timm.models import get_notrace_modules, get_notrace_functions
from timm.models.beit import Beit
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names
import beit_nb.backbone  # noqa: F401  (registers the models)
from beit_nb.backbone import BeitForMIM, MIM_CONFIGS

pytestmark = pytest.mark.filterwarnings('ignore:`torch.jit.script` is deprecated:FutureWarning')

OURS = [n for n in timm.list_models('beit_*') if n.endswith('_8k_vocab')]
CONTROL = 'beit_base_patch16_224'
ALL = OURS + [CONTROL]
MIM_ONLY = {'mask_token', 'lm_head.weight', 'lm_head.bias'}
TEST_SIZE = dict(img_size=32, depth=3, embed_dim=64, num_heads=2)   # 3 blocks: timm's features_only takes the last 3
B = 2

def test_registered():
    assert sorted(OURS) == sorted(MIM_CONFIGS), OURS

def build(name, **kw) -> nn.Module:
    "The registered model at the test size (the tiny one as registered), through timm's keyword overrides only."
    size = {} if name == 'beit_tiny_patch8_64_8k_vocab' else dict(TEST_SIZE)
    if name != CONTROL: size['vocab_size'] = 256
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, **{**size, **kw})

def inputs(model, b=B):
    return torch.randn(b, 3, *model.patch_embed.img_size, generator=torch.Generator().manual_seed(1))

def a_mask(model, b=B):
    h, w = model.patch_embed.grid_size
    m = torch.rand(b, h, w, generator=torch.Generator().manual_seed(2)) < 0.4
    m[:, 0, 0] = True                                 # at least one masked patch per image
    return m

def with_grad(model) -> set:
    return {n for n, p in model.named_parameters() if p.grad is not None}

def fx_model(model, train=False):
    "As timm's test: torchvision's feature extractor with timm's leaf modules / functions, returning the last node."
    kw = dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions(), param_shapes_constant=True)
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=kw)
    return create_feature_extractor(model, train_return_nodes=[train_nodes[-1]], eval_return_nodes=[eval_nodes[-1]],
                                    tracer_kwargs=kw)

def only(out: dict) -> torch.Tensor:
    (v,) = out.values()
    return v

# --- timm's test_model_forward ------------------------------------------------------------------------------------
@pytest.mark.parametrize('name', ALL)
def test_forward(name):
    model = build(name).eval()
    x = inputs(model)
    with torch.no_grad():
        out = model(x)
        assert out.shape == (B, model.num_classes or model.num_features)
        assert torch.isfinite(out).all()
        model.set_grad_checkpointing()
        torch.testing.assert_close(model(x), out, rtol=1e-4, atol=1e-5)

@pytest.mark.parametrize('name', ALL)
@pytest.mark.parametrize('num_classes', [42, 0])
def test_num_classes(name, num_classes):
    model = build(name, num_classes=num_classes).eval()
    x = inputs(model)
    with torch.no_grad(): out = model(x)
    assert model.num_classes == num_classes
    assert out.shape == (B, num_classes or model.num_features) and torch.isfinite(out).all()

@pytest.mark.parametrize('name', ALL)
def test_no_pooling(name):
    model = build(name, num_classes=0, global_pool='').eval()
    x = inputs(model)
    with torch.no_grad(): out = model(x)
    assert out.shape == (B, 1 + math.prod(model.patch_embed.grid_size), model.num_features)

# --- timm's test_model_default_cfgs_non_std (beit is "non-standard": tokens, not NCHW) ------------------------------
@pytest.mark.parametrize('name', ALL)
def test_head_api(name):
    model = build(name).eval()
    x = inputs(model)
    assert model.num_classes >= 0 and model.num_features > 0 and model.head_hidden_size > 0
    with torch.no_grad():
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
        assert feats.shape == (B, 1 + math.prod(model.patch_embed.grid_size), model.num_features)
        assert pre.shape == (B, model.head_hidden_size)
        model.reset_classifier(0)
        assert model.num_classes == 0
        torch.testing.assert_close(model(x), pre)
        model.reset_classifier(7)
        assert model(x).shape == (B, 7) and model.get_classifier().out_features == 7
        model.reset_classifier(0, '')
        assert model(x).shape == feats.shape
        model.reset_classifier(5, 'token')
        assert model(x).shape == (B, 5)

@pytest.mark.parametrize('name', ALL)
def test_default_cfg(name):
    with torch.device('meta'): model = timm.create_model(name, pretrained=False)   # full size, no memory
    cfg, sd = model.pretrained_cfg, model.state_dict()
    assert model.default_cfg == cfg
    for k in ('input_size', 'mean', 'std', 'interpolation', 'crop_pct', 'first_conv', 'classifier', 'num_classes'):
        assert k in cfg, k
    assert tuple(cfg['input_size'][1:]) == tuple(model.patch_embed.img_size)
    assert cfg['first_conv'] + '.weight' in sd
    if cfg['num_classes']: assert cfg['classifier'] + '.weight' in sd
    assert model.num_classes == cfg['num_classes']
    data = timm.data.resolve_data_config({}, model=model)
    assert data['input_size'] == cfg['input_size'] and data['mean'] == cfg['mean']

@pytest.mark.parametrize('name', OURS)
def test_keys_unchanged(name):
    "Built by default: timm's `Beit` keys with the same options, plus the mask token and the MIM head, and nothing else."
    opts = {**MIM_CONFIGS[name]}
    with torch.device('meta'):
        ours = timm.create_model(name, pretrained=False)
        ref = Beit(**opts, num_classes=0, global_pool='', use_abs_pos_emb=False, use_shared_rel_pos_bias=True)
    assert set(ours.state_dict()) - set(ref.state_dict()) == MIM_ONLY
    assert set(ref.state_dict()) <= set(ours.state_dict())
    with torch.device('meta'): clf = timm.create_model(name, pretrained=False, num_classes=10)
    assert set(clf.state_dict()) - set(ours.state_dict()) == {'head.weight', 'head.bias'}

# --- timm's test_model_backward -----------------------------------------------------------------------------------
@pytest.mark.parametrize('name', ALL)
def test_backward(name):
    model = build(name, num_classes=42).train()
    x = inputs(model)
    every = {n for n, _ in model.named_parameters()}
    out = model(x)
    out.mean().backward()
    assert out.shape == (B, 42) and torch.isfinite(out).all()
    timm_call = with_grad(model)
    if name == CONTROL:
        assert timm_call == every
        return
    assert timm_call == every - MIM_ONLY                # the MIM head and mask token serve the MIM call only
    model.zero_grad()
    model(x, bool_masked_pos=a_mask(model)).mean().backward()
    mim_call = with_grad(model)
    assert mim_call == every - {'head.weight', 'head.bias'}
    assert timm_call | mim_call == every

# --- timm's test_model_forward_fx / test_model_backward_fx ----------------------------------------------------------
@pytest.mark.parametrize('name', ALL)
def test_forward_fx(name):
    model = build(name).eval()
    x = inputs(model, 1)
    with torch.inference_mode():
        out = model(x)
        fx = fx_model(model)
        fx_out = only(fx(x))
    assert torch.equal(fx_out, out)
    if name != CONTROL:
        with pytest.raises(ValueError, match="timm's call"): fx(x, a_mask(model, 1))

@pytest.mark.parametrize('name', ALL)
def test_backward_fx(name):
    model = build(name, num_classes=42).train()
    fx = fx_model(model, train=True)
    out = only(fx(inputs(model)))
    out.mean().backward()
    assert out.shape == (B, 42) and torch.isfinite(out).all()
    assert with_grad(fx) == {n for n, _ in fx.named_parameters()}
    if name != CONTROL:                                 # the graph holds what timm's call uses, nothing more
        assert {n for n, _ in model.named_parameters()} - {n for n, _ in fx.named_parameters()} == MIM_ONLY

# --- timm's test_model_forward_torchscript / test_model_forward_fx_torchscript ----------------------------------------
@pytest.mark.parametrize('name', ALL)
def test_torchscript(name):
    with set_scriptable(True): model = build(name).eval()
    x = inputs(model, 1)
    scripted = torch.jit.script(model)
    with torch.no_grad(): out, ref = scripted(x), model(x)
    assert out.shape == ref.shape and torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    if name != CONTROL:
        assert all(b.attn.fused_attn for b in model.blocks)   # scripting leaves the model itself on fused attention
        with pytest.raises(Exception): scripted(x, a_mask(model, 1))   # the MIM path is not compiled

@pytest.mark.parametrize('name', ALL)
def test_fx_torchscript(name):
    with set_scriptable(True): model = build(name).eval()
    x = inputs(model, 1)
    scripted = torch.jit.script(fx_model(model))
    with torch.no_grad(): out, ref = only(scripted(x)), model(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)

# --- timm's test_model_forward_intermediates / _features ------------------------------------------------------------
@pytest.mark.parametrize('name', ALL)
def test_forward_intermediates(name):
    model = build(name).eval()
    x = inputs(model, 1)
    info = timm.models.FeatureInfo(model.feature_info, len(model.feature_info))
    with torch.no_grad():
        final, inter = model.forward_intermediates(x, output_fmt='NCHW')
        torch.testing.assert_close(final, model.forward_features(x))
    assert len(inter) == len(info.channels()) >= 3
    for c, r, o in zip(info.channels(), info.reduction(), inter):
        assert o.shape[:2] == (1, c) and all(o.shape[2 + i] <= math.ceil(s / r) + 1 for i, s in enumerate(x.shape[2:]))

@pytest.mark.parametrize('name', ALL)
def test_features_only(name):
    model = build(name, features_only=True, feature_cls='getter').eval()
    x = torch.randn(1, 3, *model.model.patch_embed.img_size)          # the wrapped model
    with torch.no_grad(): outs = model(x)
    assert [o.shape[1] for o in outs] == model.feature_info.channels() and all(torch.isfinite(o).all() for o in outs)

# --- ours alone: the MIM call ------------------------------------------------------------------------------------------
@pytest.mark.parametrize('name', OURS)
def test_mim_call_unchanged(name):
    model = build(name, vocab_size=64).eval()
    x, mask = inputs(model), a_mask(model)
    flat = mask.flatten(1)
    with torch.no_grad():
        h = model.forward_features(x, mask)[:, 1:]
        logits = model(x, bool_masked_pos=mask)
        assert logits.shape == (int(mask.sum()), 64)
        torch.testing.assert_close(logits, model.lm_head(h[flat]))
        torch.testing.assert_close(model(x, mask), logits)                       # positional, as fastai calls it
        every = model(x, bool_masked_pos=flat, return_all_tokens=True)           # the "recover all tokens" ablation
        assert every.shape == (B, flat.shape[1], 64)
        torch.testing.assert_close(every[flat], logits)
        torch.testing.assert_close(model(x, return_all_tokens=True), model.lm_head(model.forward_features(x)[:, 1:]))
        assert model(x).shape == (B, model.num_features)                         # timm's call: pooled features
        assert model.forward_mim(x).shape == (B, flat.shape[1], 64)
