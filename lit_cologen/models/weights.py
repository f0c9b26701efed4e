"""Weight folders: the FLUX.1 folder layout, its checks before anything loads, and local / cached-Hub resolution.

Nothing here downloads: a folder is local, or a Hugging Face id already in the local cache (``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from lit_cologen.utils.hub import looks_like_hub_id

MODEL_FILES = ("config.json", "*.safetensors")
#: FLUX.1 folder layout: subfolder -> files it must hold (a tuple entry "a|b" means one of them).
FLUX_LAYOUT: dict[str, tuple[str, ...]] = {
    "vae": MODEL_FILES,
    "text_encoder": MODEL_FILES,
    "tokenizer": ("tokenizer.json|vocab.json",),
    "text_encoder_2": MODEL_FILES,
    "tokenizer_2": ("tokenizer.json|spiece.model",),
}


def resolve_pretrained_path(path: str | os.PathLike) -> Path:
    """A local folder as is, or a Hugging Face repo id resolved from the local cache only (never downloads).

    Raises:
        FileNotFoundError: neither an existing folder nor a cached repo id.
    """
    p = Path(os.path.expanduser(str(path)))
    if p.is_dir():
        return p
    text = str(path)
    if p.exists():
        raise FileNotFoundError(f"pretrained path {text} is a file, expected a folder")
    if looks_like_hub_id(text):
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(repo_id=text, local_files_only=True))
        except Exception as err:  # noqa: BLE001 - any failure means "not available offline"
            raise FileNotFoundError(
                f"pretrained path {text}: no such folder, and not a Hugging Face id in the local cache "
                f"(nothing is downloaded; fetch it beforehand or point to a local copy): {err}"
            ) from None
    raise FileNotFoundError(f"pretrained folder {text} does not exist")


def missing_in(folder: Path, required: Iterable[str]) -> list[str]:
    """Entries of ``required`` not present in ``folder`` (``"a|b"`` = one of them; ``*`` = glob)."""
    missing = []
    for spec in required:
        options = spec.split("|")
        if not any(any(folder.glob(opt)) if "*" in opt else (folder / opt).is_file() for opt in options):
            missing.append(" or ".join(options))
    return missing


def check_subfolder(root: Path, subfolder: str, required: Iterable[str]) -> None:
    folder = root / subfolder
    if not folder.is_dir():
        raise FileNotFoundError(f"pretrained folder {root}: missing subfolder '{subfolder}/'")
    missing = missing_in(folder, required)
    if missing:
        raise FileNotFoundError(f"pretrained folder {root}: subfolder '{subfolder}/' lacks {', '.join(missing)}")


def check_flux_folder(path: str | os.PathLike, parts: Iterable[str] | None = None) -> Path:
    """Check a FLUX.1-layout folder before loading anything; returns it as a Path.

    Args:
        path: local folder.
        parts: subfolders to check (default: all of :data:`FLUX_LAYOUT`).

    Raises:
        FileNotFoundError: the message names the folder and every missing subfolder / file.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"pretrained folder {root} does not exist")
    problems = []
    for sub in parts if parts is not None else FLUX_LAYOUT:
        folder = root / sub
        if not folder.is_dir():
            problems.append(f"missing subfolder '{sub}/'")
            continue
        missing = missing_in(folder, FLUX_LAYOUT[sub])
        if missing:
            problems.append(f"subfolder '{sub}/' lacks {', '.join(missing)}")
    if problems:
        raise FileNotFoundError(f"pretrained folder {root} is not a complete FLUX.1 layout: " + "; ".join(problems))
    return root
