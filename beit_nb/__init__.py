"""BEiT (BERT pre-training of image transformers) end to end, as literate nbdev notebooks: tokenizer, blockwise masking, MIM pretraining, fine-tuning, attention analysis and a Gradio explorer.

Modules:

- `beit_nb.app`: A Gradio app over a BEiT checkpoint and a tokenizer: blockwise masks, token reconstructions, and per-query attention maps you get by clicking on a patch. Every view is also a named API endpoint.
- `beit_nb.attention`: Per-layer, per-head self-attention of any BEiT, per-query maps as in the paper's figure, attention rollout, mean attention distance, and an ipywidgets explorer.
- `beit_nb.backbone`: A ViT with relative position bias and layer scale — timm's `Beit` — plus the two pieces pretraining adds: a learnable mask embedding and a linear head over the visual-token vocabulary.
- `beit_nb.bench`: One table, one machine, one run: beit_nb's masked-image-modeling step against Hugging Face + DALL-E and timm, the masking generator, the augmentation, the tokenizer, each fast-path switch on and off, and `beit-bench`.
- `beit_nb.checkpoint`: Official, timm and Hugging Face (4.x and 5.x) BEiT weights in and out of one model; relative position tables and position embeddings resized for a new resolution; a shared bias table expanded to every block.
- `beit_nb.demo`: `make demo` runs this chapter's `beit_demo`: demo data → visual tokenizer → masked image modeling → a pretrained BEiT, with the numbers and pictures that say it worked, in a few minutes on two CPU cores.
- `beit_nb.dvae`: BEiT's own discrete VAE (the "customized" tokenizer of the official code): a convolutional VAE with a Gumbel-softmax bottleneck, with the official keys, as a `Tokenizer` on [0,1] images.
- `beit_nb.dvae_training`: The dVAE trained with a fastai `Learner`: Gumbel temperature annealing, a k-means start that uses every token from the first step, the hard-token PSNR as the metric, and `beit-train-tokenizer` for a folder of images.
- `beit_nb.experiments`: The paper's claim in miniature, on the bundled scenes: MIM pretraining on a large unlabelled pool, then fine-tuning on a small labelled set, against the same ViT trained from scratch; the Table 4 ablations that fit; probes by block.
- `beit_nb.finetune`: From any BEiT checkpoint to a classifier (MIM head dropped, mean pooling + LayerNorm + a small linear head, per-block position tables, any input size, a report of what the loader did), and the official fine-tuning recipe as a resumable multi-process `Learner` and the `beit-finetune` command.
- `beit_nb.mim`: The MIM objective (cross-entropy over the visual tokens of the masked patches) and its accuracy, the VAE reading of section 2.4, token reconstructions through the tokenizer's decoder, the ablation targets of Table 4, and a tiny end-to-end run on CPU.
- `beit_nb.pretrain`: Masked image modeling as a fastai `Learner`: the paper's recipe as defaults, mixed precision, data-parallel training on any number of processes through `accelerate`, and checkpoints that survive `kill -9`.
- `beit_nb.probe`: Frozen-backbone probes of a BEiT checkpoint: features of any block through timm's `forward_intermediates`, the official linear probe, DINO's weighted kNN, accuracy block by block, and the `beit-probe` command.
- `beit_nb.segmentation`: BEiT as a segmentation backbone: a four-level feature pyramid from the ViT's blocks, UPerNet (the official code) and SETR-PUP (the paper's task layer) heads with their auxiliary heads, the ADE20K folder layout and its augmentations, sliding-window inference, mIoU over a dataset, the official ADE20K recipe as a resumable multi-process `Learner`, and the `beit-segment` command. No mmcv or mmseg: the pieces are small.
- `beit_nb.synthetic`: The bundled demo data: deterministic scenes with a label per image and a class per pixel, demo folders in the ImageNet and ADE20K layouts, a few sample photos, and the demo tokenizer trained on the scenes.
- `beit_nb.tokenizer`: Visual tokens for BEiT: one tokenizer interface, the DALL-E dVAE loaded safely from local files, and saving, loading and measuring any tokenizer.
- `beit_nb.training`: The machinery every long run of this project shares — pretraining (05), fine-tuning (06), segmentation (07): a run configuration, a per-step schedule, data that can be resumed mid-epoch, `accelerate` for processes and precision, a guard against non-finite losses, atomic checkpoints and logs. Each piece is a fastai callback."""

__version__ = "0.0.1"

from . import backbone  # registers the BEiT-for-MIM models in timm (`timm.create_model("beit_base_patch16_224_8k_vocab")`)
from . import dvae      # registers DiscreteVAE with save_tokenizer / load_tokenizer
