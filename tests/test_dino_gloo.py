"""BEiT + DINO on two processes (gloo on CPU, started by torchrun): `DINOLoss`'s centre is the mean teacher output over
BOTH ranks' batches (its all-reduce), and two forward calls of one DDP-wrapped model before one backward — the MIM call,
then DINO's call on the crops, as `DINOCallback` makes them — give every rank the gradient one process computes on the
whole batch. One tiny model (one block, width 64), a few seconds."""
import os, subprocess, sys, textwrap
from pathlib import Path
import pytest, torch

sys.path.insert(0, str(Path(__file__).parent))
from helpers import ROOT, free_port

WORKER = textwrap.dedent('''
    import sys, torch, torch.distributed as dist, timm
    from torch.nn.parallel import DistributedDataParallel as DDP
    import beit_nb.backbone
    from beit_nb.dino import DINOLoss, add_dino_head

    dist.init_process_group('gloo'); r = dist.get_rank()
    out = {}
    # the centre: each rank's teacher outputs differ; the centre is 0.1 x the mean over both ranks' rows
    t = [torch.randn(6, 16, generator=torch.Generator().manual_seed(k)) for k in (0, 1)]
    loss = DINOLoss(16); loss.update_center(t[r])
    out['center'], out['center_want'] = loss.center.clone(), 0.1 * torch.cat(t).mean(0, keepdim=True)

    def build():
        torch.manual_seed(0)
        m = timm.create_model('beit_tiny_patch8_64_8k_vocab', vocab_size=32, depth=1, embed_dim=64, num_heads=2)
        return add_dino_head(m, 24, hidden_dim=32, bottleneck_dim=16)
    g = torch.Generator().manual_seed(5)
    X, M = torch.randn(4, 3, 64, 64, generator=g), torch.rand(4, 64, generator=g) < 0.4
    C, T = torch.randn(8, 3, 64, 64, generator=g), torch.randn(8, 24, generator=g)      # 2 global crops of 4 images, teacher scores
    crit = DINOLoss(24, warmup_teacher_temp_epochs=0)
    def objective(model, i):        # images 2i, 2i+1: the MIM call, then DINO's call on their crops (crop-major)
        mim = model(X[2 * i:2 * i + 2], bool_masked_pos=M[2 * i:2 * i + 2]).pow(2).mean()
        rows = [2 * i, 2 * i + 1, 4 + 2 * i, 5 + 2 * i]
        return mim + crit(model(C[rows]), T[rows], 0, update_center=False)
    ddp = DDP(build()); objective(ddp, r).backward()
    ref = build(); (0.5 * (objective(ref, 0) + objective(ref, 1))).backward()
    grads = lambda m: torch.cat([p.grad.flatten() for p in m.parameters() if p.grad is not None])
    out['grad'], out['grad_want'] = grads(ddp.module), grads(ref)
    torch.save(out, sys.argv[1] + f'/rank{r}.pt')
    dist.destroy_process_group()
''')

@pytest.fixture(scope='module')
def ranks(tmp_path_factory):
    d = tmp_path_factory.mktemp('dino_gloo')
    (d/'worker.py').write_text(WORKER)
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_addr', '127.0.0.1',
           '--master_port', str(free_port()), str(d/'worker.py'), str(d)]
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'CUDA_VISIBLE_DEVICES': ''}
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return [torch.load(d/f'rank{k}.pt', weights_only=True) for k in (0, 1)]

def test_center_is_reduced_over_processes(ranks):
    for o in ranks: torch.testing.assert_close(o['center'], o['center_want'], rtol=0, atol=1e-7)

def test_two_forwards_one_backward_under_ddp(ranks):
    g0, g1 = ranks[0]['grad'], ranks[1]['grad']
    torch.testing.assert_close(g0, g1, rtol=0, atol=1e-7)                          # one gradient on both ranks ...
    torch.testing.assert_close(g0, ranks[0]['grad_want'], rtol=1e-4, atol=1e-6)    # ... the whole batch's, as one process computes it
    assert g0.abs().max() > 0
