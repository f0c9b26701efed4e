"""Local weight files: existence checks with clear errors, safe loading, and sha256 hashes for results files.

Nothing here downloads. Every backbone is loaded from a local file or folder; a missing one raises
:class:`MissingWeightsError` naming the backbone, the path, and where such weights usually come from.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path
from typing import Iterable

import torch

from lit_cologen.errors import UserError

__all__ = [
    "MissingWeightsError",
    "require_file",
    "require_folder",
    "sha256_file",
    "hash_folder",
    "load_state_dict",
]

# Files in a Hugging Face model folder that determine its outputs (hashed into results files).
_FOLDER_HASHED_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".json")


class MissingWeightsError(UserError, FileNotFoundError):
    """A backbone's local weights file or folder is missing; the message names it and how to get it."""


def require_file(path: str | os.PathLike | None, what: str, hint: str = "") -> Path:
    """Return ``path`` as a Path if it is an existing file, else raise MissingWeightsError naming ``what``."""
    if path is None or str(path) == "":
        raise MissingWeightsError(f"{what}: no weights file configured. {hint}".strip())
    p = Path(path).expanduser()
    if not p.is_file():
        raise MissingWeightsError(f"{what}: weights file not found: {p}. {hint}".strip())
    return p


def require_folder(
    path: str | os.PathLike | None, what: str, required: Iterable[str] = ("config.json",), hint: str = ""
) -> Path:
    """Return ``path`` if it is a folder holding every file in ``required`` and some weights file, else raise."""
    if path is None or str(path) == "":
        raise MissingWeightsError(f"{what}: no weights folder configured. {hint}".strip())
    p = Path(path).expanduser()
    if not p.is_dir():
        raise MissingWeightsError(f"{what}: weights folder not found: {p}. {hint}".strip())
    for name in required:
        if not (p / name).is_file():
            raise MissingWeightsError(f"{what}: {p} has no {name} (is it a Hugging Face model folder?). {hint}".strip())
    if not any(f.suffix in (".safetensors", ".bin") for f in p.iterdir()):
        raise MissingWeightsError(f"{what}: {p} holds no *.safetensors or *.bin weights file. {hint}".strip())
    return p


_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """sha256 hex digest of a file (cached per process by path, size and mtime)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASH_CACHE:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            while block := f.read(chunk_size):
                h.update(block)
        _HASH_CACHE[key] = h.hexdigest()
    return _HASH_CACHE[key]


def hash_folder(folder: str | os.PathLike) -> dict[str, str]:
    """sha256 of every weights / config file directly inside a model folder: {file name: hex digest}."""
    p = Path(folder)
    return {
        f.name: sha256_file(f)
        for f in sorted(p.iterdir())
        if f.is_file() and f.suffix in _FOLDER_HASHED_SUFFIXES
    }


def _is_torchscript_archive(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.split("/", 1)[-1].startswith("code/") for n in z.namelist())


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a state dict from a local file without unpickling arbitrary objects.

    * ``*.safetensors``: safetensors;
    * a TorchScript archive (the official OpenAI CLIP ``ViT-B-32.pt`` files): ``torch.jit.load`` on CPU, then its
      ``state_dict()`` (TorchScript archives hold tensors and TorchScript code, not pickled Python objects);
    * anything else: ``torch.load(weights_only=True)``; a ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper is
      unwrapped.
    """
    p = Path(path)
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(p))
    if _is_torchscript_archive(p):
        return {k: v for k, v in torch.jit.load(str(p), map_location="cpu").state_dict().items()}
    obj = torch.load(str(p), map_location="cpu", weights_only=True)
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{p}: not a state dict of tensors")
    return dict(obj)
