"""The adapter file: ``adapters.safetensors``, the trained PRW experts + routers (never the frozen base).

Layout: safetensors tensors (the adapter state dict, keys as in ``CoLoGenTransformer.adapter_state_dict``) and one
metadata entry ``lit_cologen``, a JSON object::

    {"format": "lit-cologen-adapters/1", "num_experts": N,
     "experts": [{"rank": r_k, "lora_alpha": a_k}, ...],            # per expert (mixed ranks)
     "prw": {"rank", "lora_alpha", "routing", "blocks", "router_noise"},
     "base": {"num_layers", "num_single_layers", "attention_head_dim", "num_attention_heads",
              "in_channels", "joint_attention_dim"}}

This module is the one place that writes the file and checks its format; the transformer checks the shapes, the
pipeline reads the metadata to build a matching model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from lit_cologen.utils.atomic import atomic_path

ADAPTER_FILE = "adapters.safetensors"
#: the EMA of the same adapters (``train.ema``), written beside ADAPTER_FILE in a run's final/ folder
EMA_ADAPTER_FILE = "adapters_ema.safetensors"
ADAPTER_FORMAT = "lit-cologen-adapters/1"
METADATA_KEY = "lit_cologen"


def adapter_file(path: str | os.PathLike, use_ema: bool = False) -> Path:
    """``path`` itself (a file), or for a folder (e.g. a run's ``final/``) its ``adapters.safetensors``, or with
    ``use_ema`` its ``adapters_ema.safetensors`` when the folder has one.

    Raises:
        FileNotFoundError: no adapter file there.
    """
    p = Path(path)
    if p.is_dir():
        p = p / (EMA_ADAPTER_FILE if use_ema and (p / EMA_ADAPTER_FILE).is_file() else ADAPTER_FILE)
    if not p.is_file():
        raise FileNotFoundError(f"adapter file not found: {p} (expected a folder with {ADAPTER_FILE} or the file)")
    return p


def read_adapter_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON metadata of an adapter file (a file, or a folder holding one), its format checked.

    Raises:
        FileNotFoundError: no adapter file there.
        ValueError: unreadable, or not a lit-cologen adapter file.
    """
    from safetensors import safe_open

    p = adapter_file(path)
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get(METADATA_KEY, "{}"))
    except Exception as err:  # noqa: BLE001 - re-raised naming the file
        raise ValueError(f"{p} is not a readable safetensors adapter file: {err}") from err
    if meta.get("format") != ADAPTER_FORMAT:
        raise ValueError(f"{p}: not a lit-cologen adapter file (metadata format {meta.get('format')!r})")
    return meta


def write_adapters(directory: str | os.PathLike, tensors: Mapping[str, Any], metadata: Mapping[str, Any],
                   file_name: str = ADAPTER_FILE) -> Path:
    """Write ``directory/file_name`` atomically (CPU, contiguous tensors; ``metadata`` gets the format tag); returns
    the file path."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / file_name
    meta = {"format": ADAPTER_FORMAT, **{k: v for k, v in metadata.items() if k != "format"}}
    cpu = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(cpu, str(tmp), metadata={METADATA_KEY: json.dumps(meta)})
    return path
