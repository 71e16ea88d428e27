"""A Hugging Face `BeitForSemanticSegmentation` folder scored by `beit-segment --eval-only` goes through exactly the
official test pipeline: its mIoU/aAcc equal those of a hand-written reference (tests/test_seg_protocol.py's
`MultiScaleFlipAug` → `Resize(keep_ratio)` / `SETR_Resize` (OpenCV on the uint8 image) → flip → slide → resize back →
softmax → mean over the views, here run on transformers' own model) over validation images of several sizes and aspect
ratios, smaller and larger than the crop, portrait and landscape, scored against the annotations at their own
resolution with areas summed by hand (numpy); single scale without flip, and the official ms+flip protocol
(`--flip --scales 0.5,0.75,1,1.25,1.5,1.75`) checked step by step: each view's rescaled size (written out by hand),
its flip, its normalised input and its sliding-window logits, the averaged probabilities and the labels at the image's
size. The one step not bit-exact is the bilinear resize (ours agrees with OpenCV's to one grey level), so the scores
agree to 0.5 points. `--predict` prints the same load report as `--eval-only`."""
import json, subprocess, sys
from pathlib import Path
import numpy as np, pytest, torch, torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
cv2 = pytest.importorskip('cv2')
transformers = pytest.importorskip('transformers')
from helpers import console_script
from test_seg_protocol import ref_sizes

torch.set_num_threads(1)
CROP, STRIDE, IMG_SCALE, K = 32, 21, (128, 32), 4
SIZES = [(48, 40), (40, 48), (100, 36), (24, 20), (36, 90), (20, 28)]   # (w, h): smaller / larger than the 32-px crop, both ways
MEAN = STD = np.array([127.5] * 3)                                    # preprocessor_config.json's 0.5/0.5, as transformers reads it
MS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)                                # upernet_beit_*_ms.py: img_ratios, flip=True
# SETR_Resize(setr_multi_scale=True) by hand, crop 32, img_scale (128, 32): ratio r gives short side int(32 r), raised to the
# crop (r ≤ 1: 32; 1.25: 40; 1.5: 48; 1.75: 56), the long side in proportion, mmcv's int(x + 0.5); e.g. 100×36 at 1.25:
# f = 40 / 36, 100 f = 111.1 → 111; 36×90 at 1.25: 90 · 40 / 36 = 100.0 → 100
MS_SIZES = {(48, 40): [(38, 32)] * 3 + [(48, 40), (58, 48), (67, 56)],       # 48 · 32/40 = 38.4, 48 · 48/40 = 57.6, 48 · 56/40 = 67.2
            (40, 48): [(32, 38)] * 3 + [(40, 48), (48, 58), (56, 67)],
            (100, 36): [(89, 32)] * 3 + [(111, 40), (133, 48), (156, 56)],    # 88.9, 111.1, 133.3, 155.6
            (24, 20): [(38, 32)] * 3 + [(48, 40), (58, 48), (67, 56)],       # smaller than the crop: raised to it
            (36, 90): [(32, 80)] * 3 + [(40, 100), (48, 120), (56, 140)],    # 80.0, 100.0, 120.0, 140.0
            (20, 28): [(32, 45)] * 3 + [(40, 56), (48, 67), (56, 78)]}       # 44.8, 56.0, 67.2, 78.4

class HFLogits(torch.nn.Module):
    "transformers' model as the reference's segmentor: its logits (¼ resolution), as `EncoderDecoder.encode_decode` takes them."
    def __init__(self, m): super().__init__(); self.m, self.num_classes = m, K
    def forward(self, x): return self.m(pixel_values=x).logits

def ref_slide(model, x):
    "mmseg 0.x `EncoderDecoder.slide_inference` on a normalised `[1, 3, h, w]` view: windows' logits resized to the window, averaged."
    h, w = x.shape[2:]
    preds, cnt = torch.zeros(1, K, h, w), torch.zeros(1, 1, h, w)
    for i in range(max(h - CROP + STRIDE - 1, 0) // STRIDE + 1):
        for j in range(max(w - CROP + STRIDE - 1, 0) // STRIDE + 1):
            y2, x2 = min(i * STRIDE + CROP, h), min(j * STRIDE + CROP, w)
            y1, x1 = max(y2 - CROP, 0), max(x2 - CROP, 0)
            c = x[..., y1:y2, x1:x2]
            with torch.no_grad(): lg = model(c)
            preds[..., y1:y2, x1:x2] += F.interpolate(lg, c.shape[2:], mode='bilinear', align_corners=False); cnt[..., y1:y2, x1:x2] += 1
    return preds / cnt

def ref_views(img, ratios=(1.0,), flip=False):
    "The normalised views of `MultiScaleFlipAug` (cv2 rescale, flip, Normalize): (w, h, flipped, [1, 3, h, w])."
    H, W = img.shape[:2]
    for w, h in ref_sizes(W, H, IMG_SCALE, ratios, CROP, tuple(ratios) != (1.0,)):
        r = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float64)
        for f in ([False, True] if flip else [False]):
            a = r[:, ::-1] if f else r
            yield w, h, f, torch.from_numpy(((a - MEAN) / STD).astype(np.float32).transpose(2, 0, 1).copy())[None]

def ref_probs(model, img, ratios=(1.0,), flip=False):
    "The official test pipeline written out on transformers' model: each view slid, resized to the ORIGINAL image, softmax, un-flipped, averaged."
    H, W = img.shape[:2]
    total, n = torch.zeros(1, K, H, W), 0
    for w, h, f, x in ref_views(img, ratios, flip):
        p = F.interpolate(ref_slide(model, x), (H, W), mode='bilinear', align_corners=False).softmax(1)
        total += p.flip(-1) if f else p; n += 1
    return total / n

def ref_areas(preds:dict, labels:dict):
    "mmseg's areas by hand (numpy): intersection, union and labelled pixels per class, label 0 ignored (reduce_zero_label)."
    inter, union, lab = np.zeros(K), np.zeros(K), np.zeros(K)
    for n, (_, ann) in labels.items():
        y = np.where(ann == 0, 255, ann.astype(int) - 1); keep = y != 255
        p, t = preds[n][keep], y[keep]
        for c in range(K):
            inter[c] += ((p == c) & (t == c)).sum(); union[c] += ((p == c) | (t == c)).sum(); lab[c] += (t == c).sum()
    return inter, union, lab

@pytest.fixture(scope='module')
def hf_case(tmp_path_factory):
    "A tiny random `BeitForSemanticSegmentation` saved as a folder, and an ADE20K-layout folder of images of SIZES."
    from transformers import BeitConfig, BeitForSemanticSegmentation, BeitImageProcessor
    tmp = tmp_path_factory.mktemp('hf_seg')
    cfg = BeitConfig(image_size=CROP, patch_size=16, hidden_size=64, num_hidden_layers=6, num_attention_heads=4, intermediate_size=128,
                     use_relative_position_bias=True, use_absolute_position_embeddings=False, layer_scale_init_value=0.1,
                     out_indices=[2, 3, 4, 5], num_labels=K, auxiliary_channels=16, pool_scales=[1, 2, 3, 6], use_auxiliary_head=True)
    torch.manual_seed(0)
    m = BeitForSemanticSegmentation(cfg).eval()
    with torch.no_grad():
        for p in m.parameters(): p.add_(torch.randn_like(p) * 0.3)
        for p in m.decode_head.classifier.parameters(): p.mul_(2e-4)   # logits of a few units (not 1e4): soft votes to average
    m.save_pretrained(tmp/'hf'); BeitImageProcessor(size=CROP, do_center_crop=False, do_reduce_labels=True).save_pretrained(tmp/'hf')
    rng, data = np.random.default_rng(0), tmp/'ade'
    for sub in ('images/validation', 'annotations/validation', 'images/training', 'annotations/training'): (data/sub).mkdir(parents=True)
    labels = {}
    for n, (w, h) in enumerate(SIZES):
        img = (rng.random((h, w, 3)) * 255).astype(np.uint8)
        img[: h // 2] = np.clip(img[: h // 2].astype(int) + 60, 0, 255)              # some structure for the classes
        Image.fromarray(img).save(data/f'images/validation/v{n}.png'); Image.fromarray(img).save(data/f'images/training/t{n}.png')
        ann = rng.integers(0, K + 1, (h, w)).astype(np.uint8)                        # 0: ignored (reduce_zero_label)
        Image.fromarray(ann).save(data/f'annotations/validation/v{n}.png'); Image.fromarray(ann).save(data/f'annotations/training/t{n}.png')
        labels[n] = (img, ann)
    return dict(tmp=tmp, hf=tmp/'hf', data=data, labels=labels, ref=HFLogits(m))

TEST_ARGS = ['--hf-origin', 'transformers', '--num-classes', str(K), '--crop-size', str(CROP), '--stride', str(STRIDE),
             '--img-scale', ','.join(map(str, IMG_SCALE))]

def test_hf_folder_eval_is_the_official_pipeline(hf_case):
    tmp, hf, data, labels, ref = (hf_case[k] for k in ('tmp', 'hf', 'data', 'labels', 'ref'))
    r = subprocess.run([*console_script('beit-segment'), '--eval-only', '--data', str(data), '--checkpoint', str(hf), *TEST_ARGS,
                        '--run-dir', str(tmp/'ev'), '--num-workers', '0'], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    got = json.loads((tmp/'ev/eval.json').read_text())
    preds = {n: ref_probs(ref, img)[0].argmax(0).numpy() for n, (img, _) in labels.items()}
    inter, union, lab = ref_areas(preds, labels)
    r = subprocess.run([*console_script('beit-segment'), '--predict', str(data/'images/validation'), '--checkpoint', str(hf), *TEST_ARGS,
                        '--run-dir', str(tmp/'pred')], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    same = n_px = 0
    for n, pred in preds.items():                                  # pixel by pixel: the label maps of --predict
        assert np.bincount(pred.ravel(), minlength=K).max() < 0.9 * pred.size   # the reference's map is not one class
        ours = np.array(Image.open(tmp/f'pred/v{n}_label.png'))
        assert ours.shape == pred.shape
        same += (ours == pred).sum(); n_px += pred.size
    assert same / n_px > 0.99, same / n_px          # 0.994 measured; 0.78 with ImageNet mean/std instead of the folder's 0.5
    assert got['n_val'] == len(SIZES)
    # our bilinear resize agrees with OpenCV's to one grey level (07_seg_data), which flips a near-tied pixel here and there:
    # under 1% of the pixels, where a different pipeline step (no rescale, float resize, 0.5 vs ImageNet) moves far more
    assert abs(got['aAcc'] - inter.sum() / lab.sum()) < 5e-3, (got['aAcc'], inter.sum() / lab.sum())
    assert abs(got['mIoU'] - np.nanmean(inter / union)) < 5e-3, (got['mIoU'], np.nanmean(inter / union))

def test_hf_folder_ms_flip_step_by_step(hf_case, monkeypatch, capsys):
    "`--flip --scales 0.5,…,1.75` on the HF folder: every step of every view against the reference, then the CLI's scores and labels."
    import beit_nb.seg_model as seg_model
    from beit_nb.seg_checkpoint import read_segmentor
    from beit_nb.segmentation import beit_segment
    tmp, hf, data, labels, ref = (hf_case[k] for k in ('tmp', 'hf', 'data', 'labels', 'ref'))
    model, meta, _ = read_segmentor(hf, verbose=False, hf_origin='transformers')
    assert (meta['mean'], meta['std'], meta['crop_size'], meta['stride'], meta['img_scale']) == ([0.5] * 3, [0.5] * 3, CROP, STRIDE, list(IMG_SCALE))
    seen, slide = [], seg_model.slide_inference
    def recording(m, x, *a, **kw):                                 # each view as our pipeline slides it
        out = slide(m, x, *a, **kw); seen.append((x.clone(), out.clone())); return out
    monkeypatch.setattr(seg_model, 'slide_inference', recording)
    probs, agree, n_px = {}, 0, 0
    for n, (img, _) in labels.items():
        H, W = img.shape[:2]
        assert ref_sizes(W, H, IMG_SCALE, MS, CROP, True) == MS_SIZES[(W, H)]     # the reference's rule gives the sizes by hand
        seen.clear()
        ours = seg_model.predict_probs(model, img, 'slide', CROP, STRIDE, [0.5] * 3, [0.5] * 3, IMG_SCALE, MS, flip=True)
        views = list(ref_views(img, MS, flip=True))
        assert [(w, h, f) for w, h, f, _ in views] == [(w, h, f) for w, h in MS_SIZES[(W, H)] for f in (False, True)]
        assert [tuple(x.shape[2:]) for x, _ in seen] == [(h, w) for w, h, _, _ in views]        # 6 scales × (image, flipped), in order
        total = torch.zeros(1, K, H, W)
        for (x, lg), (w, h, f, xr) in zip(seen, views):
            assert (x - xr).abs().max() <= 1 / 127.5 + 1e-6           # rescale (≤ 1 grey level off OpenCV's), flip, Normalize
            if f: assert torch.equal(x, prev.flip(-1))                 # the flipped view is the view flipped, exactly
            prev = x
            r = ref_slide(ref, x)                                       # slide: our segmentor vs transformers' model, on the same view
            assert (lg - r).abs().max() <= 1e-5 * r.abs().max()        # (float32 sums in another order; the logits reach 1e4)
            p = F.interpolate(ref_slide(ref, xr), (H, W), mode='bilinear', align_corners=False).softmax(1)   # back to H × W, softmax
            total += p.flip(-1) if f else p
        want = total / len(views)                                     # the mean over the 12 views
        assert ours.shape == (1, K, H, W) and (ours - want).abs().max() < 2e-3, (W, H, (ours - want).abs().max())   # 4.4e-4 measured
        lab, rl = ours[0].argmax(0).numpy(), want[0].argmax(0).numpy()
        top2 = want[0].topk(2, 0).values
        sure = (top2[0] - top2[1]).numpy() > 4e-3                     # not a near-tie of the reference
        assert (lab[sure] == rl[sure]).all(), (W, H)
        agree += (lab == rl).sum(); n_px += lab.size; probs[n] = rl
    assert agree / n_px > 0.999, agree / n_px                         # 0.9998 measured
    monkeypatch.undo()
    # the command: --eval-only and --predict with the official ms+flip protocol, against the reference's labels and areas
    ms = ['--flip', '--scales', ','.join(f'{r:g}' for r in MS)]
    capsys.readouterr()
    beit_segment(['--eval-only', '--data', str(data), '--checkpoint', str(hf), *TEST_ARGS, *ms, '--run-dir', str(tmp/'ev-ms'), '--num-workers', '0'])
    got, ev_out = beit_segment.result, capsys.readouterr().out
    assert (got['flip'], got['scales'], got['img_scale'], got['mean']) == (True, list(MS), list(IMG_SCALE), [0.5] * 3)
    inter, union, lab = ref_areas(probs, labels)
    assert abs(got['aAcc'] - inter.sum() / lab.sum()) < 5e-3, (got['aAcc'], inter.sum() / lab.sum())
    assert abs(got['mIoU'] - np.nanmean(inter / union)) < 5e-3, (got['mIoU'], np.nanmean(inter / union))
    beit_segment(['--predict', str(data/'images/validation'), '--checkpoint', str(hf), *TEST_ARGS, *ms, '--run-dir', str(tmp/'pred-ms')])
    pred_out = capsys.readouterr().out
    same = n_px = 0
    for n, rl in probs.items():                                       # the resized-back labels, at each image's own size
        ours = np.array(Image.open(tmp/f'pred-ms/v{n}_label.png'))
        assert ours.shape == rl.shape == labels[n][0].shape[:2]
        same += (ours == rl).sum(); n_px += rl.size
    assert same / n_px > 0.99, same / n_px
    # --predict prints the load report --eval-only prints: what was loaded, from where, with which normalisation
    report = lambda out: [l for l in out.splitlines() if l.startswith((f'checkpoint {hf}:', '  '))]
    rep = report(pred_out)
    assert rep and rep == report(ev_out), (pred_out, ev_out)
    assert rep[0].startswith(f'checkpoint {hf}: Hugging Face BeitForSemanticSegmentation layout, ')
    text = '\n'.join(rep)
    for want in ('architecture from the tensors: 6 blocks × 64, 4 heads, 16-px patches', 'upernet head', f'{K} classes',
                 'inputs: mean (0.5, 0.5, 0.5), std (0.5, 0.5, 0.5) (preprocessor_config.json)', "hf_origin 'transformers' (given)"):
        assert want in text, (want, text)
