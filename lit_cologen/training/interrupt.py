"""Ctrl-C (SIGINT) and SIGTERM (SLURM preemption) during training: save at the end of the current optimizer step, stop.

``InterruptCheckpoint`` writes ``checkpoints/last.ckpt`` and stops the trainer; ``run_step`` then raises
``TrainingInterrupted`` (exit status 130 / 143), whose message says what was saved and that rerunning resumes.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Optional

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger("lit_cologen.train")


class TrainingInterrupted(SystemExit):
    """A step stopped by SIGINT (Ctrl-C) or SIGTERM. ``saved_step``: the global step written to ``checkpoint`` at
    the signal (None: nothing was written then, e.g. a second Ctrl-C); ``resume_step``: the step a rerun resumes
    from (None: it starts over). ``exit_code`` (= ``code``): 128 + the signal number (130 for SIGINT, 143 for
    SIGTERM); ``str()``: the one-line message.

    Like Lightning's ``SIGTERMException`` it is a ``SystemExit``: an ``except Exception`` (e.g. a sweep's per-point
    error handling) does not swallow an interruption, and uncaught it ends the process with ``exit_code``."""

    def __init__(self, step_name: str, signum: int, checkpoint: Path, saved_step: Optional[int],
                 resume_step: Optional[int], max_steps: int):
        self.step_name, self.signum, self.checkpoint = step_name, int(signum), Path(checkpoint)
        self.saved_step, self.resume_step, self.max_steps = saved_step, resume_step, max_steps
        self.exit_code = 128 + self.signum
        name = signal.Signals(self.signum).name
        if saved_step is not None:
            what = (f"saved {self.checkpoint} at step {saved_step}/{max_steps}; rerun the same command to resume "
                    f"from step {saved_step}")
        elif resume_step is not None:
            what = (f"nothing new was saved; rerun the same command to resume from step {resume_step} "
                    f"({self.checkpoint})")
        else:
            what = "nothing was saved; rerunning the same command starts the step over"
        self.message = f"step '{step_name}' interrupted ({name}): {what}"
        super().__init__(self.exit_code)

    def __str__(self) -> str:
        return self.message


class InterruptCheckpoint(L.Callback):
    """SIGINT (Ctrl-C) and SIGTERM stop training at the end of the current optimizer step with
    ``checkpoints/last.ckpt`` written there (``trainer.save_checkpoint``: the same file, writer and hook point as the
    periodic ``ModelCheckpoint``, so a rerun resumes exactly from that step).

    SIGTERM: Lightning's own handler sets ``trainer.received_sigterm``; at the next optimizer-step boundary this
    callback saves and Lightning's loop then ends with ``SIGTERMException``. SIGINT: while training, this callback's
    handler only records the request (a second Ctrl-C aborts at once, without saving: Lightning's KeyboardInterrupt
    path); at the next boundary it saves and sets ``trainer.should_stop``. On several processes the decision is
    reduced over all ranks (``strategy.reduce_boolean_decision``) so that all save and stop at the same step.

    A SIGTERM that Lightning acts on inside an accumulation group (``train.accumulate`` > 1, the loop stops after
    the current micro-batch) leaves no consistent state to save: nothing is written, the checkpoint of the last
    boundary (if any) stays the resume point, and ``TrainingInterrupted`` says so. ``signum``, ``saved_step`` and
    ``aborted`` feed ``TrainingInterrupted``.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.signum: Optional[int] = None
        self.saved_step: Optional[int] = None
        self.aborted = False  # a second Ctrl-C (KeyboardInterrupt): stopped without saving
        self._sigint_requested = False
        self._original_sigint = None
        self._boundary_step: Optional[int] = None  # global step of the last optimizer-step boundary
        self._at_boundary = False

    # ---------------------------------------------------------------- the SIGINT handler (main thread only)
    def _on_sigint(self, signum, frame) -> None:
        if self._sigint_requested:  # second Ctrl-C: stop now, unsaved
            self._restore_sigint()
            signal.default_int_handler(signum, frame)
        self._sigint_requested = True
        print("Ctrl-C: saving a checkpoint at the end of this step, then stopping (Ctrl-C again: stop now, "
              "without saving)", file=sys.stderr, flush=True)

    def _restore_sigint(self) -> None:
        """Put the previous SIGINT handler back, unless someone replaced ours since (Lightning ignores SIGINT while
        it shuts down after a KeyboardInterrupt)."""
        if (self._original_sigint is not None and threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) == self._on_sigint):
            signal.signal(signal.SIGINT, self._original_sigint)
        self._original_sigint = None

    def on_train_start(self, trainer, pl_module) -> None:
        self._boundary_step, self._at_boundary = trainer.global_step, True
        if threading.current_thread() is threading.main_thread():
            self._original_sigint = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._on_sigint)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._restore_sigint()

    # ---------------------------------------------------------------- saving at a step boundary
    def _save(self, trainer) -> None:
        self.signum = signal.SIGINT if self._sigint_requested else signal.SIGTERM
        trainer.save_checkpoint(self.path, weights_only=False)
        self.saved_step = trainer.global_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._at_boundary = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._at_boundary = trainer.global_step != self._boundary_step
        if not self._at_boundary or self.saved_step is not None:
            return  # inside an accumulation group (no optimizer step yet), or already saved
        self._boundary_step = trainer.global_step
        requested = self._sigint_requested or trainer.received_sigterm
        if trainer.world_size > 1:
            requested = trainer.strategy.reduce_boolean_decision(bool(requested), all=False)
        if requested and trainer.global_step < trainer.max_steps:
            self._save(trainer)
            trainer.should_stop = True

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._restore_sigint()  # `teardown` is not called after an exception
        if isinstance(exception, KeyboardInterrupt):
            self.signum, self.aborted = signal.SIGINT, True
        elif isinstance(exception, SIGTERMException):
            if self.signum is None:
                self.signum = signal.SIGTERM
            # raised between micro-batches at a step boundary (e.g. broadcast from rank 0 before the next batch):
            # the state is consistent, save it; inside an accumulation group it is not
            if self.saved_step is None and self._at_boundary and trainer.global_step < trainer.max_steps:
                self._save(trainer)
