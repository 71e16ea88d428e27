"""The official ADE20K test protocol (mmseg 0.x as the BEiT code pins it) against a hand-written reference that calls
none of our pipeline functions: `MultiScaleFlipAug` → `Resize(keep_ratio)` (mmcv's `imrescale`: OpenCV's
`cv2.resize(INTER_LINEAR)` on the uint8 image) or `SETR_Resize(setr_multi_scale=True)` → flip → `Normalize` (ImageNet)
→ sliding windows → logits resized bilinearly to the ORIGINAL image → softmax → mean over scales × flips, on images
smaller and larger than the crop, portrait and landscape, with a tiny deterministic segmentor. Also the rescaled sizes
hand-computed from the configs, mmcv's `ConvModule` init statistics and mmseg 0.x's loss average."""
import math
import numpy as np, pytest, torch, torch.nn as nn, torch.nn.functional as F

cv2 = pytest.importorskip('cv2')
from beit_nb.seg_data import eval_sizes
from beit_nb.seg_model import ConvModule, predict_probs, predict_image
from beit_nb.segmentation import SegLoss

torch.set_num_threads(1)
MEAN, STD = np.array([123.675, 116.28, 103.53]), np.array([58.395, 57.12, 57.375])   # img_norm_cfg of ade20k.py

class TinySeg(nn.Module):
    "A deterministic stand-in for `BeitSegmentor`: a strided conv to ¼ resolution (as UPerNet's output), 4 classes."
    num_classes = 4
    def __init__(self):
        super().__init__(); torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 4, stride=4)
        self.backbone = type('B', (), {'patch_embed': type('P', (), {'patch_size': (4, 4)})()})()
    def forward(self, x): return self.conv(x)

# ---- the reference, written from the configs and mmseg 0.x / mmcv 1.x sources ----
def ref_scale(w, h, scale):
    "mmcv.rescale_size: factor min(long / max(h, w), short / min(h, w)); sides int(side · f + 0.5)."
    f = min(max(scale) / max(h, w), min(scale) / min(h, w))
    return int(w * f + 0.5), int(h * f + 0.5)

def ref_sizes(w, h, img_scale, ratios, crop, setr):
    out = []
    for r in ratios:
        scale = (int(img_scale[0] * r), int(img_scale[1] * r))          # MultiScaleFlipAug, img_ratios given
        if setr:                                                        # SETR_Resize._resize_img, setr_multi_scale
            new_short = crop if min(scale) < crop else min(scale)
            scale = (new_short * h / w, new_short) if h > w else (new_short, new_short * w / h)
        out.append(ref_scale(w, h, scale))
    return out

def ref_probs(model, img, img_scale, ratios, flip, crop, stride, setr):
    H, W = img.shape[:2]
    total, n = torch.zeros(1, model.num_classes, H, W), 0
    for w, h in ref_sizes(W, H, img_scale, ratios, crop, setr):
        r = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
        for f in ([False, True] if flip else [False]):
            a = r[:, ::-1] if f else r
            x = torch.from_numpy(((a - MEAN) / STD).astype(np.float32).transpose(2, 0, 1).copy())[None]
            preds, cnt = torch.zeros(1, model.num_classes, h, w), torch.zeros(1, 1, h, w)
            for i in range(max(h - crop + stride - 1, 0) // stride + 1):     # EncoderDecoder.slide_inference
                for j in range(max(w - crop + stride - 1, 0) // stride + 1):
                    y2, x2 = min(i * stride + crop, h), min(j * stride + crop, w)
                    y1, x1 = max(y2 - crop, 0), max(x2 - crop, 0)
                    c = x[..., y1:y2, x1:x2]
                    ph, pw = -c.shape[2] % 4, -c.shape[3] % 4              # (our segmentor's whole-patch padding)
                    with torch.no_grad(): lg = model(F.pad(c, (0, pw, 0, ph)))
                    lg = F.interpolate(lg, (c.shape[2] + ph, c.shape[3] + pw), mode='bilinear', align_corners=False)
                    preds[..., y1:y2, x1:x2] += lg[..., :c.shape[2], :c.shape[3]]; cnt[..., y1:y2, x1:x2] += 1
            p = F.interpolate(preds / cnt, (H, W), mode='bilinear', align_corners=False).softmax(1)   # to ori_shape, softmax
            total += p.flip(-1) if f else p; n += 1
    return total / n

IMAGES = [(60, 44), (44, 60), (130, 70), (70, 130), (33, 33), (200, 40)]   # (w, h): smaller / larger than the crop, both ways
def image(w, h, seed):
    g = np.random.RandomState(seed)                                   # smooth content + noise: a natural-ish image
    yy, xx = np.mgrid[0:h, 0:w]
    base = 127 + 80 * np.sin(xx[..., None] / (5 + 3 * np.arange(3))) * np.cos(yy[..., None] / 7)
    return np.clip(base + g.randint(-20, 21, (h, w, 3)), 0, 255).astype(np.uint8)

@pytest.mark.parametrize('ratios,flip', [((1.0,), False), ((0.5, 0.75, 1.0, 1.25, 1.5, 1.75), True)])
def test_pipeline_matches_reference(ratios, flip):
    model, crop, stride, img_scale = TinySeg().eval(), 48, 32, (192, 48)
    setr = ratios != (1.0,)
    for k, (w, h) in enumerate(IMAGES):
        img = image(w, h, k)
        assert eval_sizes(w, h, img_scale, ratios, crop) == ref_sizes(w, h, img_scale, ratios, crop, setr)
        ref = ref_probs(model, img, img_scale, ratios, flip, crop, stride, setr)
        ours = predict_probs(model, img, 'slide', crop, stride, MEAN / 255, STD / 255, img_scale, ratios, flip)
        assert ours.shape == (1, 4, h, w)
        assert (ours - ref).abs().max() < 2e-3, (w, h, (ours - ref).abs().max())     # cv2 vs ours: ≤ 1 grey level
        lab, rl = predict_image(model, img, 'slide', crop, stride, MEAN / 255, STD / 255, img_scale, ratios, flip), ref[0].argmax(0).numpy()
        top2 = ref[0].topk(2, 0).values
        sure = (top2[0] - top2[1]).numpy() > 4e-3                          # not a near-tie of the reference
        assert (lab[sure] == rl[sure]).all() and (lab == rl).mean() > 0.99

def test_sizes_by_hand():
    assert eval_sizes(640, 480, (2048, 512)) == [(683, 512)]           # 4:3 at (2048, 512): f = 512/480
    assert eval_sizes(480, 640, (2048, 512)) == [(512, 683)]
    assert eval_sizes(4000, 600, (2048, 512)) == [(2048, 307)]        # the long side binds: f = 2048/4000
    assert eval_sizes(512, 683, (2560, 640)) == [(640, 854)]          # f = 640/512 = 1.25: 683·1.25 = 853.75 → 854
    # SETR_Resize at crop 640: ratio 0.5 → int(640·0.5) = 320 < 640 → 640; ratio 1.5 → 960; no long-side bound
    R = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
    assert eval_sizes(800, 600, (2560, 640), R, 640) == [(853, 640)] * 3 + [(1067, 800), (1280, 960), (1493, 1120)]
    assert eval_sizes(4000, 600, (2560, 640), R, 640)[2] == (4267, 640)   # Resize would give (2560, 384)

def test_convmodule_init():
    torch.manual_seed(0)
    w = ConvModule(256, 192, 3, padding=1).conv.weight.detach().double().flatten()
    want = math.sqrt(2 / (192 * 9))                                      # kaiming normal, fan_out, ReLU gain √2
    assert abs(w.std().item() / want - 1) < 0.01 and abs(w.mean().item()) < 3 * want / math.sqrt(w.numel())
    assert abs((((w - w.mean()) / w.std()) ** 4).mean().item() - 3) < 0.05   # normal, not uniform (1.8)
    bn = ConvModule(8, 16).bn
    assert (bn.weight == 1).all() and (bn.bias == 0).all()

def test_loss_averages_over_all_pixels():
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(2, 3, 4, 4, generator=g), torch.randint(0, 3, (2, 4, 4), generator=g)
    y[0, 0] = 255; y[1, :, :2] = 255                                  # 4 + 8 of 32 pixels ignored
    lp = logits.log_softmax(1)
    by_hand = -sum(lp[b, y[b, i, j], i, j] for b in range(2) for i in range(4) for j in range(4) if y[b, i, j] != 255) / 32
    assert abs(SegLoss(0.4)(logits, y).item() - by_hand.item()) < 1e-6
