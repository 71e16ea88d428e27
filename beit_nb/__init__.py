"""BEiT (BERT pre-training of image transformers) end to end, as literate nbdev notebooks: tokenizer, blockwise masking, MIM pretraining, fine-tuning, attention analysis and a Gradio explorer.

Modules:

- `beit_nb.app`: A Gradio app over a BEiT checkpoint and a tokenizer: blockwise masks, token reconstructions, and per-query attention maps you get by clicking on a patch. Every view is also a named API endpoint.
- `beit_nb.attention`: Per-layer, per-head self-attention of any BEiT, per-query maps as in the paper's figure, attention rollout, mean attention distance, and an ipywidgets explorer.
- `beit_nb.backbone`: A ViT with relative position bias and layer scale — timm's `Beit` — plus the two pieces pretraining adds: a learnable mask embedding and a linear head over the visual-token vocabulary.
- `beit_nb.bench`: One table, one machine, one run: beit_nb's masked-image-modeling step against Hugging Face + DALL-E and timm, the masking generator, the augmentation, the tokenizer, each fast-path switch on and off, and `beit-bench`.
- `beit_nb.bench_components`: The parts of BEiT pretraining measured one at a time: real JPEGs to read, masks per second against a plain Algorithm 1, the two-view augmentation, the DALL-E tokenizer and its fast path, and sliding-window segmentation inference.
- `beit_nb.checkpoint`: Official, timm and Hugging Face (4.x and 5.x) BEiT weights in and out of one model; relative position tables and position embeddings resized for a new resolution; a shared bias table expanded to every block.
- `beit_nb.classifier`: Any BEiT checkpoint as a classifier: the MIM head dropped, mean pooling + LayerNorm + a small linear head, per-block position tables, any input size at forward time, and a report of what the loader did. Fine-tuning it is the next chapter (06a_finetune); probes (06b), segmentation (07) build on it too.
- `beit_nb.demo`: `make demo` runs this chapter's `beit_demo`: demo data → visual tokenizer → masked image modeling → a pretrained BEiT, with the numbers and pictures that say it worked, in a few minutes on two CPU cores.
- `beit_nb.dvae`: BEiT's own discrete VAE (the "customized" tokenizer of the official code): a convolutional VAE with a Gumbel-softmax bottleneck, with the official keys, as a `Tokenizer` on [0,1] images.
- `beit_nb.dvae_training`: The dVAE trained with a fastai `Learner`: Gumbel temperature annealing, a k-means start that uses every token from the first step, the hard-token PSNR as the metric, and `beit-train-tokenizer` for a folder of images.
- `beit_nb.experiments`: The paper's claim in miniature, on the bundled scenes: MIM pretraining on a large unlabelled pool, then fine-tuning on a small labelled set, against the same ViT trained from scratch; the Table 4 ablations that fit; probes by block.
- `beit_nb.finetune`: The official fine-tuning recipe on the classifier of 06_classifier: layer-wise lr decay, RandAugment, Mixup/CutMix, label smoothing, model EMA, validation every epoch split across the processes; a resumable multi-process `Learner` on the recipe layer (04c), the `beit-finetune` command, and the public checkpoints with the command each needs.
- `beit_nb.measure`: The benchmark's measuring kit, kept apart from the recipes it times: the machine a number was measured on, FLOPs and MFU counted by hand, a phase timer and a peak-memory probe, one set of row keys, passes in alternating order, the text table, and a cost model for the paper's run.
- `beit_nb.mim`: The MIM objective (cross-entropy over the visual tokens of the masked patches) and its accuracy, the VAE reading of section 2.4, token reconstructions through the tokenizer's decoder, the ablation targets of Table 4, and a tiny end-to-end run on CPU.
- `beit_nb.pretrain`: Masked image modeling as a fastai `Learner`: the paper's recipe as defaults, mixed precision, data-parallel training on any number of processes through `accelerate`, and checkpoints that survive `kill -9`.
- `beit_nb.probe`: Frozen-backbone probes of a BEiT checkpoint: features of any block through timm's `forward_intermediates`, the official linear probe, DINO's weighted kNN, accuracy block by block, and the `beit-probe` command.
- `beit_nb.recipe`: What pretraining (05), fine-tuning (06) and segmentation (07) share above the callbacks of 04b and 04ba: a command whose flags are the config's fields, presets as data, one optimizer factory, evaluation split across processes, one resumable-`Learner` builder and one train-and-save. Each recipe keeps only its data, model, objective and metrics.
- `beit_nb.run_files`: What a training run writes and reads back: checkpoints that survive `kill -9` and the exact resume from them, per-step and per-epoch logs, `config.json`, the evidence callbacks of the distributed and kill-and-resume tests, and `run_callbacks`, which assembles a whole run from these and the callbacks of 04b_training.
- `beit_nb.seg_data`: The data side of BEiT's segmentation task: the ADE20K folder layout and `reduce_zero_label`, mmseg's training augmentations (random rescale, cat-max-ratio crop, flip, photometric distortion, pad) and evaluation input, and mIoU, aAcc and mAcc from the intersection and union areas summed over a dataset — or over processes.
- `beit_nb.seg_model`: BEiT as a segmentation network: the four-level feature pyramid from the ViT's blocks, mmcv's `ConvModule`, the UPerNet, FCN and SETR-PUP heads, `BeitSegmentor` (mmseg's `EncoderDecoder`) built from any BEiT checkpoint or read back from its own, the Hugging Face key map, sliding-window and multi-scale inference, and the colours of its predictions. The data it reads is [07_seg_data](07_seg_data.ipynb)'s; the recipe that trains it is [07b_segmentation](07b_segmentation.ipynb)'s.
- `beit_nb.segmentation`: BEiT's ADE20K recipe on the shared recipe layer: the official mmseg configs as `SegConfig` presets, the pixel loss, mIoU over the validation set split across processes, a resumable multi-process `Learner` and the `beit-segment` command (training, `--eval-only`, `--predict`). The segmentor — feature pyramid, UPerNet and SETR-PUP heads, sliding-window inference — is `beit_nb.seg_model`; the ADE20K layout, its augmentations and mIoU are `beit_nb.seg_data`. No mmcv or mmseg: the pieces are small.
- `beit_nb.synthetic`: The bundled demo data: deterministic scenes with a label per image and a class per pixel, demo folders in the ImageNet and ADE20K layouts, a few sample photos, and the demo tokenizer trained on the scenes.
- `beit_nb.tokenizer`: Visual tokens for BEiT: one tokenizer interface, the DALL-E dVAE loaded safely from local files, and saving, loading and measuring any tokenizer.
- `beit_nb.training`: The machinery every long run of this project shares — pretraining (05), fine-tuning (06), segmentation (07): a run configuration, a per-step schedule, data that can be resumed mid-epoch, `accelerate` for processes and precision, and a guard against non-finite losses. Each piece is a fastai callback; what a run writes and reads back (checkpoints, logs) is the next chapter's (04ba_run_files)."""

__version__ = "0.0.1"

# The one place for warnings that importing a dependency raises and a user can do nothing about. It runs before any
# submodule is imported; each filter names the message, the category and the module that raises it.
import warnings as _warnings
_warnings.filterwarnings('ignore', message=r'`torch\.jit\.script` is deprecated', category=FutureWarning,
                         module=r'torch\.jit\._script\Z')        # fastai.layers applies @torch.jit.script at import (torch 2.14)
_warnings.filterwarnings('ignore', message=r"The 'mode\.chained_assignment' option is deprecated", category=DeprecationWarning,
                         module=r'fastai\.tabular\.core\Z')      # fastai sets this pandas option at import (pandas 3)

from . import backbone  # registers the BEiT-for-MIM models in timm (`timm.create_model("beit_base_patch16_224_8k_vocab")`)
from . import dvae      # registers DiscreteVAE with save_tokenizer / load_tokenizer
