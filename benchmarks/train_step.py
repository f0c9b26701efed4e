"""Training-step time and peak memory through the real CoLoGenModule and Lightning Trainer.

A thin command over ``lit_cologen.training.step_timer.time_training_step`` (what `cologen curriculum --estimate
--measure` times too). The base is random-init (the preset's shape, built directly on the device in the base dtype);
the batches are pre-encoded latents with cached text embeddings, as with `cologen data encode`, so neither the VAE
nor the text encoders are resident. What is timed is one optimizer step of the module as `cologen train` runs it:
forward of source + noisy + text tokens through the routed experts, flow-matching + veteran loss, backward
(``--checkpointing``), gradient clipping, AdamW on the fp32 experts + router, and Lightning's loop and callbacks
around it. The model is in the state of the last curriculum step: `--experts` experts, the newest trainable,
veterans frozen.

``--checkpointing`` / ``--checkpoint-ratio`` / ``--compile`` / ``--fp8`` / ``--base-quantization`` set the config
keys train.checkpointing / train.checkpoint_ratio / train.compile / train.fp8 / model.base_quantization.
``--compare`` times today's default (checkpointing full, no compile, no FP8, no quantization) and the chosen
configuration in one process on the same shapes, and prints both and the ratio of samples/s (chosen / default).

    python -m benchmarks.train_step --preset flux-dev --resolution 512 --batch 4 --rank 128 --experts 5   # GPU
    python -m benchmarks.train_step --preset flux-dev --batch 4 --checkpointing selective --compile --compare
    python -m benchmarks.train_step --preset tiny --json                                                     # CPU
    python -m benchmarks.train_step --preset small --strategy fsdp --steps 3   # the FSDP path on one GPU
"""

from __future__ import annotations

import argparse
import sys
import tempfile

import torch

from benchmarks.script_output import default_rank, print_result
from lit_cologen.models.config import BASE_QUANTIZATIONS, CHECKPOINTING
from lit_cologen.models.presets import get_preset
from lit_cologen.training.config import StepConfig, load_step_config
from lit_cologen.training.step_timer import time_training_step

#: the configuration --compare measures against: today's default
DEFAULT_RUNTIME = {"checkpointing": "full", "checkpoint_ratio": 0.5, "compile": False, "fp8": False,
                   "base_quantization": "none"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--resolution", type=int, default=None, help="target and source side in pixels (default: preset's)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--rank", type=int, default=None, help="LoRA rank (default 128; 8 on tiny / small)")
    p.add_argument("--experts", type=int, default=5)
    p.add_argument("--task", default="edit", help="task of every sample (edit: aligned source; subject: reference)")
    p.add_argument("--strategy", default="auto", choices=["auto", "fsdp", "ddp"])
    p.add_argument("--checkpointing", default="full", choices=[c for c in CHECKPOINTING if c != "auto"],
                   help="train.checkpointing: full (default) recomputes every block in backward, selective a "
                        "--checkpoint-ratio share of them, none keeps every activation")
    p.add_argument("--checkpoint-ratio", type=float, default=0.5,
                   help="train.checkpoint_ratio: share of blocks recomputed with --checkpointing selective")
    p.add_argument("--compile", action="store_true", help="train.compile: regional torch.compile of the blocks")
    p.add_argument("--fp8", action="store_true", help="train.fp8: FP8 matmuls in the frozen base (FP8 GPUs only)")
    p.add_argument("--base-quantization", default="none", choices=list(BASE_QUANTIZATIONS),
                   help="model.base_quantization: weight-only quantization of the frozen base")
    p.add_argument("--compare", action="store_true",
                   help="also time the default (checkpointing full, no compile / fp8 / quantization) on the same "
                        "shapes and print both and the samples/s ratio")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps")
    p.add_argument("--steps", type=int, default=5, help="timed steps")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p.parse_args(argv)


def runtime_of(args: argparse.Namespace) -> dict:
    return {"checkpointing": args.checkpointing, "checkpoint_ratio": args.checkpoint_ratio, "compile": args.compile,
            "fp8": args.fp8, "base_quantization": args.base_quantization}


def step_config(args: argparse.Namespace, runtime: dict) -> StepConfig:
    """The StepConfig of the benchmark's shapes with ``runtime`` (the keys of DEFAULT_RUNTIME)."""
    gpu = torch.device(args.device).type == "cuda"
    preset = get_preset(args.preset)
    rank = args.rank or default_rank(preset.builtin_components)
    res = args.resolution or preset.resolution
    overrides = [
        f"output_dir={tempfile.gettempdir()}/cologen-train-step", "name=bench", f"model.preset={args.preset}",
        f"model.prw.rank={rank}", f"model.prw.num_experts={args.experts}", f"data.batch_size={args.batch}",
        f"data.resolution={res}", f"data.tasks=[{args.task}]", f"train.global_batch={args.batch}",
        f"train.precision={'bf16-mixed' if gpu else '32-true'}", f"train.accelerator={'gpu' if gpu else 'cpu'}",
        "train.devices=1", f"train.strategy={args.strategy}", "veteran.alpha=0.5", "veteran.rho=0.8",
        f"train.checkpointing={runtime['checkpointing']}", f"train.checkpoint_ratio={runtime['checkpoint_ratio']}",
        f"train.compile={runtime['compile']}", f"train.fp8={runtime['fp8']}",
        f"model.base_quantization={runtime['base_quantization']}",
    ]
    return load_step_config(None, overrides)


def measure(args: argparse.Namespace, runtime: dict) -> dict:
    cfg = step_config(args, runtime)
    t = time_training_step(cfg, steps=args.steps, warmup=args.warmup, device=args.device, strategy=args.strategy)
    return {
        "preset": args.preset, "device": t.device, "device_name": t.device_name, "precision": t.precision,
        "strategy": args.strategy, "resolution": cfg.data.resolution, "batch": args.batch, "task": args.task,
        "tokens_per_sample": t.tokens_per_sample, "rank": cfg.model.prw.rank, "experts": args.experts,
        **runtime, "trainable_params": t.trainable_params, "step_ms_median": t.step_ms_median,
        "step_ms_min": t.step_ms_min, "steps_ms": t.steps_ms, "samples_per_s": t.samples_per_s,
        "peak_gib": t.peak_gib, "frozen_components_loaded": t.frozen_components_built, "build_s": t.build_s,
        "fit_s": t.fit_s, "losses": t.losses,
    }


def run(args: argparse.Namespace) -> dict:
    chosen = runtime_of(args)
    if not args.compare:
        return measure(args, chosen)
    default = measure(args, DEFAULT_RUNTIME)
    result = measure(args, chosen)
    rel = [abs(c - d) / max(abs(d), 1e-12) for c, d in zip(result["losses"], default["losses"])]
    return {"default": default, "chosen": result,
            "samples_per_s_ratio": round(result["samples_per_s"] / default["samples_per_s"], 3),
            # same seed: the same batch and the same initial weights; the first step compares the forward exactly,
            # later steps also carry the optimizer's diverging updates
            "loss_rel_diff_first": round(rel[0], 6) if rel else None,
            "loss_rel_diff_max": round(max(rel), 6) if rel else None}


def runtime_label(result: dict) -> str:
    ckpt = result["checkpointing"] + (f" {result['checkpoint_ratio']}" if result["checkpointing"] == "selective" else "")
    extras = [name for name in ("compile", "fp8") if result[name]]
    if result["base_quantization"] != "none":
        extras.append(f"base {result['base_quantization']}")
    return f"checkpointing {ckpt}" + "".join(f", {e}" for e in extras)


def text_lines(result: dict) -> list[str]:
    if "chosen" in result:
        d, c = result["default"], result["chosen"]
        return (text_lines(c)[:1] + [
            f"  default ({runtime_label(d)}): {d['step_ms_median']} ms median, {d['samples_per_s']} samples/s, "
            f"peak {d['peak_gib']} GiB",
            f"  chosen  ({runtime_label(c)}): {c['step_ms_median']} ms median, {c['samples_per_s']} samples/s, "
            f"peak {c['peak_gib']} GiB",
            f"  samples/s chosen / default: {result['samples_per_s_ratio']}x",
            f"  loss vs default on the same batches: first step rel. diff {result['loss_rel_diff_first']}, max over "
            f"steps {result['loss_rel_diff_max']}",
            f"  frozen components built: {c['frozen_components_loaded']}",
        ])
    return [
        f"{result['preset']} on {result['device_name']} ({result['precision']}, {result['strategy']}), batch "
        f"{result['batch']}, {result['tokens_per_sample']} tokens/sample, rank {result['rank']}, "
        f"{result['experts']} experts, {runtime_label(result)}",
        f"  step: {result['step_ms_median']} ms median ({result['step_ms_min']} min), "
        f"{result['samples_per_s']} samples/s, peak {result['peak_gib']} GiB",
        f"  frozen components built: {result['frozen_components_loaded']}",
    ]


def main(argv=None) -> int:
    args = parse_args(argv)
    return print_result(run(args), args.json, text_lines)


if __name__ == "__main__":
    sys.exit(main())
