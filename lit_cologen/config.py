"""Structured configuration: OmegaConf YAML checked against dataclass schemas.

Every config file is merged into a dataclass schema, so an unknown key, a wrong type or a missing required value
fails *before any compute* with a `ConfigError` that names the key. Command-line overrides are OmegaConf dotlists
(`model.prw.rank=64`). Range checks live in each schema's `__post_init__` and name the key too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, TypeVar

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lit_cologen.errors import UserError

T = TypeVar("T")


class ConfigError(UserError, ValueError):
    """A configuration problem; the message names the offending key (and file, when there is one)."""


def check(condition: bool, key: str, message: str) -> None:
    """Raise ConfigError for `key` unless `condition` holds."""
    if not condition:
        raise ConfigError(f"config key '{key}': {message}")


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
    gradient_checkpointing: bool = False
    prw: PRWConfig = field(default_factory=PRWConfig)

    def __post_init__(self) -> None:
        from lit_cologen.models.presets import PRESETS

        check(self.preset in PRESETS, "model.preset", f"unknown preset {self.preset!r} (known: {sorted(PRESETS)})")
        check(self.source_timestep == "shared", "model.source_timestep", f"only 'shared' is implemented, got {self.source_timestep!r}")


def _dotlist_keys(overrides: Sequence[str]) -> set[str]:
    """The dotted keys a dotlist sets (``a.b=1`` -> ``a.b``; ``+a.b=1`` / ``~a.b`` forms included)."""
    return {o.split("=", 1)[0].lstrip("+~") for o in overrides}


def _flat_keys(node: Any, prefix: str = "") -> set[str]:
    if not isinstance(node, dict):
        return {prefix[:-1]} if prefix else set()
    out: set[str] = set()
    for k, v in node.items():
        out |= _flat_keys(v, f"{prefix}{k}.") or {f"{prefix}{k}"}
    return out


def _set_by(key: str, keys: set[str]) -> bool:
    """Whether ``key`` (or a parent / child of it) is among ``keys``."""
    return any(key == k or key.startswith(k + ".") or k.startswith(key + ".") for k in keys)


def load_config(schema: type[T], path: str | Path | None = None, overrides: Sequence[str] = (), section: str | None = None,
                data: Any = None, command_line_keys: Sequence[str] = ()) -> T:
    """Load `path` (YAML) and/or `data` (a dict / DictConfig), then dotlist `overrides`, into `schema`.

    Raises ConfigError naming the key and where its value came from: "set on the command line" (a dotlist override,
    or a key in ``command_line_keys``: the ones already merged into ``data`` from the command line), "in FILE", or
    the schema's default. Covers unknown keys, wrong types, missing values and range errors.
    """
    cli_keys = _dotlist_keys(overrides) | set(command_line_keys)
    file_keys: set[str] = set()

    def origin(key: str | None) -> str:
        if key and _set_by(key, cli_keys):
            return " (set on the command line)"
        if key and path is not None and _set_by(key, file_keys):
            return f" in {path}"
        return f" (from {path} and its defaults)" if path is not None and not key else ""

    stage = "defaults"
    try:
        cfg = OmegaConf.structured(schema)
        if path is not None:
            path = Path(path)
            if not path.is_file():
                raise ConfigError(f"config file not found: {path}")
            stage = "file"
            loaded = OmegaConf.load(path)
            if section is not None:
                loaded = loaded.get(section, OmegaConf.create({}))
            file_keys = _flat_keys(OmegaConf.to_container(loaded, resolve=False))
            cfg = OmegaConf.merge(cfg, loaded)
        if data is not None:
            stage = "data"
            cfg = OmegaConf.merge(cfg, data)
        if overrides:
            stage = "command line"
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
        stage = "checks"
        missing = sorted(OmegaConf.missing_keys(cfg))
        if missing:
            raise ConfigError(f"config key '{missing[0]}'{origin(missing[0])}: required value is missing")
        return OmegaConf.to_object(cfg)  # runs __post_init__ range checks
    except ConfigError as err:
        text = str(err)
        key = text.split("'", 2)[1] if text.startswith("config key '") else None
        where = origin(key)
        if where and where not in text:
            raise ConfigError(text.replace(f"config key '{key}'", f"config key '{key}'{where}", 1) if key
                              else f"{text}{where}") from None
        raise
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        msg = str(err).splitlines()[0]
        where = " (set on the command line)" if stage == "command line" else f" in {path}" if stage == "file" else origin(key)
        raise ConfigError(f"config key '{key}'{where}: {msg}") from None


def to_yaml(obj: Any) -> str:
    """Render a config dataclass as YAML (for logging and run folders)."""
    return OmegaConf.to_yaml(OmegaConf.structured(obj))


__all__ = ["ConfigError", "ModelConfig", "PRWConfig", "MISSING", "check", "load_config", "to_yaml"]
