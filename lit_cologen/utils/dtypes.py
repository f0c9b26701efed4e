"""Dtype names: the one map from the names configs and command lines use to ``torch.dtype``.

Names: ``fp32`` / ``float32``, ``fp16`` / ``float16``, ``bf16`` / ``bfloat16``; ``auto`` (or None) resolves by device:
bfloat16 on CUDA, float32 elsewhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported on first use, so command-line parsers can list the names cheaply
    import torch

#: short name -> torch attribute name; the long names (``bfloat16``) are accepted too
DTYPE_NAMES: dict[str, str] = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
#: every accepted name, for argparse ``choices`` and config checks
ACCEPTED_DTYPE_NAMES: tuple[str, ...] = (*DTYPE_NAMES, *DTYPE_NAMES.values())


def dtype_from_name(name: Any, device: Any = None) -> "torch.dtype | None":
    """``"bf16"`` -> ``torch.bfloat16`` (any accepted name, or a ``torch.dtype`` as is).

    ``None`` stays None unless ``device`` is given; ``"auto"`` (or None with a device) -> bfloat16 on CUDA, float32
    elsewhere.

    Raises:
        ValueError: an unknown name (the message lists the accepted ones).
    """
    import torch

    if isinstance(name, torch.dtype):
        return name
    if name in (None, "", "auto"):
        if name is None and device is None:
            return None
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    text = str(name)
    attr = DTYPE_NAMES.get(text, text)
    if attr not in DTYPE_NAMES.values():
        raise ValueError(f"unknown dtype {name!r}; use one of {list(ACCEPTED_DTYPE_NAMES)} or auto")
    return getattr(torch, attr)
