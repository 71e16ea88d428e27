"""Shared by the app's system tests: a tiny random run saved the way users save theirs, and `beit-app` started in a
subprocess on a free local port."""
import os, re, socket, subprocess, sys, time
from pathlib import Path

VOCAB = 64

def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def save_tiny_run(folder: Path) -> tuple[Path, Path]:
    "A random tiny BeitForMIM checkpoint and a random demo-sized dVAE tokenizer in `folder`: (checkpoint, tokenizer dir)."
    import torch, timm
    import beit_nb.backbone  # registers the architectures
    from beit_nb.checkpoint import save_beit_checkpoint
    from beit_nb.tokenizer import DiscreteVAE, save_tokenizer
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
    exe = Path(sys.executable).parent / 'beit-app'
    cmd = ([str(exe)] if exe.exists() else [sys.executable, '-m', 'beit_nb.app']) + list(args) + ['--port', str(port)]
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED='False', PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines, t0 = [], time.time()
    while time.time() - t0 < timeout:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None: break
            continue
        lines.append(line)
        m = re.search(r'Running on local URL:\s*(\S+)', line)
        if m: return proc, m.group(1).rstrip('/') + '/', lines
    proc.kill()
    raise RuntimeError('beit-app did not start:\n' + ''.join(lines[-40:]))

def stop(proc):
    proc.terminate()
    try: proc.wait(10)
    except subprocess.TimeoutExpired: proc.kill()
