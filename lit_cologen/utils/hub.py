"""The one test of whether a weights argument names a Hugging Face Hub repo id rather than a local path."""

from __future__ import annotations

import os


def looks_like_hub_id(path: str | os.PathLike | None) -> bool:
    """True for ``"org/name"`` (exactly one slash, not starting with ``/``, ``.`` or ``~``); False for None / "".

    Such an id is resolved from the local Hugging Face cache only (nothing is downloaded); anything else is a path.
    """
    text = "" if path is None else str(path)
    return bool(text) and text.count("/") == 1 and not text.startswith(("/", ".", "~"))
