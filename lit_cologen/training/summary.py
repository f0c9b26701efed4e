"""What a run prints: the end-of-run summary, the one line for a step finished earlier, the dry-run plan table."""

from __future__ import annotations

import logging
import shlex
from pathlib import Path
from typing import Any, Optional

from lit_cologen.training.callbacks import (
    format_duration,
)
from lit_cologen.training.config import StepConfig
from lit_cologen.training.run_folder import DONE_FILE

log = logging.getLogger("lit_cologen.train")


def sample_command(cfg: StepConfig, final: Path) -> str:
    """The `cologen sample` command that tries a step's export (``final``) on one image."""
    task = list(cfg.data.tasks)[0] if list(cfg.data.tasks) else "edit"
    args = ["cologen", "sample", "--task", task, "--image", "IN.png", "--out", "OUT.png"]
    if cfg.train.train_base:  # the tiny/small base pre-training exports the base itself
        args += ["--base", str(final)]
    else:
        if cfg.model.pretrained_path:
            args += ["--base", str(cfg.model.pretrained_path)]
        else:
            args += ["--preset", str(cfg.model.preset)]
        args += ["--adapters", str(final)]
    return shlex.join(args)


def _fmt_loss(value: Any) -> str:
    return f"{float(value):.4f}" if isinstance(value, (int, float)) else "-"


def _fmt_skipped(skipped: Optional[dict]) -> str:
    if skipped is None:
        return "not counted (a datamodule without skip counts)"
    if not skipped.get("total"):
        return "none"
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(skipped.get("by_kind", {}).items()))
    return f"{skipped['total']} ({kinds})"


def format_summary(done: dict, final: Path, next_command: str) -> str:
    """The end-of-run summary of a step from its done.json record (``done``)::

        step 't' finished: 6/6 steps (6 in this run) in 1.2s, 10.3 samples/s
          loss: train 1.7749 (mean of the last 1 step(s)), val -
          skipped samples: none
          outputs: /runs/t/final (adapters.safetensors, done.json)
          next: cologen sample --task inpaint ...
    """
    outputs = sorted(p.name for p in Path(final).iterdir()) if Path(final).is_dir() else []
    rate = done.get("samples_per_s")
    rate_text = f"{rate:.1f} samples/s" if isinstance(rate, (int, float)) else "- samples/s"
    lines = [
        f"step '{done.get('step')}' finished: {done.get('global_step')}/{done.get('max_steps', '?')} steps "
        f"({done.get('steps_this_run', '?')} in this run) in {format_duration(done.get('seconds', 0))}, {rate_text}",
        f"  loss: train {_fmt_loss(done.get('train_loss'))} (mean of the last {done.get('train_loss_steps', '?')} "
        f"step(s)), val {_fmt_loss(done.get('val_loss'))}",
        f"  skipped samples: {_fmt_skipped(done.get('skipped'))}",
        f"  outputs: {final} ({', '.join(outputs)})",
        f"  next: {next_command}",
    ]
    return "\n".join(lines)


def format_finished(done: dict, final: Path) -> str:
    """One line for a step that is not re-run because it finished earlier (its done.json numbers)."""
    return (f"step '{done.get('step')}' already finished, skipped: {done.get('global_step')} steps, train loss "
            f"{_fmt_loss(done.get('train_loss', done.get('metrics', {}).get('train/loss')))}, val loss "
            f"{_fmt_loss(done.get('val_loss', done.get('metrics', {}).get('val/loss')))}, skipped samples "
            f"{_fmt_skipped(done.get('skipped')) if 'skipped' in done else '-'} ({Path(final) / DONE_FILE})")




def format_plan(spec: Any, rows: list[dict[str, Any]], path: str | Path) -> str:
    """The dry-run table of ``plan_curriculum``: a header line, one line per step, then the totals."""
    head = ("#", "name", "iterations", "global batch", "accumulate", "samples", "status", "output")
    table = [head] + [(str(r["index"]), r["name"], str(r["iterations"]), str(r["global_batch"]), str(r["accumulate"]),
                       str(r["samples"]), r["status"] + (f" ({r['detail']})" if r["detail"] else ""), r["output_dir"])
                      for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(head) - 1)]
    right = {0, 2, 3, 4, 5}
    lines = [f"curriculum '{spec.name}' ({path}), dry run: nothing is trained"]
    for row in table:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  " + "  ".join(cells + [row[-1]]))
    todo = [r for r in rows if r["status"] != "done"]
    lines.append(f"{len(rows)} step(s), {sum(r['iterations'] for r in rows)} iterations, "
                 f"{sum(r['samples'] for r in rows)} samples; to train: {len(todo)} step(s)"
                 + (f"; mismatching: {', '.join(r['name'] for r in rows if r['status'] == 'mismatching')} "
                    f"(would be refused)" if any(r["status"] == "mismatching" for r in rows) else ""))
    return "\n".join(lines)
