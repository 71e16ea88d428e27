"""`beit-bench --preset cpu --passes 1` as installed (the preset `make test` runs, one pass over the step rows): one
run prints the table and writes bench.txt, bench.csv, bench.json and the step chart bench_steps.png with every expected
row (the four step rows, each fast-path switch, the data-loading rows, masking, the augmentation phase by phase and
end to end, tokenizer, segmentation inference), each row with a key of its own, the machine named (CPU, cores,
torch/timm/transformers versions) and the goals as records. No timing is asserted: only that numbers are there and
positive. (A preset that does not exist is refused in the notebook, 10b_bench.)"""
import csv, json, os, subprocess, sys
from pathlib import Path
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from helpers import ROOT, console_script

ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'CUDA_VISIBLE_DEVICES': ''}
STEP_ROWS = ['beit_nb Learner (beit-pretrain)', 'beit_nb bare loop', 'HF BeitForMaskedImageModeling + dall-e',
             'timm Beit + linear head, all tokens (floor)', 'beit_nb Learner, fused AdamW on', 'beit_nb Learner, bf16 on',
             'beit_nb Learner, channels-last off', 'beit_nb Learner, exact masks off', 'beit_nb Learner, SDPA-layout bias off',
             'beit_nb Learner, fed by its DataLoader, 0 worker(s)', 'beit_nb Learner, fed by its DataLoader, 2 worker(s)']
OTHER_ROWS = ['beit_nb MaskingGenerator.masks (one by one)', 'beit_nb MaskingGenerator.masks, exact count',
              'beit_nb MaskingGenerator.batch_masks (vectorised)', 'beit_nb MaskingGenerator.batch_masks, exact count',
              'plain Algorithm 1 (numpy, per image)', 'JPEG decode (load_image, full image)', 'colour jitter + flip (full image)',
              'crop + resize to view 1 (bicubic)', 'crop + resize to view 2 (Lanczos)', 'tensor conversion (both views)',
              'normalisation (view 1)', 'PIL path, every phase (BeitPretrainTransform)',
              'uint8 views, jitter on the crop (the exact CPU path)', 'uint8 views, jitter on the device, DCT-scaled decode',
              'two-view augmentation, main process', 'DataLoader, 2 worker(s)',
              'tokenizer fp32 (DalleTokenizer.encode)', 'tokenizer channels-last', 'tokenizer channels-last + bf16 + inference_mode',
              'demo segmentor: BEiT-tiny/8 + UPerNet, slide 64/43']

@pytest.fixture(scope='module')
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp('bench')
    r = subprocess.run(console_script('beit-bench') + ['--preset', 'cpu', '--passes', '1', '--out', str(d/'out')], cwd=ROOT, env=ENV,
                       capture_output=True, text=True, timeout=900)
    return r, d/'out'

def test_runs_and_prints_the_table(run):
    r, out = run
    assert r.returncode == 0, r.stderr[-3000:]
    import torch, timm, transformers
    for s in ['beit-bench --preset cpu', 'machine: ', f'torch {torch.__version__}', f'timm {timm.__version__}',
              f'transformers {transformers.__version__}', '## goals', *STEP_ROWS, 'masks/s', 'img/s']:
        assert s in r.stdout, s
    assert (out/'bench.txt').read_text() in r.stdout

def test_csv_has_every_row(run):
    _, out = run
    rows = list(csv.DictReader(open(out/'bench.csv')))
    names = [x['row'] for x in rows]
    for n in STEP_ROWS + OTHER_ROWS: assert n in names, n
    for x in rows: assert float(x['throughput']) > 0, x
    keys = [x['key'] for x in rows]
    assert all(keys) and len(set(keys)) == len(keys), keys
    steps = [x for x in rows if x['section'].startswith('step')]
    for x in steps:
        for k in ('step_ms', 'fb_ms', 'opt_ms', 'peak_mb'): assert float(x[k]) >= 0, (x['row'], k)
        assert x['precision'] in ('fp32', 'bf16')
    assert {x['section'] for x in rows} >= {'masking', 'augmentation', 'augmentation: per image, one core', 'tokenizer', 'segmentation'}
    aug = {x['key']: x for x in rows if x['section'] == 'augmentation: per image, one core'}
    assert float(aug['aug.phases']['per_core']) > 0 and float(aug['aug.phases']['step_ms']) > 0
    assert abs(sum(float(aug[f'aug.phase.{k}']['step_ms']) for k in ('decode', 'jitter', 'view1', 'view2', 'tensor', 'normalise', 'mask'))
               - float(aug['aug.phases']['step_ms'])) < 0.1 * float(aug['aug.phases']['step_ms'])    # the phases make up the image

def test_chart_of_the_step_rows(run):
    from PIL import Image
    _, out = run
    with Image.open(out/'bench_steps.png') as im: assert im.format == 'PNG' and im.size[1] > 300

def test_json_names_the_machine(run):
    _, out = run
    j = json.loads((out/'bench.json').read_text())
    import torch, timm, transformers
    m = j['machine']
    assert m['cpu'] and m['logical_cores'] >= 1 and m['usable_cores'] >= 1
    assert (m['torch'], m['timm'], m['transformers']) == (torch.__version__, timm.__version__, transformers.__version__)
    assert m['gpu'] == 'none'                                  # CUDA_VISIBLE_DEVICES='' above
    assert j['preset']['name'] == 'cpu' and j['preset']['passes'] == 1 and j['device'] == 'cpu'
    assert len(j['rows']) == len(list(csv.DictReader(open(out/'bench.csv'))))
    goals = {g['goal'].split(' (')[0] for g in j['goals']}
    assert {'beit_nb step', 'Learner overhead over the bare loop', 'masking', 'Learner fed by its own DataLoader vs pre-made batches',
            'loading cores per GPU at 2,500 img/s, PIL path'} <= goals, goals
    for g in j['goals']: assert isinstance(g['higher'], bool) and g['target'] > 0 and g['target_shown'][0] in '≥≤', g
