"""The parser of :mod:`benchmarks.speed` (``cologen speed ARGS`` = ``python -m benchmarks.speed ARGS``), built without
importing torch: ``cologen speed`` checks the arguments with it (``--help`` and a bad argument answer at once) and
imports the benchmark only afterwards.
"""

from __future__ import annotations

import argparse

from lit_cologen.cliutil import module_doc


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``benchmarks.speed`` (``--device`` defaults to None here: ``benchmarks.speed.parse_args``
    fills in cuda when available, else cpu)."""
    p = argparse.ArgumentParser(description=module_doc("benchmarks.speed"),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny", help="model preset: tiny | small | flux-dev | flux-schnell (default tiny)")
    p.add_argument("--device", default=None, help="cuda | cpu (default: cuda when available)")
    p.add_argument("--dtype", default=None, help="bf16 | fp32 (default: bf16 on cuda, fp32 on cpu)")
    p.add_argument("--resolution", type=int, default=None, help="target image side in pixels (default: preset's)")
    p.add_argument("--source-resolution", type=int, default=None, help="source image side (default: = resolution)")
    p.add_argument("--batch", type=int, default=4, help="samples per training step (default 4)")
    p.add_argument("--rank", type=int, default=None, help="LoRA rank of both models (default 128; 8 on tiny)")
    p.add_argument("--experts", type=int, default=5, help="PRW experts of the CoLoGen model (default 5)")
    p.add_argument("--routing", default="sample", choices=["sample", "token"],
                   help="PRW routing: one expert mix per sample or per token (default sample)")
    p.add_argument("--text-length", type=int, default=None, help="text tokens per sample (default: the preset's)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=5, help="A/B rounds, alternating the two models (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per model before the rounds (default 2)")
    p.add_argument("--no-checkpointing", action="store_true", help="without gradient checkpointing")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p
