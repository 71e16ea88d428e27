"""`beit-finetune` from the checkpoint formats people download, each a tiny random model saved the way its source saves
it: a Hugging Face folder (`BeitForMaskedImageModeling.save_pretrained`, the layout of `microsoft/beit-*-pt22k`) and
an official unilm `.pth` (`{'model': ...}` under the official names: shared `rel_pos_bias` table, `q_bias`/`v_bias`,
`gamma_1`/`gamma_2`, final `norm`, `mask_token`, `lm_head`), and one of the shape of the official
`beit_base_patch16_224_pt1k_800ep` (absolute position embedding, no relative position bias, no layer scale, its `args`
saying ImageNet mean/std). Each run prints the load report (layout, renames, the
dropped MIM head, the new head), fine-tunes a few steps and writes `metrics.json` and `model.safetensors`; the library
loads the checkpoint with the source's own tensors in place (checked against the source model, not our loader); the
fine-tuned weights stay within the optimizer's reach of the checkpoint's; and `beit-finetune --eval-only` on the saved
model reproduces `metrics.json`. The normalisation the checkpoint records is the one the run uses and the one the
fine-tuned classifier records.

Architecture: `beit_tiny_patch8_64_8k_vocab` (width 192, 3 heads, 8 px patches) cut to 2 blocks, at 32 px (a 4×4
grid); data: 2 classes × 6 training / 3 validation images of 40×40 px; 2 epochs of 3 steps of 4 images."""
import argparse, json, os, re, subprocess, sys
from pathlib import Path
import numpy as np, pytest, torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from helpers import ROOT, console_script

ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'CUDA_VISIBLE_DEVICES': ''}
ARCH = ['--model-name', 'beit_tiny_patch8_64_8k_vocab', '--depth', '2', '--input-size', '32', '--batch-size', '4', '--num-workers', '0']
LR, STEPS = 1e-3, 2 * 12 // 4
TRAIN = ARCH + ['--epochs', '2', '--warmup-epochs', '0', '--lr', str(LR), '--base-batch', '4', '--save-every', '0', '--mixup', '0',
                '--cutmix', '0', '--reprob', '0', '--drop-path', '0', '--no-progress']
DIM, HEADS, VOCAB = 192, 3, 64

def run(*args):
    return subprocess.run(console_script('beit-finetune') + [str(a) for a in args], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=300)

@pytest.fixture(scope='module')
def data(tmp_path_factory):
    "DATA/{train,val}/{a,b}/*.png: reddish and bluish noise."
    root, rng = tmp_path_factory.mktemp('data'), np.random.default_rng(0)
    for split, n in (('train', 6), ('val', 3)):
        for c, tint in (('a', (60, 0, 0)), ('b', (0, 0, 60))):
            (root/split/c).mkdir(parents=True)
            for i in range(n):
                px = np.clip(rng.integers(0, 196, (40, 40, 3)) + np.array(tint), 0, 255).astype(np.uint8)
                Image.fromarray(px).save(root/split/c/f'{i}.png')
    return root

def jitter(m, seed):
    "Random weights everywhere (models initialise biases, bias tables and q/v biases to zero)."
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters(): p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return m

def report(out:str) -> dict:
    "The load report's lines by their label ('checkpoint', 'renamed', 'dropped (…)', 'newly initialised', …)."
    lines = [l.strip() for l in out.splitlines()]
    i = next(i for i, l in enumerate(lines) if l.startswith('checkpoint ') and ' layout, ' in l)
    rep = {'checkpoint': lines[i]}
    for l in lines[i + 1:]:
        k, sep, v = l.partition(': ')
        if not sep or k not in ('renamed', 'expanded', 'resized', 'newly initialised', 'LayerNorm eps', 'inputs', 'note') and not k.startswith('dropped'): break
        rep[k] = v
    return rep

def library_model(ckpt):
    from beit_nb.finetune import beit_classifier
    return beit_classifier(ckpt, 'beit_tiny_patch8_64_8k_vocab', num_classes=2, depth=2, img_size=32, verbose=False)[0]

def fine_tune_and_evaluate(tmp_path, data, ckpt, eval_args=()):
    "Fine-tune from `ckpt`, then `--eval-only` the result (with `eval_args`); the checks the runs share. Returns (stdout+stderr, run folder, saved weights)."
    from safetensors.torch import load_file
    out = tmp_path/'run'
    r = run('--data', data, '--checkpoint', ckpt, '--run-dir', out, *TRAIN)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    m = json.loads((out/'metrics.json').read_text())
    assert m['step'] == STEPS and m['n_val'] == 6 and 0 <= m['top1'] <= m['top5'] <= 1, m
    saved = load_file(out/'model.safetensors')
    assert saved['head.weight'].shape == (2, DIM)
    ev = run('--eval-only', '--data', data, '--checkpoint', out/'model.safetensors', '--run-dir', tmp_path/'eval', *ARCH, *eval_args)
    assert ev.returncode == 0, ev.stdout[-3000:] + ev.stderr[-5000:]
    e = json.loads((tmp_path/'eval/eval.json').read_text())
    assert 'evaluation: top-1' in ev.stdout and e['n_val'] == m['n_val'] and e['top1'] == m['top1'], (e, m)
    assert abs(e['loss'] - m['loss']) < 1e-5, (e, m)
    return r.stdout + r.stderr, out, saved

def near(saved, ref):
    "The fine-tuned tensor moved (training happened), but by no more than AdamW's 6 steps at lr ≤ 1e-3 can (≈ lr per step)."
    d = (saved - ref).abs().max().item()
    assert 0 < d < 3 * STEPS * LR, d

def test_finetune_from_hf_folder(tmp_path, data):
    import transformers
    from transformers import BeitConfig, BeitForMaskedImageModeling
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    hf = jitter(BeitForMaskedImageModeling(BeitConfig(image_size=32, patch_size=8, hidden_size=DIM, num_hidden_layers=2,
                num_attention_heads=HEADS, intermediate_size=4 * DIM, vocab_size=VOCAB, use_mask_token=True,
                use_shared_relative_position_bias=True, layer_scale_init_value=0.1)), 1).eval()
    hf.save_pretrained(tmp_path/'hf')
    sd = {k: v.detach() for k, v in hf.state_dict().items()}
    log, out, saved = fine_tune_and_evaluate(tmp_path, data, tmp_path/'hf')
    rep = report(log)
    assert rep['checkpoint'].startswith(f'checkpoint {tmp_path/"hf"}: hf4 layout'), rep     # 5.x writes the 4.x (Hub) names
    assert int(re.match(r'(\d+) keys', rep['renamed']).group(1)) > 0, rep
    assert 'lm_head.{weight,bias}' in rep['dropped (MIM head, not part of a classifier)'], rep
    assert 'head.{weight,bias}' in rep['newly initialised'] and 'fc_norm' in rep['newly initialised'], rep
    assert rep['LayerNorm eps'] == '1e-12', rep                                    # BeitConfig's default, read from config.json
    m, pre = library_model(tmp_path/'hf'), 'beit.layers.1.attention.'               # transformers 5.x names, in memory
    torch.testing.assert_close(m.patch_embed.proj.weight, sd['beit.embeddings.patch_embeddings.projection.weight'], rtol=0, atol=0)
    torch.testing.assert_close(m.blocks[1].attn.qkv.weight, torch.cat([sd[pre + f'{n}_proj.weight'] for n in 'qkv']), rtol=0, atol=0)
    torch.testing.assert_close(m.blocks[1].gamma_1, sd['beit.layers.1.lambda_1'], rtol=0, atol=0)
    table = sd['beit.shared_position_bias.relative_position_bias_table']
    for b in m.blocks: torch.testing.assert_close(b.attn.relative_position_bias_table, table, rtol=0, atol=0)   # shared → per block
    near(saved['patch_embed.proj.weight'], sd['beit.embeddings.patch_embeddings.projection.weight'])

def official_state_dict(seed=3) -> dict:
    "A timm `Beit` in the pretraining configuration under the official names, as `run_beit_pretraining.py` saves it."
    from timm.models.beit import Beit
    tb = jitter(Beit(img_size=32, patch_size=8, embed_dim=DIM, depth=2, num_heads=HEADS, num_classes=0, global_pool='avg',
                     use_abs_pos_emb=False, use_shared_rel_pos_bias=True, init_values=0.1), seed)
    g = torch.Generator().manual_seed(seed + 1)
    return {**{k: v.detach() for k, v in tb.state_dict().items() if not k.startswith('fc_norm.')},
            'rel_pos_bias.relative_position_index': tb.rel_pos_bias.relative_position_index,
            'norm.weight': 1 + 0.1 * torch.randn(DIM, generator=g), 'norm.bias': 0.1 * torch.randn(DIM, generator=g),
            'mask_token': torch.randn(1, 1, DIM, generator=g), 'lm_head.weight': torch.randn(VOCAB, DIM, generator=g),
            'lm_head.bias': torch.randn(VOCAB, generator=g)}

def test_finetune_from_official_pth(tmp_path, data):
    sd = official_state_dict()
    assert {'blocks.0.attn.q_bias', 'blocks.0.attn.v_bias', 'blocks.0.attn.qkv.weight', 'blocks.0.gamma_1', 'blocks.0.gamma_2',
            'rel_pos_bias.relative_position_bias_table'} <= set(sd) and not any('blocks.0.attn.relative_position' in k for k in sd)
    torch.save({'model': sd, 'epoch': 799, 'args': argparse.Namespace(model='beit_base_patch16_224_8k_vocab')}, tmp_path/'pt.pth')
    bad = run('--eval-only', '--data', data, '--checkpoint', tmp_path/'pt.pth', '--run-dir', tmp_path/'eval0', *ARCH)
    assert bad.returncode != 0 and 'is not a fine-tuned classifier for 2 classes' in bad.stderr.strip().splitlines()[-1], bad.stderr[-2000:]
    log, out, saved = fine_tune_and_evaluate(tmp_path, data, tmp_path/'pt.pth')
    rep = report(log)
    assert rep['checkpoint'].startswith(f'checkpoint {tmp_path/"pt.pth"}: official layout'), rep
    assert rep['renamed'].startswith('none'), rep                                 # official names are timm's
    assert rep['expanded'].startswith('the shared relative position table → 2 per-block tables'), rep
    assert rep['dropped (MIM head, not part of a classifier)'] == 'mask_token, lm_head.{weight,bias}', rep
    assert 'norm.{weight,bias}' in next(v for k, v in rep.items() if k.startswith('dropped (final norm')), rep
    m = library_model(tmp_path/'pt.pth')
    for k in ('patch_embed.proj.weight', 'blocks.1.attn.qkv.weight', 'blocks.1.attn.q_bias', 'blocks.1.attn.v_bias', 'blocks.0.gamma_2'):
        torch.testing.assert_close(m.state_dict()[k], sd[k], rtol=0, atol=0)
    for b in m.blocks: torch.testing.assert_close(b.attn.relative_position_bias_table, sd['rel_pos_bias.relative_position_bias_table'], rtol=0, atol=0)
    near(saved['patch_embed.proj.weight'], sd['patch_embed.proj.weight'])

def pt1k_state_dict(seed=5) -> dict:
    "The shape of the official `beit_base_patch16_224_pt1k_800ep` (README: `--disable_rel_pos_bias --abs_pos_emb --layer_scale_init_value 0`), with its MIM head."
    from timm.models.beit import Beit
    tb = jitter(Beit(img_size=32, patch_size=8, embed_dim=DIM, depth=2, num_heads=HEADS, num_classes=0, global_pool='avg',
                     use_abs_pos_emb=True, use_rel_pos_bias=False, use_shared_rel_pos_bias=False, init_values=None), seed)
    g = torch.Generator().manual_seed(seed + 1)
    return {**{k: v.detach() for k, v in tb.state_dict().items() if not k.startswith('fc_norm.')},
            'norm.weight': 1 + 0.1 * torch.randn(DIM, generator=g), 'norm.bias': 0.1 * torch.randn(DIM, generator=g),
            'mask_token': torch.randn(1, 1, DIM, generator=g), 'lm_head.weight': torch.randn(VOCAB, DIM, generator=g),
            'lm_head.bias': torch.randn(VOCAB, generator=g)}

def test_finetune_from_pt1k_800ep_shape(tmp_path, data):
    from safetensors import safe_open
    sd = pt1k_state_dict()
    assert 'pos_embed' in sd and not any('relative_position' in k or 'gamma' in k for k in sd)
    args = argparse.Namespace(rel_pos_bias=False, abs_pos_emb=True, layer_scale_init_value=0.0, imagenet_default_mean_and_std=True)
    torch.save({'model': sd, 'epoch': 799, 'args': args}, tmp_path/'pt1k.pth')
    # the official fine-tuning defaults (a relative position table per block, layer scale 0.1) do not fit it: one line naming the keys
    bad = run('--data', data, '--checkpoint', tmp_path/'pt1k.pth', '--run-dir', tmp_path/'bad', '--rel-pos-bias', '--init-values', '0.1', *TRAIN)
    last = bad.stderr.strip().splitlines()[-1]
    assert bad.returncode != 0 and last.startswith('beit-finetune: ') and 'relative_position_bias_table' in last and 'gamma_1' in last, bad.stderr[-2000:]
    # without flags the checkpoint decides; the saved classifier is scored again with the official flags spelled out
    log, out, saved = fine_tune_and_evaluate(tmp_path, data, tmp_path/'pt1k.pth', ('--no-rel-pos-bias', '--abs-pos-emb', '--init-values', '0'))
    rep = report(log)
    assert rep['inputs'] == 'mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225) (args.imagenet_default_mean_and_std=True)', rep
    assert 'inputs normalised as the checkpoint records (args.imagenet_default_mean_and_std=True)' in log, log[-3000:]
    assert '--disable_rel_pos_bias' in log and '--layer_scale_init_value 0' in log, log[-3000:]
    assert not any('relative_position' in k or 'gamma' in k for k in saved) and 'pos_embed' in saved
    m = library_model(tmp_path/'pt1k.pth')
    for k in ('pos_embed', 'patch_embed.proj.weight', 'blocks.1.attn.qkv.weight', 'blocks.1.attn.q_bias'):
        torch.testing.assert_close(m.state_dict()[k], sd[k], rtol=0, atol=0)
    near(saved['pos_embed'], sd['pos_embed'])
    with safe_open(str(out/'model.safetensors'), 'pt') as f: meta = f.metadata()          # what the fine-tune used, for whoever loads it
    assert (json.loads(meta['mean']), json.loads(meta['std'])) == ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]), meta
    assert json.loads((out/'config.json').read_text())['run']['mean'] == [0.485, 0.456, 0.406]
