"""Model presets: the one record of every preset's transformer shape and component settings.

``tiny``  (tests and the CPU demo, 0.49 M params) and ``small`` (a few M params) use built-in components that need no
downloaded weights (a lossless pixel-space autoencoder and a small frozen text encoder). ``flux-dev`` and
``flux-schnell`` are the real FLUX.1 shapes; their weights (transformer, VAE, T5, CLIP) come from a local folder.

Everything that builds a part of a preset (``models/factory.py``, the pipeline, training, encoding, the speed
scripts) reads its numbers here: codec factor and channels, the text length (T5 ``max_sequence_length`` for FLUX:
512 for dev, 256 for schnell, as in the official pipelines), the built-in text encoder's size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Preset:
    """One preset. ``transformer`` holds ``FluxTransformer2DModel`` keyword arguments.

    Attributes:
        builtin_components: True: PixelShuffleCodec + BuiltinTextEncoder; False: FLUX VAE / CLIP / T5 from a folder.
        codec_factor: spatial down-sampling f of the latent codec (before FLUX's 2 x 2 packing).
        codec_channels: C, the codec's latent channels; a packed token has 4 C = ``transformer["in_channels"]``.
        resolution: default training / sampling resolution (pixels).
        text_max_length: L, tokens of the text conditioner's sequence embedding.
        builtin_text: BuiltinTextEncoder settings (width / layers / heads) of a built-in preset; empty for FLUX.
        sampling_guidance: the default embedded guidance at sampling (models with a guidance embedding): FLUX.1-dev's
            distilled 3.5; the tiny preset only ever sees the training value (``loss.guidance``, 1.0), and another
            value is out of distribution for it (measured: edit preservation 0.11 at 3.5 vs 0.25 at 1.0).
    """

    name: str
    transformer: dict[str, Any]
    builtin_components: bool
    codec_factor: int = 8
    codec_channels: int = 16
    resolution: int = 1024
    text_max_length: int = 512
    builtin_text: dict[str, int] = field(default_factory=dict)
    sampling_guidance: float = 3.5

    def __post_init__(self) -> None:
        if self.transformer["in_channels"] != 4 * self.codec_channels:
            raise ValueError(f"preset {self.name!r}: in_channels {self.transformer['in_channels']} != 4 x "
                             f"codec_channels {self.codec_channels} (a token packs 2 x 2 latent pixels)")
        if self.builtin_components != bool(self.builtin_text):
            raise ValueError(f"preset {self.name!r}: builtin_text is set exactly for the built-in presets")

    @property
    def guidance_embeds(self) -> bool:
        """Whether the transformer has FLUX.1-dev's guidance embedding (embedded guidance at sampling)."""
        return bool(self.transformer["guidance_embeds"])

    @property
    def pixels_per_token(self) -> int:
        return self.codec_factor * 2


def _flux(guidance: bool) -> dict[str, Any]:
    """FLUX.1's 12 B MMDiT (19 double + 38 single blocks, width 3072); dev has the guidance embedding."""
    return dict(
        patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
        num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=guidance,
        axes_dims_rope=(16, 56, 56),
    )


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny",
        transformer=dict(
            # hidden width 2 x 32 = 64 >= the 48 channels of a token: with 2 x 16 = 32 the model could not carry a
            # source token through exactly, and copy-exact tasks (grounding, edit preservation) did not learn at all
            # (ground loss flat at 0.55 over 1200 expert steps; with 64: 0.22 -> 0.16 in 300, ~1.3x the step time)
            patch_size=1, in_channels=48, num_layers=2, num_single_layers=2, attention_head_dim=32,
            num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=True,
            axes_dims_rope=(8, 12, 12),
        ),
        builtin_components=True, codec_factor=2, codec_channels=12, resolution=32, text_max_length=48,
        builtin_text={"width": 64, "layers": 2, "heads": 4}, sampling_guidance=1.0,
    ),
    "small": Preset(
        name="small",
        transformer=dict(
            patch_size=1, in_channels=48, num_layers=3, num_single_layers=3, attention_head_dim=32,
            num_attention_heads=4, joint_attention_dim=64, pooled_projection_dim=64, guidance_embeds=False,
            axes_dims_rope=(8, 12, 12),
        ),
        builtin_components=True, codec_factor=2, codec_channels=12, resolution=64, text_max_length=64,
        builtin_text={"width": 128, "layers": 3, "heads": 4},
    ),
    "flux-dev": Preset(name="flux-dev", transformer=_flux(True), builtin_components=False, text_max_length=512),
    "flux-schnell": Preset(name="flux-schnell", transformer=_flux(False), builtin_components=False, text_max_length=256),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; ``flux_dev`` / ``FLUX-DEV`` spell ``flux-dev`` too.

    Raises:
        KeyError: an unknown name (the message lists the known ones).
    """
    try:
        return PRESETS[name]
    except KeyError:
        normal = str(name).lower().replace("_", "-")
        if normal in PRESETS:
            return PRESETS[normal]
        raise KeyError(f"unknown model preset {name!r}; known presets: {sorted(PRESETS)}") from None
