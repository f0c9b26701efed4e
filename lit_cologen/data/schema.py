"""One sample schema for the five CoLoGen tasks, and its WebDataset encoding.

A sample is (source image, text, target image) plus optional single-channel mask, condition type and metadata.
On disk (one WebDataset sample = several tar members sharing a key)::

    KEY.task.txt        one of TASKS
    KEY.prompt.txt      caption (inpaint, control, subject) or instruction (ground, edit), UTF-8
    KEY.target.png      RGB target image
    KEY.source.png      RGB source image (masked scene, input scene, condition map, subject reference, ...)
    KEY.mask.png        optional, single channel (L), 255 = region to regenerate
    KEY.cond_type.txt   only for task == "control": one of COND_TYPES
    KEY.meta.json       ids, boxes, subject id, the Shapes-5 scene graph, ...
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

TASKS: tuple[str, ...] = ("inpaint", "ground", "control", "subject", "edit")
COND_TYPES: tuple[str, ...] = ("canny", "depth", "hed", "lineart", "seg")


class SampleError(ValueError):
    """A sample that breaks the schema; the message names the key and the problem."""


@dataclass
class Sample:
    """One training / evaluation sample of any of the five tasks (images as PIL)."""

    key: str
    task: str
    prompt: str
    target: Image.Image
    source: Image.Image
    mask: Image.Image | None = None
    cond_type: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> "Sample":
        """Check the schema; raise SampleError naming the key and the problem."""
        if not self.key or "." in self.key or "/" in self.key:
            raise SampleError(f"sample key {self.key!r}: must be non-empty and contain no '.' or '/'")
        if self.task not in TASKS:
            raise SampleError(f"sample {self.key}: unknown task {self.task!r} (expected one of {TASKS})")
        if self.task == "control":
            if self.cond_type not in COND_TYPES:
                raise SampleError(
                    f"sample {self.key}: control sample needs cond_type in {COND_TYPES}, got {self.cond_type!r}"
                )
        elif self.cond_type is not None:
            raise SampleError(f"sample {self.key}: cond_type is only for task 'control' (task {self.task!r})")
        if self.mask is not None:
            if self.mask.mode != "L":
                raise SampleError(f"sample {self.key}: mask must be single-channel 'L', got mode {self.mask.mode!r}")
            if self.mask.size != self.source.size:
                raise SampleError(
                    f"sample {self.key}: mask size {self.mask.size} does not match source size {self.source.size}"
                )
        return self

    def to_wds(self) -> dict[str, Any]:
        """Encode as a WebDataset dict (bytes values, PNG images)."""
        self.validate()
        out: dict[str, Any] = {
            "__key__": self.key,
            "task.txt": self.task.encode(),
            "prompt.txt": self.prompt.encode("utf-8"),
            "target.png": encode_png(self.target.convert("RGB")),
            "source.png": encode_png(self.source.convert("RGB")),
            "meta.json": json.dumps(self.meta, sort_keys=True).encode("utf-8"),
        }
        if self.mask is not None:
            out["mask.png"] = encode_png(self.mask)
        if self.cond_type is not None:
            out["cond_type.txt"] = self.cond_type.encode()
        return out


def encode_png(image: Image.Image) -> bytes:
    """PNG-encode a PIL image (lossless; fast compression level)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
