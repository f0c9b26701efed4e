"""The model's config schemas: which preset to build (``ModelConfig``) and its PRW adapters (``PRWConfig``).

Loaded from YAML through :func:`lit_cologen.config.load_config` as the ``model:`` section of a step config; range
checks name the config key (``model.prw.rank``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lit_cologen.config import check
from lit_cologen.models.presets import PRESETS

#: weight-only quantization of the frozen base (``model.base_quantization``)
BASE_QUANTIZATIONS = ("none", "int8", "nf4")
#: activation-memory policies (``train.checkpointing``); see ``CoLoGenTransformer.set_checkpointing``
CHECKPOINTING = ("auto", "full", "selective", "none")


@dataclass
class PRWConfig:
    """Progressive Representation Weaving: LoRA experts on the source tokens' K/V projections, one router a block."""

    num_experts: int = 1
    rank: int = 128
    lora_alpha: float | None = None  # None -> 2 * rank (the paper's Fig. 4b convention)
    routing: str = "sample"  # "sample" (one expert per sample per block, D8) or "token"
    blocks: str = "all"  # "all", "double", "single" (D6) or "none" (plain in-context model, no source adapter)
    router_noise: bool = True  # Eq. 2 noise term, training only
    warm_start: bool = False  # a new expert copies the previous one instead of starting at zero (D7 option)
    # the expert a curriculum step adds (after loading the previous step's experts) may have its own LoRA rank /
    # alpha (Fig. 4b: the editing expert's rank); None: `rank`, and alpha = 2 x new_expert_rank if that is set,
    # else `lora_alpha`'s value. Only for a step that adds an expert (checked by the step config).
    new_expert_rank: int | None = None
    new_expert_alpha: float | None = None

    def __post_init__(self) -> None:
        check(self.num_experts >= 1, "model.prw.num_experts", f"must be >= 1, got {self.num_experts}")
        check(self.rank > 0, "model.prw.rank", f"must be > 0, got {self.rank}")
        check(self.lora_alpha is None or self.lora_alpha > 0, "model.prw.lora_alpha", f"must be > 0, got {self.lora_alpha}")
        check(self.routing in ("sample", "token"), "model.prw.routing", f"must be 'sample' or 'token', got {self.routing!r}")
        check(self.blocks in ("all", "double", "single", "none"), "model.prw.blocks",
              f"must be all/double/single/none, got {self.blocks!r}")
        check(self.new_expert_rank is None or self.new_expert_rank > 0, "model.prw.new_expert_rank",
              f"must be > 0 (or null: model.prw.rank), got {self.new_expert_rank}")
        check(self.new_expert_alpha is None or self.new_expert_alpha > 0, "model.prw.new_expert_alpha",
              f"must be > 0 (or null: 2 x the new expert's rank), got {self.new_expert_alpha}")

    @property
    def alpha(self) -> float:
        return float(self.lora_alpha if self.lora_alpha is not None else 2 * self.rank)

    @property
    def new_rank(self) -> int:
        """LoRA rank of an expert added by a curriculum step."""
        return int(self.new_expert_rank if self.new_expert_rank is not None else self.rank)

    @property
    def new_alpha(self) -> float:
        """LoRA alpha of an expert added by a curriculum step."""
        if self.new_expert_alpha is not None:
            return float(self.new_expert_alpha)
        return float(2 * self.new_expert_rank) if self.new_expert_rank is not None else self.alpha


@dataclass
class ModelConfig:
    """Which transformer to build (a preset, optionally loaded from a local folder) and its PRW adapters."""

    preset: str = "tiny"  # tiny | small | flux-dev | flux-schnell
    pretrained_path: str | None = None  # local folder (FLUX layout: transformer/, vae/, text_encoder*/...) or HF id in cache
    source_timestep: str = "shared"  # D3: the source branch is modulated with the t=0 embedding
    # deprecated spelling of train.checkpointing (true = full, false = none); kept so older configs still load
    gradient_checkpointing: bool | None = None
    # the frozen base's linear weights: none (the base dtype) | int8 (weight-only) | nf4 (4-bit NormalFloat); the
    # 24 GB mode, for training (gradients flow to the source tokens through the quantized base) and sampling
    base_quantization: str = "none"
    prw: PRWConfig = field(default_factory=PRWConfig)

    def __post_init__(self) -> None:
        check(self.preset in PRESETS, "model.preset", f"unknown preset {self.preset!r} (known: {sorted(PRESETS)})")
        check(self.source_timestep == "shared", "model.source_timestep",
              f"only 'shared' is implemented, got {self.source_timestep!r}")
        check(self.base_quantization in BASE_QUANTIZATIONS, "model.base_quantization",
              f"must be one of {list(BASE_QUANTIZATIONS)}, got {self.base_quantization!r}")
