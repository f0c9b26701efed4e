"""Shared test helper: write hand-made (possibly broken) webdataset tar shards."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path


def write_tar(path: Path, samples: list[dict]) -> None:
    """Write samples ({"__key__": key, "<ext>": bytes, ...}; "_"-prefixed keys skipped) as one USTAR tar."""
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
        for s in samples:
            for ext, data in s.items():
                if ext.startswith("_"):
                    continue
                info = tarfile.TarInfo(f"{s['__key__']}.{ext}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
