"""Which backbone weights are the reference ones: hashes published by the weights' own distributors.

A results file records the sha256 of every backbone it was scored with (``Backbones.used()``). A number belongs
beside a paper's only if those are the reference weights; ``backbone_status`` tells, from what is published:

* OpenAI CLIP: clip's download URLs carry the SHA-256 of each checkpoint (``clip.clip._MODELS``, read from the
  installed clip package, not copied here);
* torch.hub-style files (pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``): the file name carries the first
  hex digits of the file's SHA-256 (torch.hub's ``check_hash`` convention).

Hugging Face folders (DINO, DPT, segmenters, judges) have no published hash of their own: rows scored with them are
"unverified backbones" (which is honest, not an error). Weights written by ``benchmarks.metrics.random_init`` carry
a marker (``random_init: true`` in the record): such rows are "not comparable".
"""

from __future__ import annotations

import re
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

__all__ = ["backbone_status", "published_clip_sha256", "verified"]

_HUB_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.(?:pth|pt|bin)$")


@lru_cache(maxsize=1)
def published_clip_sha256() -> dict[str, str]:
    """{sha256: model name} of the OpenAI CLIP checkpoints, from clip's download URLs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # clip's pkg_resources notice (see benchmarks/metrics/__init__.py)
        from clip import clip

    return {url.rstrip("/").split("/")[-2]: name for name, url in clip._MODELS.items()}


def verified(record: Mapping[str, Any]) -> bool:
    """Whether one backbone record (``{"path", "sha256", ...}``) is weights whose hash is published."""
    sha = record.get("sha256")
    if not isinstance(sha, str):
        return False  # a folder (dict of file hashes) or no hash: nothing published to check against
    if sha in published_clip_sha256():
        return True
    m = _HUB_HASH_IN_NAME.search(Path(str(record.get("path", ""))).name)
    return bool(m) and sha.startswith(m.group(1))


def backbone_status(backbones: Mapping[str, Mapping[str, Any]]) -> tuple[str, list[str]]:
    """``("random-init" | "unverified" | "verified", keys)``: the backbones that are random-init, else the ones
    whose hash is not published (``verified`` when every backbone's hash is)."""
    random = sorted(k for k, v in backbones.items() if v.get("random_init"))
    if random:
        return "random-init", random
    unverified = sorted(k for k, v in backbones.items() if not verified(v))
    return ("unverified", unverified) if unverified else ("verified", [])
