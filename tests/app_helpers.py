"""Shared by the app's system tests: a tiny random run saved the way users save theirs, and `beit-app` started in a
subprocess on a free local port, and a tiny random segmentor for its Segmentation tab. (What every system test shares is
in helpers.py.)"""
import os
from pathlib import Path
from helpers import console_script, free_port, start_server, stop

VOCAB = 64

def save_tiny_run(folder: Path) -> tuple[Path, Path]:
    "A random tiny BeitForMIM checkpoint and a random demo-sized dVAE tokenizer in `folder`: (checkpoint, tokenizer dir)."
    import torch, timm
    import beit_nb.backbone  # registers the architectures
    from beit_nb.checkpoint import save_beit_checkpoint
    from beit_nb.tokenizer import save_tokenizer
    from beit_nb.dvae import DiscreteVAE
    torch.manual_seed(0)
    ckpt, tok = folder / 'beit_tiny.safetensors', folder / 'tokenizer'
    save_beit_checkpoint(timm.create_model('beit_tiny_patch8_64_8k_vocab', vocab_size=VOCAB), ckpt)
    save_tokenizer(DiscreteVAE(image_size=32, num_tokens=VOCAB, codebook_dim=16, num_layers=2, hidden_dim=16), tok)
    return ckpt, tok

IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
SEG = dict(num_classes=6, crop_size=32, stride=21, img_scale=(128, 32))   # beit-segment's rule: (4·crop, crop)

def save_tiny_segmentor(folder: Path) -> Path:
    """A random tiny segmentor (UPerNet + FCN on a 2-block demo backbone, 6 classes) saved with the metadata `beit-segment`
    writes (architecture, test settings, ImageNet normalisation); its weights are jittered so it predicts several classes."""
    import json, torch
    from beit_nb.checkpoint import save_beit_checkpoint
    from beit_nb.seg_model import beit_segmentor, segmentor_config
    torch.manual_seed(0)
    seg, _ = beit_segmentor(None, 'beit_tiny_patch8_64_8k_vocab', num_classes=SEG['num_classes'], input_size=SEG['crop_size'],
                            channels=32, aux_channels=16, depth=2, drop_path=0., verbose=False)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in seg.parameters(): p.add_(torch.randn(p.shape, generator=g) * 0.05)
    path = folder / 'segmentor.safetensors'
    save_beit_checkpoint(seg, path, metadata=dict(segmentor=json.dumps(segmentor_config(seg)), crop_size=SEG['crop_size'],
                         stride=SEG['stride'], img_scale=list(SEG['img_scale']), test_mode='slide', reduce_zero_label=True,
                         mean=json.dumps(list(IMAGENET['mean'])), std=json.dumps(list(IMAGENET['std']))))
    return path

def tiny_run_args(ckpt, tok) -> list[str]:
    "beit-app arguments for a saved tiny run (and a --run folder that does not exist, so nothing else is picked up)."
    return ['--checkpoint', str(ckpt), '--tokenizer', str(tok), '--run', str(Path(ckpt).parent / 'no_run')]

def start_app(args, port, timeout=120):
    "Start `beit-app ARGS --port PORT`; return (process, local URL, output lines so far) once Gradio says it serves."
    cmd = console_script('beit-app') + list(args) + ['--port', str(port)]
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED='False', PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    proc, m, lines = start_server(cmd, r'Running on local URL:\s*(\S+)', timeout, name='beit-app', env=env)
    return proc, m.group(1).rstrip('/') + '/', lines
