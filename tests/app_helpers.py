"""Shared by the app's system tests: a tiny random run saved the way users save theirs, and `beit-app` started in a
subprocess on a free local port. (What every system test shares is in helpers.py.)"""
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

def tiny_run_args(ckpt, tok) -> list[str]:
    "beit-app arguments for a saved tiny run (and a --run folder that does not exist, so nothing else is picked up)."
    return ['--checkpoint', str(ckpt), '--tokenizer', str(tok), '--run', str(Path(ckpt).parent / 'no_run')]

def start_app(args, port, timeout=120):
    "Start `beit-app ARGS --port PORT`; return (process, local URL, output lines so far) once Gradio says it serves."
    cmd = console_script('beit-app') + list(args) + ['--port', str(port)]
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED='False', PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    proc, m, lines = start_server(cmd, r'Running on local URL:\s*(\S+)', timeout, name='beit-app', env=env)
    return proc, m.group(1).rstrip('/') + '/', lines
