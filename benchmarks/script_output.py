"""What the timing scripts (speed.py, cache_speed.py, train_step.py) share: their default LoRA rank and how they
print a result (one JSON line with ``--json``, else the result's notes and a few lines of text)."""

from __future__ import annotations

import json
from typing import Any, Callable


def default_rank(builtin_components: bool) -> int:
    """LoRA rank when ``--rank`` is not given: 8 for the built-in tiny / small presets, 128 (the paper's) for FLUX."""
    return 8 if builtin_components else 128


def print_result(result: dict[str, Any], as_json: bool, text_lines: Callable[[dict[str, Any]], list[str]]) -> int:
    """Print ``result`` as one JSON line, or as ``note: ...`` lines (``result["notes"]``) then ``text_lines(result)``;
    returns the exit status 0."""
    if as_json:
        print(json.dumps(result))
        return 0
    for note in result.get("notes", []):
        print(f"note: {note}")
    for line in text_lines(result):
        print(line)
    return 0
