"""Pre-encoded shards: VAE latents instead of images, so the VAE and the text encoders need not be resident.

`cologen data encode STEP.yaml --out DIR` (the training package's ``encode`` module) turns every image shard of a step's data
into an encoded shard of the same name. An encoded sample keeps the small text members of the original and replaces
the images with one safetensors member (safetensors holds raw tensors only: nothing is unpickled)::

    KEY.task.txt / KEY.prompt.txt / KEY.cond_type.txt / KEY.meta.json   as in the image shard (data/schema.py)
    KEY.latents.safetensors   tensors ``target`` (C, h, w) and ``source`` (C, h, w): the codec's latents of the
                              resized + centre-cropped images (h = w = resolution / codec factor)

``DIR/encoded.json`` (the manifest) records what produced them: preset, weights folder, resolution, latent shape and
dtype, the text encoder's fingerprint and the text-embedding cache folder (``DIR/text_cache``) that holds the
embedding of every prompt of the shards (formatted as training sees it) and of the empty prompt (text dropout).
Training reads them with ``data.encoded=true`` and never loads the VAE or the text encoders unless a sample grid
needs pixels or a prompt is missing from the cache.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch

from lit_cologen.utils.atomic import atomic_write_json

MANIFEST_NAME = "encoded.json"
MANIFEST_FORMAT = "lit-cologen-encoded/1"
LATENTS_MEMBER = "latents.safetensors"
TEXT_CACHE_DIR = "text_cache"


def save_latents(target: torch.Tensor, source: torch.Tensor) -> bytes:
    """(C, h, w) target and source latents -> the bytes of one ``latents.safetensors`` member."""
    from safetensors.torch import save

    return save({"target": target.detach().cpu().contiguous(), "source": source.detach().cpu().contiguous()})


def load_latents(data: bytes) -> dict[str, torch.Tensor]:
    """The bytes of a ``latents.safetensors`` member -> {"target": (C, h, w), "source": (C, h, w)}.

    Raises ValueError (with what is wrong) for anything else: wrong tensors, wrong ranks, unreadable bytes.
    """
    from safetensors.torch import load

    try:
        tensors = load(data)
    except Exception as exn:  # noqa: BLE001 - safetensors raises several types for corrupt bytes
        raise ValueError(f"latents.safetensors does not load: {exn}") from None
    if set(tensors) != {"target", "source"}:
        raise ValueError(f"latents.safetensors must hold exactly 'target' and 'source', got {sorted(tensors)}")
    for name, t in tensors.items():
        if t.ndim != 3 or not t.is_floating_point():
            raise ValueError(f"latents.safetensors '{name}' must be a float (C, h, w) tensor, got {t.dtype} {tuple(t.shape)}")
        if not torch.isfinite(t).all():
            raise ValueError(f"latents.safetensors '{name}' holds non-finite values")
    return tensors


def write_manifest(out_dir: str | Path, manifest: Mapping[str, Any]) -> Path:
    """Write ``out_dir/encoded.json`` atomically."""
    path = Path(out_dir) / MANIFEST_NAME
    atomic_write_json(path, {"format": MANIFEST_FORMAT, **manifest}, indent=1, sort_keys=True, newline=True)
    return path


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """Load ``folder/encoded.json``; FileNotFoundError / ValueError naming the file when it is missing or foreign."""
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no encoded-shard manifest (write one with `cologen data encode`)")
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{path}: not a lit-cologen encoded-shard manifest (format {MANIFEST_FORMAT!r})")
    return data


def manifest_folder(shard_specs: list[str]) -> Path | None:
    """The local folder of the first shard spec that holds an ``encoded.json`` (specs as in ``data.train_shards``:
    folders, globs, brace patterns); None for remote-only specs."""
    for spec in shard_specs:
        if "://" in spec or spec.startswith("pipe:"):
            continue
        path = Path(spec)
        candidates = [path] if path.is_dir() else [path.parent]
        for c in candidates:
            if (c / MANIFEST_NAME).is_file():
                return c
    return None
