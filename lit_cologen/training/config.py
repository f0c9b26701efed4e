"""Configuration of one training step (one curriculum step) and of a curriculum.

A step YAML has the sections `model`, `data`, `optim`, `loss`, `veteran`, `train` (schemas below; unknown keys,
wrong types and out-of-range values fail before any compute, naming the key). A curriculum YAML has `name`,
`output_dir`, `common` (merged into every step) and `steps` (a list of per-step overrides, each with a `name`).
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lit_cologen.config import ConfigError, check, load_config
from lit_cologen.data.config import DataConfig
from lit_cologen.models.config import CHECKPOINTING, ModelConfig
from lit_cologen.models.presets import get_preset
from lit_cologen.training.losses import TIMESTEP_SCHEMES


@dataclass
class OptimConfig:
    """AdamW on experts + router (fp32 trainable weights), warmup then constant / cosine (D11)."""

    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.01
    eps: float = 1e-8
    warmup_steps: int = 1000
    schedule: str = "constant"  # constant | cosine
    min_lr_ratio: float = 0.0  # cosine floor, as a fraction of lr
    grad_clip: float = 1.0  # 0 disables

    def __post_init__(self) -> None:
        check(math.isfinite(self.lr) and self.lr > 0, "optim.lr", f"must be a finite number > 0, got {self.lr}")
        check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "optim.betas",
              f"need two values in [0, 1), got {self.betas}")
        check(self.weight_decay >= 0, "optim.weight_decay", f"must be >= 0, got {self.weight_decay}")
        check(self.warmup_steps >= 0, "optim.warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        check(self.schedule in ("constant", "cosine"), "optim.schedule", f"must be constant or cosine, got {self.schedule!r}")
        check(0 <= self.min_lr_ratio <= 1, "optim.min_lr_ratio", f"must be in [0, 1], got {self.min_lr_ratio}")
        check(self.grad_clip >= 0, "optim.grad_clip", f"must be >= 0, got {self.grad_clip}")


@dataclass
class LossConfig:
    """Rectified-flow task loss (D10)."""

    timestep_sampling: str = "logit_normal"  # logit_normal | uniform | mode
    shift: bool = True  # FLUX's resolution-dependent time shift
    text_dropout: float = 0.1
    guidance: float = 1.0  # flux-dev guidance embedding value in training

    def __post_init__(self) -> None:
        check(self.timestep_sampling in TIMESTEP_SCHEMES, "loss.timestep_sampling",
              f"must be one of {TIMESTEP_SCHEMES}, got {self.timestep_sampling!r}")
        check(0 <= self.text_dropout <= 1, "loss.text_dropout", f"must be in [0, 1], got {self.text_dropout}")


@dataclass
class VeteranConfig:
    """Veteran gate routing supervision L_vet = alpha * |U_t - rho| (Eq. 8-10, D9)."""

    alpha: float = 0.0
    rho: float = 1.0
    estimator: str = "straight_through"  # straight_through | soft

    def __post_init__(self) -> None:
        check(self.alpha >= 0, "veteran.alpha", f"must be >= 0, got {self.alpha}")
        check(0 <= self.rho <= 1, "veteran.rho", f"must be in [0, 1], got {self.rho}")
        check(self.estimator in ("straight_through", "soft"), "veteran.estimator",
              f"must be straight_through or soft, got {self.estimator!r}")


@dataclass
class EMAConfig:
    """EMA of the trainable adapters (``train.ema``; lit_cologen/training/ema.py): updated after optimizer step s when
    s >= start_step and (s - start_step) % every == 0, ema <- decay * ema + (1 - decay) * w (the first update copies)."""

    decay: float = 0.999
    start_step: int = 0
    every: int = 1

    def __post_init__(self) -> None:
        check(0 < self.decay < 1, "train.ema.decay", f"must be in (0, 1), got {self.decay}")
        check(self.start_step >= 0, "train.ema.start_step", f"must be >= 0, got {self.start_step}")
        check(self.every >= 1, "train.ema.every", f"must be >= 1, got {self.every}")


#: the experiment loggers ``train.loggers`` may name (lit_cologen/training/loggers.py builds them)
LOGGERS = ("tensorboard", "csv", "wandb", "mlflow")
#: Weights & Biases modes: offline (the default: files under <output_dir>/wandb/, no network), online, disabled
WANDB_MODES = ("offline", "online", "disabled")


@dataclass
class WandbConfig:
    """``train.wandb``: the Weights & Biases run, used when ``train.loggers`` names wandb. ``mode`` is offline unless
    set to online explicitly (``wandb sync <output_dir>/wandb/offline-run-*`` uploads an offline run later)."""

    project: str = "lit-cologen"
    entity: Optional[str] = None  # a W&B team / user (online mode); None: the account's default
    mode: str = "offline"  # offline | online | disabled

    def __post_init__(self) -> None:
        check(self.mode in WANDB_MODES, "train.wandb.mode", f"must be one of {list(WANDB_MODES)}, got {self.mode!r}")
        check(bool(self.project), "train.wandb.project", "must be a non-empty name")


@dataclass
class MLflowConfig:
    """``train.mlflow``: the MLflow run, used when ``train.loggers`` names mlflow. ``tracking_uri`` None: MLflow's
    local file store ``file:<output_dir>/mlruns`` (no server, no network)."""

    tracking_uri: Optional[str] = None
    experiment: str = "lit-cologen"

    def __post_init__(self) -> None:
        check(bool(self.experiment), "train.mlflow.experiment", "must be a non-empty name")


@dataclass
class TrainConfig:
    """Loop, batch arithmetic, hardware and bookkeeping."""

    max_steps: int = 1000
    global_batch: int = 256  # = data.batch_size (per device) x devices x num_nodes x accumulate
    accumulate: Optional[int] = None  # None: derived as global / (data.batch_size x devices x nodes)
    devices: int = 1
    num_nodes: int = 1
    accelerator: str = "auto"
    strategy: str = "auto"  # auto | ddp | fsdp
    precision: str = "bf16-mixed"  # bf16-mixed | 32-true | 16-mixed
    base_dtype: str = "auto"  # dtype of the frozen base: auto (bf16 with bf16-mixed, else fp32) | bf16 | fp32
    seed: int = 0
    use_source: bool = True  # False: text-to-image (base pre-training of the tiny/small presets)
    train_base: bool = False  # also train the base transformer (only for the tiny/small base pre-training)
    # base pre-training only: the share of samples whose source tokens are their own clean target (aligned
    # layout), so the stand-in base learns to read in-context image tokens; the rest stay text-to-image
    self_source: float = 0.0
    log_every: int = 10
    val_every: int = 0  # 0: no validation
    val_batches: int = 4
    checkpoint_every: int = 500
    sample_every: int = 0  # 0: no sample grids
    sample_steps: int = 8
    text_cache_dir: Optional[str] = None  # on-disk text-embedding cache (T5 need not stay resident)
    # activation memory: full (every block recomputed in backward) | selective (a `checkpoint_ratio` share of the
    # blocks, spread evenly) | none | auto (full for the FLUX presets on a GPU, none for the built-in presets)
    checkpointing: str = "auto"
    checkpoint_ratio: float = 0.5
    compile: bool = False  # regional torch.compile of the double / single block forwards
    compile_backend: str = "inductor"  # torch.compile backend (inductor; aot_eager / eager to debug a graph)
    fp8: bool = False  # FP8 matmuls in the frozen base's linears (torchao float8; GPUs with FP8 only)
    ema: Optional[EMAConfig] = None  # EMA of the adapters, exported as final/adapters_ema.safetensors; null: off
    # experiment loggers (any of LOGGERS, each at most once; [] logs nothing): tensorboard -> <output_dir>/tb/,
    # csv -> <output_dir>/csv/version_N/, wandb -> <output_dir>/wandb/ (offline), mlflow -> train.mlflow.tracking_uri
    loggers: list[str] = field(default_factory=lambda: ["tensorboard"])
    wandb: WandbConfig = field(default_factory=WandbConfig)
    mlflow: MLflowConfig = field(default_factory=MLflowConfig)

    def __post_init__(self) -> None:
        for key in ("max_steps", "global_batch", "devices", "num_nodes", "log_every",
                    "checkpoint_every", "sample_steps", "val_batches"):
            check(getattr(self, key) > 0, f"train.{key}", f"must be > 0, got {getattr(self, key)}")
        for key in ("val_every", "sample_every"):
            check(getattr(self, key) >= 0, f"train.{key}", f"must be >= 0, got {getattr(self, key)}")
        check(self.accumulate is None or self.accumulate > 0, "train.accumulate", f"must be > 0, got {self.accumulate}")
        check(self.strategy in ("auto", "ddp", "fsdp", "ddp_spawn"), "train.strategy",
              f"must be auto/ddp/fsdp/ddp_spawn, got {self.strategy!r}")
        check(self.precision in ("bf16-mixed", "32-true", "16-mixed", "32"), "train.precision",
              f"must be bf16-mixed, 16-mixed or 32-true, got {self.precision!r}")
        check(self.base_dtype in ("auto", "bf16", "fp32"), "train.base_dtype", f"must be auto/bf16/fp32, got {self.base_dtype!r}")
        check(self.checkpointing in CHECKPOINTING, "train.checkpointing",
              f"must be one of {list(CHECKPOINTING)}, got {self.checkpointing!r}")
        check(0 < self.checkpoint_ratio <= 1, "train.checkpoint_ratio", f"must be in (0, 1], got {self.checkpoint_ratio}")
        unknown = [name for name in self.loggers if name not in LOGGERS]
        check(not unknown, "train.loggers", f"unknown logger(s) {unknown}: choose from {list(LOGGERS)}")
        repeated = sorted({name for name in self.loggers if list(self.loggers).count(name) > 1})
        check(not repeated, "train.loggers", f"names {repeated} more than once: list each logger once")
        for name, package in (("wandb", "wandb"), ("mlflow", "mlflow")):
            check(name not in self.loggers or importlib.util.find_spec(package) is not None, "train.loggers",
                  f"names {name}, and the {package} package is not installed (pip install -r requirements.txt)")

    def resolve_accumulation(self, per_device_batch: int) -> None:
        """Derive / check `accumulate` so that global = per-device x devices x nodes x accumulate."""
        world = per_device_batch * self.devices * self.num_nodes
        if self.accumulate is None:
            check(self.global_batch % world == 0, "train.global_batch",
                  f"{self.global_batch} is not a multiple of data.batch_size x devices x num_nodes = {world}")
            self.accumulate = self.global_batch // world
        check(world * self.accumulate == self.global_batch, "train.global_batch",
              f"{self.global_batch} != data.batch_size {per_device_batch} x devices {self.devices} x "
              f"num_nodes {self.num_nodes} x accumulate {self.accumulate}")


@dataclass
class StepConfig:
    """One training step of the curriculum (or any single run)."""

    name: str = "step"
    output_dir: str = "runs/step"
    init_from: Optional[str] = None  # a previous step's `final/` folder (adapters.safetensors [+ base/])
    add_expert: bool = False  # add one expert after loading `init_from` (the curriculum sets it); its LoRA rank /
    # alpha: model.prw.new_expert_rank / new_expert_alpha (default: model.prw.rank / its alpha)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    veteran: VeteranConfig = field(default_factory=VeteranConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        self.train.resolve_accumulation(self.data.batch_size)
        old = self.model.gradient_checkpointing
        if old is not None:  # the deprecated spelling: true = full, false = none
            check(self.train.checkpointing in ("auto", "full" if old else "none"), "model.gradient_checkpointing",
                  f"is the old spelling of train.checkpointing and says {old}, but train.checkpointing is "
                  f"{self.train.checkpointing!r}: set only train.checkpointing")
            self.train.checkpointing = "full" if old else "none"
            self.model.gradient_checkpointing = None
        check(not (self.train.sample_every and self.data.source == "shards" and not self.data.val_shards),
              "train.sample_every", "sample grids are drawn from the validation shards, and data.val_shards is empty: "
              "set data.val_shards=[...], or train.sample_every=0")
        check(not self.train.train_base or get_preset(self.model.preset).builtin_components, "train.train_base",
              f"base training is for the tiny/small presets only (FLUX.1 is pretrained), preset is {self.model.preset!r}")
        check(self.train.ema is None or self.model.prw.blocks != "none", "train.ema",
              "averages the PRW adapters, and model.prw.blocks=none has none: set train.ema=null")
        check(0.0 <= self.train.self_source <= 1.0, "train.self_source", f"is a share in [0, 1], got {self.train.self_source}")
        check(self.train.self_source == 0 or (self.train.train_base and not self.train.use_source), "train.self_source",
              "is for the base pre-training (train.train_base=true, train.use_source=false): the step trains on "
              "the tasks' own sources otherwise; set train.self_source=0")
        for key, on in (("model.base_quantization", self.model.base_quantization != "none"), ("train.fp8", self.train.fp8)):
            check(not (on and self.train.train_base), key, "applies to a frozen base, and train.train_base trains the "
                  "base: set one of them")
        prw = self.model.prw
        for key in ("new_expert_rank", "new_expert_alpha"):
            check(getattr(prw, key) is None or (self.add_expert and self.init_from is not None), f"model.prw.{key}",
                  f"sets the rank / alpha of the expert a step adds to the previous step's experts, but step "
                  f"'{self.name}' adds none (init_from={self.init_from!r}, add_expert={self.add_expert}); set it on a "
                  f"later curriculum step, or set model.prw.rank / lora_alpha for the first one")


def load_step_config(path: str | Path | None, overrides: Sequence[str] = ()) -> StepConfig:
    return load_config(StepConfig, path, overrides)


@dataclass
class CurriculumFile:
    """The top level of a curriculum YAML (checked by ``load_config``): ``common`` is merged under every step, each
    of ``steps`` (a partial StepConfig with a ``name``) over it; both are checked as StepConfigs per step."""

    name: Optional[str] = None
    output_dir: Optional[str] = None
    common: Any = None
    steps: Any = None


@dataclass
class CurriculumSpec:
    name: str
    output_dir: str
    steps: list[dict[str, Any]]
    common: dict[str, Any]


def load_curriculum(path: str | Path, overrides: Sequence[str] = (), step_scale: float = 1.0,
                    label: str | None = None) -> tuple[CurriculumSpec, list[StepConfig]]:
    """Parse a curriculum YAML into validated StepConfigs (all steps checked before any compute).

    Step k gets `output_dir/<k>_<name>`, `init_from` = the previous step's `final/` folder, `add_expert` for every
    step after the first with experts, and overrides (dotlist) apply to every step, over `common` and the step's
    own values (e.g. `train.max_steps=10`). `step_scale` multiplies every step's `train.max_steps` (at least 1).
    `label` names the curriculum in error messages (default: its path).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"curriculum file not found: {path}")
    raw = load_config(CurriculumFile, path, as_object=False)  # unknown top-level keys: the same check as a step's
    if not raw.steps:
        raise ConfigError(f"config key 'steps' in {path}: a curriculum needs at least one step")
    name = str(raw.name if raw.name is not None else path.stem)
    output_dir = str(raw.output_dir if raw.output_dir is not None else f"runs/{name}")
    common = raw.common if raw.common is not None else OmegaConf.create({})
    top_overrides = [o for o in overrides if o.split("=", 1)[0] in ("output_dir", "name")]
    for o in top_overrides:
        k, v = o.split("=", 1)
        if k == "output_dir":
            output_dir = v
        else:
            name = v
    step_overrides = [o for o in overrides if o not in top_overrides]
    try:  # command-line overrides win over both `common` and each step's own values
        cli = OmegaConf.from_dotlist(step_overrides) if step_overrides else OmegaConf.create({})
    except OmegaConfBaseException as err:
        raise ConfigError(f"curriculum overrides: {err}") from None
    steps: list[StepConfig] = []
    previous_final: Optional[str] = None  # the last expert step's final/ (adapters to load)
    base_final: Optional[str] = None  # a base pre-training step's final/ (tiny/small presets)
    experts = 0
    for k, step in enumerate(raw.steps):
        if "name" not in step:
            raise ConfigError(f"config key 'steps[{k}].name' in {path}: every step needs a name")
        merged = OmegaConf.merge(common, step, cli)
        step_dir = str(Path(output_dir) / f"{k}_{step.name}")
        is_base = bool(OmegaConf.select(merged, "train.train_base", default=False))
        fields: dict[str, Any] = {"output_dir": step_dir, "name": str(step.name)}
        if base_final is not None:
            fields["model"] = {"pretrained_path": base_final}
        if is_base:
            fields.update({"init_from": None, "add_expert": False})
            fields.setdefault("model", {})["prw"] = {"blocks": "none", "num_experts": 1}
        else:
            experts += 1
            fields.update({"init_from": previous_final, "add_expert": previous_final is not None})
            fields.setdefault("model", {})["prw"] = {"num_experts": experts}
        if step_scale != 1.0:
            steps_k = OmegaConf.select(merged, "train.max_steps", default=TrainConfig.max_steps)
            fields.setdefault("train", {})["max_steps"] = max(1, int(round(int(steps_k) * step_scale)))
        merged = OmegaConf.merge(merged, fields)
        try:
            cfg = load_config(StepConfig, data=merged, command_line_keys=[o.split("=", 1)[0] for o in step_overrides])
        except ConfigError as err:
            raise ConfigError(f"{err} ({label or f'curriculum {path}'}, step {k} '{step.name}')") from None
        steps.append(cfg)
        if is_base:
            base_final = str(Path(step_dir) / "final")
        else:
            previous_final = str(Path(step_dir) / "final")
    return CurriculumSpec(name, output_dir, [dict(s) for s in raw.steps], dict(common)), steps
