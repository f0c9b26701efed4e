"""Structured configuration: OmegaConf YAML checked against dataclass schemas.

Every config file is merged into a dataclass schema, so an unknown key, a wrong type or a missing required value
fails *before any compute* with a `ConfigError` that names the key. Command-line overrides are OmegaConf dotlists
(`model.prw.rank=64`). Range checks live in each schema's `__post_init__` and name the key too.
"""

from __future__ import annotations

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
                data: Any = None, command_line_keys: Sequence[str] = (), as_object: bool = True) -> T:
    """Load `path` (YAML) and/or `data` (a dict / DictConfig), then dotlist `overrides`, into `schema`.

    Raises ConfigError naming the key and where its value came from: "set on the command line" (a dotlist override,
    or a key in ``command_line_keys``: the ones already merged into ``data`` from the command line), "in FILE", or
    the schema's default. Covers unknown keys, wrong types, missing values and range errors.

    ``as_object=False`` returns the checked ``DictConfig`` instead of the dataclass: keys, types and required values
    are checked, interpolations stay unresolved (for files whose sections are merged into other schemas later, such
    as a curriculum's ``common`` and ``steps``); ``__post_init__`` range checks do not run.
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
        return OmegaConf.to_object(cfg) if as_object else cfg  # to_object runs the __post_init__ range checks
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


__all__ = ["ConfigError", "MISSING", "check", "load_config", "to_yaml"]
