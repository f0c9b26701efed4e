"""Random-init backbones with the real architectures (or tiny ones), saved in the layouts the loaders read.

For tests and for throughput measurement without downloaded weights: a random-init ViT-B/32 costs the same FLOPs
as the real one. Each function writes a file / folder and returns its path; load it back through the normal
loaders (``CLIPEncoder.from_file``, ``DinoEncoder.from_folder``, ...), so the loading code is what is exercised.

Every file / folder written here carries a marker (``random_init.json`` inside a folder, ``<file>.random-init.json``
beside a file): ``is_random_init(path)`` tells, so a results file scored with such weights is marked "not
comparable" and never put beside a paper's numbers as if it were.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from lit_cologen.models.random_weights import RANDOM_INIT_MARKER

__all__ = [
    "CLIP_PRESETS",
    "is_random_init",
    "mark_random_init",
    "build_random_clip",
    "save_random_clip",
    "save_random_dino",
    "save_random_dpt",
    "save_random_segformer",
]

#: clip.model.CLIP arguments: embed_dim, image_resolution, vision_layers, vision_width, vision_patch_size,
#: context_length, vocab_size, transformer_width, transformer_heads, transformer_layers
CLIP_PRESETS: dict[str, tuple] = {
    "ViT-B/32": (512, 224, 12, 768, 32, 77, 49408, 512, 8, 12),
    "ViT-B/16": (512, 224, 12, 768, 16, 77, 49408, 512, 8, 12),
    "ViT-L/14": (768, 224, 24, 1024, 14, 77, 49408, 768, 12, 12),
    # heads = width // 64 (what clip.model.build_model infers): width 64 -> 1 head
    "tiny": (16, 32, 2, 64, 8, 77, 49408, 64, 1, 2),
}


def _marker(path: Path) -> Path:
    return path / RANDOM_INIT_MARKER if path.is_dir() else path.with_name(f"{path.name}.random-init.json")


def mark_random_init(path: str | os.PathLike, what: str, seed: int) -> None:
    """Write the random-init marker of the weights at ``path`` (a file or a folder)."""
    _marker(Path(path)).write_text(json.dumps({"random_init": True, "architecture": what, "seed": seed,
                                               "made_by": "benchmarks.metrics.random_init"}, indent=2))


def is_random_init(path: str | os.PathLike | None) -> bool:
    """Whether the weights at ``path`` were made by this module (or ``lit_cologen.models.random_weights``)."""
    return path is not None and Path(path).exists() and _marker(Path(path)).is_file()


def build_random_clip(preset: str = "tiny", seed: int = 0):
    """A random-init ``clip.model.CLIP`` whose weights are fp16-representable (as OpenAI's checkpoints are), fp32."""
    from clip.model import CLIP, convert_weights

    if preset not in CLIP_PRESETS:
        raise KeyError(f"unknown CLIP preset {preset!r}; known: {sorted(CLIP_PRESETS)}")
    torch.manual_seed(seed)
    model = CLIP(*CLIP_PRESETS[preset])
    convert_weights(model)  # fp16 weights like the released checkpoints
    model = model.float()
    with torch.no_grad():  # every tensor fp16-representable, so a half-precision file round-trips exactly
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point():
                t.copy_(t.half().float())
    return model.eval()


def save_random_clip(path: str | os.PathLike, preset: str = "tiny", seed: int = 0):
    """Save a random-init CLIP state dict (OpenAI key layout, no TorchScript) to ``path``; returns the model."""
    model = build_random_clip(preset, seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, str(path))
    mark_random_init(path, f"CLIP {preset}", seed)
    return model


def _save_hf(model, folder: str | os.PathLike, processor=None, seed: int = 0):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    if processor is not None:
        processor.save_pretrained(str(folder))
    mark_random_init(folder, type(model).__name__, seed)
    return model


def save_random_dino(folder: str | os.PathLike, preset: str = "tiny", seed: int = 0):
    """Save a random-init transformers ``ViTModel`` (``vits16``: the DINO ViT-S/16 architecture) to ``folder``."""
    from transformers import ViTConfig, ViTModel

    from .encoders import DinoEncoder

    if preset == "vits16":
        cfg = DinoEncoder.vits16_config()
    elif preset == "tiny":
        cfg = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        image_size=224, patch_size=16, layer_norm_eps=1e-6)
    else:
        raise KeyError(f"unknown DINO preset {preset!r} (tiny | vits16)")
    torch.manual_seed(seed)
    return _save_hf(ViTModel(cfg, add_pooling_layer=False).eval(), folder, seed=seed)


def save_random_dpt(folder: str | os.PathLike, seed: int = 0, image_size: int = 32):
    """Save a tiny random-init ``DPTForDepthEstimation`` + a ``DPTImageProcessor`` (``image_size`` px) to ``folder``."""
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    cfg = DPTConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                    image_size=image_size, patch_size=8, neck_hidden_sizes=[8, 16, 16, 16], fusion_hidden_size=16,
                    backbone_out_indices=[0, 1, 2, 3])
    torch.manual_seed(seed)
    return _save_hf(DPTForDepthEstimation(cfg).eval(), folder,
                    DPTImageProcessor(size={"height": image_size, "width": image_size}), seed=seed)


def save_random_segformer(folder: str | os.PathLike, num_labels: int = 5, seed: int = 0, image_size: int = 32):
    """Save a tiny random-init ``SegformerForSemanticSegmentation`` + its image processor to ``folder``."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    cfg = SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16],
                          patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 1], mlp_ratios=[2, 2],
                          decoder_hidden_size=16, num_labels=num_labels)
    torch.manual_seed(seed)
    return _save_hf(SegformerForSemanticSegmentation(cfg).eval(), folder,
                    SegformerImageProcessor(size={"height": image_size, "width": image_size}), seed=seed)
