"""Checkpoint files of a step: atomic writes, stale temporary files, the last good state before a non-finite loss.

``AtomicCheckpointIO`` writes ``checkpoints/*.ckpt`` through a temporary file (``.<name>.tmp-<pid>``) moved over
the target, so a crash never leaves a half-written checkpoint; ``LastGoodCheckpoint`` saves
``checkpoints/last-good.ckpt`` when training stops on a non-finite loss.
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import Any, Optional

import lightning as L
import torch
from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO

log = logging.getLogger("lit_cologen.train")

LAST_GOOD_FILE = "last-good.ckpt"
TMP_MARK = ".tmp-"  # checkpoint temporary files: .<name>.tmp-<pid>


class _RecordingWriter:
    """A file wrapper for torch.save that remembers the OSError of a failed write."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        try:
            self.f.flush()
        except OSError as err:
            self.error = err
            raise


class AtomicCheckpointIO(CheckpointIO):
    """torch.save to a temporary file, fsync, then rename: a kill never leaves a truncated checkpoint.
    Loading uses `weights_only=True` (checkpoints hold tensors and plain containers only)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")
        writer = None
        try:
            with open(tmp, "wb") as f:
                writer = _RecordingWriter(f)
                torch.save(checkpoint, writer)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException as err:
            tmp.unlink(missing_ok=True)
            # torch.save turns a failed write (disk full, ...) into an opaque RuntimeError: report the OS error
            os_err = err if isinstance(err, OSError) else getattr(writer, "error", None)
            if os_err is not None and os_err.errno is not None:
                raise OSError(os_err.errno, f"cannot write checkpoint {path}: {os_err.strerror or os_err} (the "
                                            f"previous checkpoint there, if any, is intact)") from err
            raise

    def load_checkpoint(self, path, map_location: Optional[Any] = None, weights_only: Optional[bool] = True) -> dict[str, Any]:
        try:
            return torch.load(path, map_location=map_location or "cpu", weights_only=True)
        except pickle.UnpicklingError as err:  # never retried with weights_only=False: that would run its code
            lines = str(err).splitlines()
            detail = next((x.strip() for x in lines if "WeightsUnpickler error" in x), lines[0] if lines else "")
            raise ValueError(
                f"checkpoint {path} holds objects other than tensors and plain containers, so it was not loaded "
                f"(checkpoints are read with torch.load(weights_only=True) only; lit-cologen checkpoints never hold "
                f"such objects). Move it away to restart the step. {detail[:300]}"
            ) from None
        except RuntimeError as err:  # not a torch zip archive: truncated or corrupt
            raise ValueError(f"checkpoint {path} is truncated or corrupt ({str(err).splitlines()[0][:200]}); "
                             f"move it away to restart the step") from err

    def remove_checkpoint(self, path) -> None:
        Path(path).unlink(missing_ok=True)


def remove_stale_checkpoint_tmp(directory: Path) -> list[Path]:
    """Delete the temporary files a killed `AtomicCheckpointIO.save_checkpoint` left in `directory` (run before
    training starts, when no save is in flight); returns them."""
    stale = sorted(directory.glob(f".*{TMP_MARK}*")) if directory.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
        log.info("removed %s (an interrupted checkpoint write)", p)
    return stale


class LastGoodCheckpoint(L.Callback):
    """On a non-finite loss (FloatingPointError) write `checkpoints/last-good.ckpt`: the state after the last
    finished step (the failing step raised before its update). Skipped when the weights themselves are already
    non-finite (nothing good to save) and on more than one process (the periodic checkpoint is then the last good).
    `outcome` says what happened, for the error message."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.outcome: Optional[str] = None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if not isinstance(exception, FloatingPointError):
            return
        if trainer.world_size != 1:
            self.outcome = "not saved on several processes"
            return
        if not all(torch.isfinite(p).all() for p in pl_module.parameters() if p.requires_grad):
            self.outcome = "the weights were already non-finite, so nothing new was saved"
            return
        try:
            trainer.save_checkpoint(self.path, weights_only=False)
        except Exception as err:  # noqa: BLE001 - the original error is the one to report
            log.exception("could not write %s", self.path)
            self.outcome = f"writing {self.path} failed ({err})"
            return
        self.outcome = f"the last good state (global step {trainer.global_step}) was saved to {self.path}"




def checkpoint_step(path: str | Path) -> Optional[int]:
    """The global step a checkpoint holds (memory-mapped, tensors are not read), or None when unreadable."""
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["global_step"])
    except Exception:  # noqa: BLE001 - missing, truncated or foreign: no step to report
        return None
