"""Train the demo's text-to-image base once and write it where `cologen demo` loads it from.

    python -m benchmarks.demo_base                      # -> experiments/demo/base/transformer/ (committed)
    python -m benchmarks.demo_base --out DIR --steps N  # elsewhere / another length

The base stands in for FLUX.1's released pre-trained weights: the tiny preset trained on the targets of all five
Shapes-5 tasks with their prompts, half of the samples text-to-image and half with their own clean target as aligned
source tokens (``train.self_source``: it learns to read in-context image tokens, never a task's source, mask, box or
edit; `experiments/demo/base.yaml`). It is seeded and deterministic on one CPU
thread count; the committed copy is the output of the command above. Its training cost is in README.md
("What the demo shows").
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASE_CONFIG = REPO / "experiments" / "demo" / "base.yaml"
COMMITTED_BASE = REPO / "experiments" / "demo" / "base"


def train_base(out: Path, work: Path, steps: int | None = None, shards_per_task: int = 2000,
               progress=None) -> Path:
    """Train the base step in ``work`` and copy its exported transformer to ``out``/transformer. Returns ``out``."""
    from benchmarks.demo import build_shards, run_steps

    shards = build_shards(work, shards_per_task, 32)
    overrides = [f"output_dir={work / 'run'}", f"data.train_shards=[{shards}]"]
    if steps is not None:
        overrides.append(f"train.max_steps={int(steps)}")
    final = run_steps(BASE_CONFIG, overrides, progress, label="base")[0]
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / "transformer", ignore_errors=True)
    shutil.copytree(final / "transformer", out / "transformer")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(COMMITTED_BASE), help="where transformer/ goes (default: the committed copy)")
    p.add_argument("--work", default="outputs/demo-base", help="shards + training run folder (resumable)")
    p.add_argument("--steps", type=int, default=None, help="train.max_steps (default: experiments/demo/base.yaml)")
    args = p.parse_args(argv)
    from benchmarks.demo import DemoProgress, quiet_console

    quiet_console()
    t0 = time.perf_counter()
    progress = DemoProgress()
    out = train_base(Path(args.out), Path(args.work), args.steps, progress=progress)
    progress.close()
    print(f"[demo-base] {out / 'transformer'} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
