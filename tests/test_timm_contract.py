"""timm's model contract for our registered `*_8k_vocab` models, with timm's own `beit_base_patch16_224` as the control.

The models live in timm's registry, so they are checked for what timm's generic model tests (`tests/test_models.py` in
huggingface/pytorch-image-models) check for every registered model: `model(x)` with the default, `num_classes=42` and
`num_classes=0` heads; `forward_features` / `forward_head(pre_logits=True)` / `reset_classifier` / `get_classifier`;
the pretrained config; backward; `torch.fx` tracing (timm's feature extraction) against eager; TorchScript against
eager; `forward_intermediates` and `features_only`. Plus what is ours alone: the MIM call `model(x, bool_masked_pos)`
is unchanged, and the default build keeps the state-dict keys (timm's + `mask_token` + `lm_head.*`).

Under timm's conditions. Every input here has the size timm's test would choose: `timm_input_size` is timm's
`_get_input_size`, ported line for line, with each test's target and skip limit (`TIMM_SIZES`); it reads the model's
pretrained config, and `test_input_size` checks that timm's reading — by name from the registry, or from a default
build's config — gives each model its own size for every one of timm's tests, under the limit above which timm skips.
That needs `fixed_input_size` in the config (as timm's own beit configs have): without it timm feeds 128 px to
models that refuse anything but their own size (`test_fixed_input_size`). Gradients are counted as timm's backward
tests count them — a `.grad` on every parameter, and the numbers of elements with and without one.

The one exception, stated in notebook 03 and asserted exactly here: timm's call `model(x)` leaves `mask_token` and
`lm_head.*` (`MIM_ONLY`) without a gradient, because a plain forward has no masked patch to replace and no visual
token to predict. So for our models timm's `test_model_backward` and `test_model_backward_fx` fail by design, and
here the plain call must give a gradient to every parameter but `MIM_ONLY` (the traced graph, which holds only what
timm's call uses, lacks exactly `MIM_ONLY`), the MIM call a nonzero one to each of `MIM_ONLY`.

The models run at a test size — 32 px, 3 blocks of width 64 with 2 heads, a vocabulary of 256, their own patch size,
layer scale and position options; the tiny one as registered but for the vocabulary — and are built at full size on
the meta device only (config and keys), so the whole file runs in well under a minute on 2 CPU cores."""
import math
import pytest, torch, torch.nn as nn
import timm
from timm import set_scriptable, get_pretrained_cfg_value
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

# --- timm's input size: `_get_input_size` and each test's target / skip limit -------------------------------------------
def timm_input_size(model=None, model_name='', target=None):
    "timm's `_get_input_size` (tests/test_models.py), line for line."
    if model is None:
        assert model_name, "One of model or model_name must be provided"
        input_size = get_pretrained_cfg_value(model_name, 'input_size')
        fixed_input_size = get_pretrained_cfg_value(model_name, 'fixed_input_size')
        min_input_size = get_pretrained_cfg_value(model_name, 'min_input_size')
    else:
        default_cfg = model.default_cfg
        input_size = default_cfg['input_size']
        fixed_input_size = default_cfg.get('fixed_input_size', None)
        min_input_size = default_cfg.get('min_input_size', None)
    assert input_size is not None

    if fixed_input_size:
        return input_size

    if min_input_size:
        if target and max(input_size) > target:
            input_size = min_input_size
    else:
        if target and max(input_size) > target:
            input_size = tuple([min(x, target) for x in input_size])
    return input_size

# timm's test: (what `_get_input_size` reads: the registry by 'name' or the built 'model', target, skip above)
TIMM_SIZES = {
    'test_model_forward':                        ('model', 384, 384),    # TARGET_FWD_SIZE, MAX_FWD_SIZE
    'test_model_backward':                       ('name', 128, 320),     # TARGET_BWD_SIZE, MAX_BWD_SIZE
    'test_model_default_cfgs_non_std':           ('model', None, 320),
    'test_model_forward_torchscript':            ('name', 128, 320),     # TARGET_JIT_SIZE, MAX_JIT_SIZE
    'test_model_forward_intermediates':          ('model', 96, 256),     # TARGET_FFEAT_SIZE, MAX_FFEAT_SIZE
    'test_model_forward_intermediates_features': ('model', 96, 256),
    'test_model_forward_fx':                     ('model', 128, 256),    # TARGET_FWD_FX_SIZE, MAX_FWD_FX_SIZE
    'test_model_backward_fx':                    ('name', 128, 224),     # TARGET_BWD_FX_SIZE, MAX_BWD_FX_SIZE
    'test_model_forward_fx_torchscript':         ('name', 128, 320),     # TARGET_JIT_SIZE, MAX_JIT_SIZE
}

def build(name, **kw) -> nn.Module:
    """The registered model at the test size (the tiny one as registered), through timm's keyword overrides only. Our
    configs follow `img_size`; timm's control keeps its 224 px config, so its test build says its size by overlay."""
    size = {} if name == 'beit_tiny_patch8_64_8k_vocab' else dict(TEST_SIZE)
    if name != CONTROL: size['vocab_size'] = 256
    else: size['pretrained_cfg_overlay'] = dict(input_size=(3, TEST_SIZE['img_size'], TEST_SIZE['img_size']))
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, **{**size, **kw})

def inputs(model, test, b=B):
    "Random images at the size timm's `test` chooses from `model`'s pretrained config (asserting it does not skip)."
    _, target, limit = TIMM_SIZES[test]
    size = timm_input_size(model=model, target=target)
    assert max(size) <= limit, f'timm skips {test} above {limit} px, got {size}'
    return torch.randn(b, *size, generator=torch.Generator().manual_seed(1))

def a_mask(model, b=B):
    h, w = model.patch_embed.grid_size
    m = torch.rand(b, h, w, generator=torch.Generator().manual_seed(2)) < 0.4
    m[:, 0, 0] = True                                 # at least one masked patch per image
    return m

def with_grad(model) -> set:
    return {n for n, p in model.named_parameters() if p.grad is not None}

def numel(model, names=None) -> int:
    "Elements of `model`'s parameters (those in `names`), as timm's backward tests count them."
    return sum(p.numel() for n, p in model.named_parameters() if names is None or n in names)

def fx_model(model, train=False):
    "As timm's test: torchvision's feature extractor with timm's leaf modules / functions, returning the last node."
    kw = dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions(), param_shapes_constant=True)
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=kw)
    return create_feature_extractor(model, train_return_nodes=[train_nodes[-1]], eval_return_nodes=[eval_nodes[-1]],
                                    tracer_kwargs=kw)

def only(out: dict) -> torch.Tensor:
    (v,) = out.values()
    return v

@pytest.mark.parametrize('name', ALL)
def test_input_size(name):
    "For each of timm's tests, timm's choice — by name or from a default build — is the model's own size, not skipped."
    with torch.device('meta'): model = timm.create_model(name, pretrained=False)
    own = (3, *model.patch_embed.img_size)
    assert get_pretrained_cfg_value(name, 'fixed_input_size') is True and model.pretrained_cfg['fixed_input_size'] is True
    for test, (by, target, limit) in TIMM_SIZES.items():
        size = timm_input_size(model_name=name, target=target) if by == 'name' else timm_input_size(model, target=target)
        assert tuple(size) == own, (test, size)
        assert max(size) <= limit, (test, size)

@pytest.mark.parametrize('name', ALL)
def test_fixed_input_size(name):
    "The config's `fixed_input_size` is true: the test build's config has its size, and any other size is refused."
    model = build(name).eval()
    own = (3, *model.patch_embed.img_size)
    assert model.pretrained_cfg['fixed_input_size'] is True and tuple(model.pretrained_cfg['input_size']) == own
    if name != CONTROL:                               # ours without an overlay: the config follows `img_size`
        assert tuple(timm.create_model(name, pretrained=False, **{**TEST_SIZE, 'img_size': 48}).pretrained_cfg['input_size']) == (3, 48, 48)
    p = model.patch_embed.patch_size[0]
    with torch.no_grad(), pytest.raises(AssertionError, match="doesn't match model"):
        model(torch.randn(1, 3, own[1] + p, own[2] + p))

# --- timm's test_model_forward ------------------------------------------------------------------------------------
@pytest.mark.parametrize('name', ALL)
def test_forward(name):
    model = build(name).eval()
    x = inputs(model, 'test_model_forward')
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
    x = inputs(model, 'test_model_forward')
    with torch.no_grad(): out = model(x)
    assert model.num_classes == num_classes
    assert out.shape == (B, num_classes or model.num_features) and torch.isfinite(out).all()

@pytest.mark.parametrize('name', ALL)
def test_no_pooling(name):
    model = build(name, num_classes=0, global_pool='').eval()
    x = inputs(model, 'test_model_forward')
    with torch.no_grad(): out = model(x)
    assert out.shape == (B, 1 + math.prod(model.patch_embed.grid_size), model.num_features)

# --- timm's test_model_default_cfgs_non_std (beit is "non-standard": tokens, not NCHW) ------------------------------
@pytest.mark.parametrize('name', ALL)
def test_head_api(name):
    model = build(name).eval()
    x = inputs(model, 'test_model_default_cfgs_non_std')
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
    "timm's check — a `.grad` on every parameter from `model(x).mean()` — but for `MIM_ONLY`, which the MIM call trains."
    model = build(name, num_classes=42).train()
    x = inputs(model, 'test_model_backward')
    every = {n for n, _ in model.named_parameters()}
    out = model(x)
    out.mean().backward()
    assert out.shape == (B, 42) and not torch.isnan(out).any()
    exempt = set() if name == CONTROL else MIM_ONLY
    timm_call = with_grad(model)
    assert every - timm_call == exempt                 # timm: `x.grad is not None` for every parameter
    num_grad = sum(p.grad.numel() for p in model.parameters() if p.grad is not None)
    assert numel(model) - num_grad == numel(model, exempt)   # timm: num_params == num_grad
    if name == CONTROL: return
    model.zero_grad()
    model(x, bool_masked_pos=a_mask(model)).mean().backward()
    mim_call = with_grad(model)
    assert mim_call == every - {'head.weight', 'head.bias'}
    assert all(model.get_parameter(n).grad.abs().sum() > 0 for n in MIM_ONLY)   # used, not just reached
    assert timm_call | mim_call == every

# --- timm's test_model_forward_fx / test_model_backward_fx ----------------------------------------------------------
@pytest.mark.parametrize('name', ALL)
def test_forward_fx(name):
    model = build(name).eval()
    x = inputs(model, 'test_model_forward_fx', 1)
    with torch.inference_mode():
        out = model(x)
        fx = fx_model(model)
        fx_out = only(fx(x))
    assert torch.equal(fx_out, out)
    if name != CONTROL:
        with pytest.raises(ValueError, match="timm's call"): fx(x, a_mask(model, 1))

@pytest.mark.parametrize('name', ALL)
def test_backward_fx(name):
    "timm's count: the parameters of the model against those of its traced graph with a `.grad`, short by `MIM_ONLY`."
    model = build(name, num_classes=42).train()
    num_params = numel(model)
    fx = fx_model(model, train=True)
    out = only(fx(inputs(model, 'test_model_backward_fx')))
    out.mean().backward()
    assert out.shape == (B, 42) and not torch.isnan(out).any()
    assert with_grad(fx) == {n for n, _ in fx.named_parameters()}
    num_grad = sum(p.grad.numel() for p in fx.parameters() if p.grad is not None)
    exempt = set() if name == CONTROL else MIM_ONLY   # the graph holds what timm's call uses, nothing more
    assert num_params - num_grad == numel(model, exempt)
    assert {n for n, _ in model.named_parameters()} - {n for n, _ in fx.named_parameters()} == exempt

# --- timm's test_model_forward_torchscript / test_model_forward_fx_torchscript ----------------------------------------
@pytest.mark.parametrize('name', ALL)
def test_torchscript(name):
    with set_scriptable(True): model = build(name).eval()
    x = inputs(model, 'test_model_forward_torchscript', 1)
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
    x = inputs(model, 'test_model_forward_fx_torchscript', 1)
    scripted = torch.jit.script(fx_model(model))
    with torch.no_grad(): out, ref = only(scripted(x)), model(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)

# --- timm's test_model_forward_intermediates / _features ------------------------------------------------------------
@pytest.mark.parametrize('name', ALL)
def test_forward_intermediates(name):
    model = build(name).eval()
    x = inputs(model, 'test_model_forward_intermediates', 1)
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
    x = inputs(model, 'test_model_forward_intermediates_features', 1)   # the wrapper's config: the model's
    with torch.no_grad(): outs = model(x)
    assert [o.shape[1] for o in outs] == model.feature_info.channels() and all(torch.isfinite(o).all() for o in outs)

# --- ours alone: the MIM call ------------------------------------------------------------------------------------------
@pytest.mark.parametrize('name', OURS)
def test_mim_call_unchanged(name):
    model = build(name, vocab_size=64).eval()
    x, mask = inputs(model, 'test_model_forward'), a_mask(model)
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
