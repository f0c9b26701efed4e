"""Atomic file writes: one guarantee everywhere.

A file is written to a uniquely named temporary file in its own folder (``.NAME.XXXX.tmp``, so two processes never
share one), flushed and fsynced, then renamed over the target with ``os.replace``: a reader, or a process killed at
any point, sees either the old file or the complete new one, never a half-written one. On failure the temporary file
is removed and an ``OSError`` names the target (the earlier version, if any, is intact).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

__all__ = ["atomic_path", "atomic_write", "atomic_write_bytes", "atomic_write_json", "atomic_write_text"]


def _named(err: BaseException, path: Path) -> BaseException:
    if isinstance(err, OSError) and err.errno is not None:  # disk full, read-only, ...: name the file
        return OSError(err.errno, f"cannot write {path}: {err.strerror or err} (written atomically: an earlier "
                                  "version, if any, is intact)")
    return err


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], Any]) -> None:
    """Call ``write(f)`` on a binary temporary file, then move it over ``path`` (see the module docstring)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        named = _named(err, path)
        if named is err:
            raise
        raise named from err


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside ``path`` for libraries that write to a file name (``savefig``, safetensors'
    ``save_file``); moved over ``path`` when the block succeeds, removed when it fails. ``suffix`` lets the library
    pick its format from the name (``.png``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        named = _named(err, path)
        if named is err:
            raise
        raise named from err


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    atomic_write(path, lambda f: f.write(text.encode(encoding)))


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2, sort_keys: bool = False,
                      newline: bool = False) -> None:
    """``json.dumps(obj, indent, sort_keys)`` (NaN allowed, as the standard library writes it), plus a final
    newline when ``newline``."""
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, allow_nan=True) + ("\n" if newline else "")
    atomic_write_text(path, text)
