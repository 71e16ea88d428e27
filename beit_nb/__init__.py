"""BEiT (BERT pre-training of image transformers) end to end, as literate nbdev notebooks: tokenizer, blockwise masking, MIM pretraining, fine-tuning, attention analysis and a Gradio explorer.

Modules:

- `beit_nb.attention`: Per-layer, per-head self-attention of any BEiT, per-query maps as in the paper's figure, attention rollout, mean attention distance, and an ipywidgets explorer.
- `beit_nb.backbone`: A ViT with relative position bias and layer scale — timm's `Beit` — plus the two pieces pretraining adds: a learnable mask embedding and a linear head over the visual-token vocabulary."""

__version__ = "0.0.1"

from . import backbone  # registers the BEiT-for-MIM models in timm (`timm.create_model("beit_base_patch16_224_8k_vocab")`)
