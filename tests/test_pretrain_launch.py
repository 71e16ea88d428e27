"""Two-process data-parallel pretraining on CPU (gloo) through `accelerate launch`: the ranks read disjoint shards,
the gradient the optimizer uses is the mean of the ranks' local gradients, a non-finite loss on ONE rank makes both
skip the step, both ranks end with identical weights, and only rank 0 writes checkpoints and logs.

One tiny run (beit_tiny, 64 px, 96 scenes, batch 8 per process, 2 epochs = 12 batches per rank) takes ~15-30 s."""
import csv, json, os, subprocess, sys
from pathlib import Path
import numpy as np, pytest

sys.path.insert(0, str(Path(__file__).parent))
from helpers import ROOT, console_script, free_port

N, BS, EPOCHS = 96, 8, 2
PER_EPOCH = N // 2 // BS                      # 6 batches per rank per epoch
NAN_BATCH = PER_EPOCH + 3                     # rank 1's 3rd batch of epoch 2 gets a NaN loss

@pytest.fixture(scope='module')
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp('ddp')/'run'
    cmd = console_script('accelerate') + ['launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1', '--mixed_precision', 'no',
           '--dynamo_backend', 'no', '--main_process_ip', '127.0.0.1', '--main_process_port', str(free_port()),
           '-m', 'beit_nb.pretrain', '--preset', 'demo', '--n-demo', str(N), '--batch-size', str(BS), '--epochs', str(EPOCHS),
           '--warmup-epochs', '1', '--save-every', '4', '--keep-checkpoints', '10', '--clip-grad', '0', '--num-workers', '0',
           '--depth', '2', '--trace', '--inject-nan-batches', f'1:{NAN_BATCH}', '--run-dir', str(out)]
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'CUDA_VISIBLE_DEVICES': ''}
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-6000:]
    return out, r, [json.loads((out/f'trace-rank{k}.json').read_text()) for k in (0, 1)]

def test_two_gloo_processes(run):
    out, _, traces = run
    assert [t['rank'] for t in traces] == [0, 1] and all(t['world_size'] == 2 for t in traces)
    cfg = json.loads((out/'config.json').read_text())
    assert cfg['run']['distributed_type'] == 'MULTI_CPU' and cfg['run']['world_size'] == 2 and cfg['run']['global_batch'] == 2 * BS
    assert cfg['run']['peak_lr'] == pytest.approx(1.5e-3 * 2 * BS / 32)      # the demo lr (1.5e-3 at batch 32), scaled to 16

def test_disjoint_shards(run):
    _, _, traces = run
    s0, s1 = traces[0]['samples'], traces[1]['samples']
    assert len(s0) == len(s1) == EPOCHS * PER_EPOCH
    for e in range(EPOCHS):                                           # every epoch: disjoint halves of one permutation
        a = {i for b in s0[e * PER_EPOCH:(e + 1) * PER_EPOCH] for i in b}
        b = {i for b in s1[e * PER_EPOCH:(e + 1) * PER_EPOCH] for i in b}
        assert len(a) == len(b) == N // 2 and not (a & b) and a | b == set(range(N))
    assert s0[:PER_EPOCH] != s0[PER_EPOCH:]                            # and a new order in the next epoch

def test_gradients_are_averaged(run):
    _, _, (t0, t1) = run
    l0, l1, g0, g1 = (np.array(t[k]) for t, k in [(t0, 'local_grad'), (t1, 'local_grad'), (t0, 'synced_grad'), (t1, 'synced_grad')])
    assert not np.allclose(l0, l1)                                     # the ranks saw different data...
    np.testing.assert_allclose(g0, g1, rtol=0, atol=1e-7)             # ...but used the same gradient,
    np.testing.assert_allclose(g0, (l0 + l1) / 2, rtol=1e-4, atol=1e-7)  # the mean of their local gradients

def test_identical_final_weights(run):
    _, _, traces = run
    assert traces[0]['weights_sha256'] == traces[1]['weights_sha256']

def test_nonfinite_on_one_rank_skips_on_both(run):
    out, r, _ = run
    assert f'non-finite loss at batch {NAN_BATCH}' in r.stdout + r.stderr
    log = list(csv.DictReader(open(out/'log.csv')))
    assert [int(x['nonfinite']) for x in log] == [0, 1]
    assert int(log[-1]['step']) == EPOCHS * PER_EPOCH - 1              # one step fewer, on both ranks (else DDP would hang)

def test_only_rank0_writes(run):
    out, r, _ = run
    steps = EPOCHS * PER_EPOCH - 1
    rows = list(csv.DictReader(open(out/'steps.csv')))
    assert [int(x['step']) for x in rows] == list(range(1, steps + 1))  # one row per step: a second writer would duplicate
    assert len(list(csv.DictReader(open(out/'log.csv')))) == EPOCHS
    assert r.stdout.count(f'epoch {EPOCHS}/{EPOCHS}') == 1              # one console line per epoch, from rank 0
    # every 4 steps and at each epoch end (6, 11); step 4 in epoch 1 and 8 in epoch 2
    assert sorted(p.name for p in out.glob('checkpoint-*.pt')) == [f'checkpoint-{s:08d}.pt' for s in (4, 6, 8, 11)]
    assert not list(out.glob('.*tmp*')), 'a temporary checkpoint file was left behind'
    assert (out/'model.safetensors').exists()
