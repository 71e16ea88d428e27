"""Sharded data (00c) in the recipes: `beit-write-shards` turns an ImageNet-layout folder into tar shards; a 2-process CPU
(gloo) pretraining run on the shards is killed with SIGKILL at a fixed step and resumed with `--resume auto`, and it
reads exactly the samples, and ends with exactly the weights, of the same uninterrupted run on the image folder (the
trace of each rank: the sample indices of every batch after the resume point, and the sha256 of the final weights).
Fine-tuning reads a data root whose train/ is a shard folder and val/ an image folder.

Data: 64 JPEG scenes of 64 px in 6 class folders, plus one JPEG cut short that passes the header check and fails when
decoded (both layouts replace it by the next image); 3 shards of 24. Pretraining: beit_tiny (2 blocks), batch 8 per
process, 2 epochs of 4 steps, checkpoints at steps 3, 4 (epoch end) and 6; killed in step 7. The reference run and the
killed run are launched side by side; the shard runs read through one data-loader worker per process."""
import io, json, os, shutil, subprocess, sys
from pathlib import Path
import pytest, torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from helpers import ROOT, console_script, free_port
from test_resume import rows, ckpts

ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'CUDA_VISIBLE_DEVICES': ''}
N, BS, EPOCHS, SHARD = 64, 8, 2, 24
PER_EPOCH = (N + 1) // 2 // BS              # 4 steps per epoch (65 images: 32 per rank)
STEPS, KILL_AT, RESUMED_AT = EPOCHS * PER_EPOCH, 7, 6
ARGS = ['--preset', 'demo', '--depth', '2', '--batch-size', str(BS), '--epochs', str(EPOCHS), '--warmup-epochs', '1',
        '--save-every', '3', '--keep-checkpoints', '10', '--no-progress', '--trace']

def launch(data, out, *extra, wait=True):
    "`beit-pretrain` on 2 gloo processes through `accelerate launch` (a `Popen` when not `wait`)."
    cmd = console_script('accelerate') + ['launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1', '--mixed_precision', 'no',
           '--dynamo_backend', 'no', '--main_process_ip', '127.0.0.1', '--main_process_port', str(free_port()),
           '-m', 'beit_nb.pretrain', *ARGS, '--data', str(data), '--run-dir', str(out), *extra]
    p = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return finish(p) if wait else p

def finish(p):
    out, err = p.communicate(timeout=600)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)

def traces(run): return [json.loads((run/f'trace-rank{k}.json').read_text()) for k in (0, 1)]

def write_images(root, n, seed):
    "`n` synthetic scenes as JPEGs (quality 95) in class folders under `root`."
    from beit_nb.synthetic import synthetic_scenes, SHAPE_CLASSES
    sc = synthetic_scenes(n, 64, seed)
    for i in range(n):
        (root/SHAPE_CLASSES[sc.labels[i]]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(sc.images[i]).save(root/SHAPE_CLASSES[sc.labels[i]]/f'{i:04d}.jpg', quality=95)
    return sc

@pytest.fixture(scope='module')
def data(tmp_path_factory):
    "images/{train,val}: ImageNet-layout JPEG folders; shards/train: the training folder written by `beit-write-shards`."
    d = tmp_path_factory.mktemp('data')
    sc = write_images(d/'images/train', N, 0)
    buf = io.BytesIO(); Image.fromarray(sc.images[0]).resize((128, 128)).save(buf, 'JPEG')
    (d/'images/train/circle').mkdir(exist_ok=True)
    (d/'images/train/circle/0000_cut.jpg').write_bytes(buf.getvalue()[:len(buf.getvalue()) // 2])
    write_images(d/'images/val', 12, 1)
    r = subprocess.run(console_script('beit-write-shards') + [str(d/'images/train'), str(d/'shards/train'), '--samples-per-shard', str(SHARD)],
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert f'wrote {N + 1} images of 6 classes in 3 shard(s)' in r.stdout, r.stdout
    shutil.copytree(d/'images/val', d/'shards/val')                     # a root whose train/ is shards and val/ images
    return d

@pytest.fixture(scope='module')
def runs(data, tmp_path_factory):
    "The uninterrupted run on the image folder, and the run on the shards killed in step KILL_AT, side by side."
    ref, killed = tmp_path_factory.mktemp('folder')/'run', tmp_path_factory.mktemp('shards')/'run'
    pr = launch(data/'images/train', ref, '--num-workers', '0', wait=False)
    pk = launch(data/'shards/train', killed, '--num-workers', '1', '--kill-at-step', str(KILL_AT), wait=False)
    r, k = finish(pr), finish(pk)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return ref, killed, k

def test_shards_resume_as_the_folder_run(data, runs):
    ref, run, k = runs
    assert k.returncode != 0, k.stdout[-2000:]
    before = ckpts(run)
    assert before == [f'checkpoint-{s:08d}.pt' for s in (3, 4, RESUMED_AT)], (before, k.stderr[-3000:])
    assert len(rows(run)) == KILL_AT
    r = launch(data/'shards/train', run, '--num-workers', '1', '--resume', 'auto')
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    assert f'resuming from {run/before[-1]}' in r.stdout + r.stderr
    assert json.loads((run/'config.json').read_text())['run']['world_size'] == 2
    got, want = rows(run), rows(ref)
    assert [int(x['step']) for x in got] == list(range(1, STEPS + 1))
    for a, b in zip(got, want):                                          # the folder run's loss curve, step for step
        assert abs(float(a['loss']) - float(b['loss'])) < 1e-4 and a['lr'] == b['lr'], (a, b)
    for t, tref in zip(traces(run), traces(ref)):
        assert t['rank'] == tref['rank'] and len(tref['samples']) == STEPS
        assert t['samples'] == tref['samples'][RESUMED_AT:]              # after the resume point, the same indices...
        assert t['weights_sha256'] == tref['weights_sha256']             # ...meant the same images: the same final weights
    t0, t1 = traces(run)
    assert not {i for b in t0['samples'] for i in b} & {i for b in t1['samples'] for i in b}   # disjoint between the ranks

def test_finetune_reads_shards(data, tmp_path):
    "`finetune_datasets` on a root with shards for train/ gives the folder's augmented samples and classes; `beit-finetune` runs on it."
    from beit_nb.finetune import FinetuneConfig, finetune_datasets
    from beit_nb.shards import LabelledShardImages
    from beit_nb.data import ImageFolderDataset
    cfg = FinetuneConfig(input_size=64, mixup=0., cutmix=0.)
    with pytest.warns(UserWarning, match='could not decode'):
        (tr_s, ds_s, val_s), (tr_f, ds_f, val_f) = (finetune_datasets(cfg, data/r) for r in ('shards', 'images'))
        assert type(tr_s) is LabelledShardImages and type(val_s) is ImageFolderDataset and tr_s.classes == tr_f.classes
        cut = [i for i, (f, _) in enumerate(tr_f.samples) if f.name == '0000_cut.jpg'][0]
        for i in (0, cut, 40, N):                                        # the cut JPEG: replaced by the next image in both
            (xs, ys), (xf, yf) = ds_s[(1, i)], ds_f[(1, i)]
            assert torch.equal(xs, xf) and ys == yf
    r = subprocess.run(console_script('beit-finetune') + ['--preset', 'demo', '--data', str(data/'shards'), '--depth', '2', '--input-size', '32',
                       '--batch-size', '16', '--epochs', '1', '--no-progress', '--run-dir', str(tmp_path/'ft')],
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    m, cfg_run = json.loads((tmp_path/'ft/metrics.json').read_text()), json.loads((tmp_path/'ft/config.json').read_text())
    assert m['n_val'] == 12 and cfg_run['run']['num_classes'] == 6 and cfg_run['run']['classes'] == tr_f.classes
