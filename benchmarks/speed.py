"""Training-step speed: CoLoGen (N routed K/V experts) vs one LoRA on Q/K/V (OminiControl-style), same shape.

Both models share one frozen base and go through the same multi-branch forward; they differ only in the source
adapter, so the ratio isolates what PRW costs. A step = forward (source + noisy + text tokens), flow-matching MSE,
backward, AdamW step, with gradient checkpointing. Timings alternate A/B/A/B over rounds; the ratio uses each model's
best round (robust to other load on the machine) and the ratio of medians is printed beside it.

    python -m benchmarks.speed --preset tiny                       # CPU, tiny preset (target ratio <= 1.3)
    python -m benchmarks.speed --preset flux-dev --device cuda     # GPU, random-init bf16 (target ratio <= 1.05)
        --resolution 512 --batch 4 --rank 128 --experts 5
    python -m benchmarks.speed --preset tiny --json                # one JSON object
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import nullcontext

import torch

from benchmarks.script_output import default_rank, print_result
from lit_cologen.models.config import PRWConfig
from lit_cologen.models.factory import build_base_transformer
from lit_cologen.models.latents import latent_ids, source_ids, text_ids
from lit_cologen.models.presets import get_preset
from lit_cologen.models.transformer import CoLoGenTransformer
from lit_cologen.utils.dtypes import dtype_from_name


def parse_args(argv=None) -> argparse.Namespace:
    from benchmarks.speed_cli import (
        build_parser,  # the parser lives there, importable without torch
    )

    args = build_parser().parse_args(argv)
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    return args


def _batch(base, preset, args, device, dtype):
    cfg = base.config
    res = args.resolution or preset.resolution
    src_res = args.source_resolution or res
    per_tok = preset.pixels_per_token
    th, sh = res // per_tok, src_res // per_tok
    lt = args.text_length or preset.text_max_length
    g = torch.Generator(device="cpu").manual_seed(0)
    mk = lambda *s: torch.randn(*s, generator=g).to(device=device, dtype=dtype)  # noqa: E731
    inputs = dict(
        hidden_states=mk(args.batch, th * th, cfg.in_channels),
        encoder_hidden_states=mk(args.batch, lt, cfg.joint_attention_dim),
        pooled_projections=mk(args.batch, cfg.pooled_projection_dim),
        timestep=torch.rand(args.batch, generator=g).to(device=device, dtype=dtype),
        img_ids=latent_ids(th, th, device=device),
        txt_ids=text_ids(lt, device=device),
        guidance=torch.ones(args.batch, device=device, dtype=dtype) if cfg.guidance_embeds else None,
        source_hidden_states=mk(args.batch, sh * sh, cfg.in_channels),
        source_ids=source_ids(sh, sh, device=device),
    )
    return inputs, mk(args.batch, th * th, cfg.in_channels), th * th + sh * sh + lt


class StepRunner:
    """One model + its AdamW over the trainable adapter parameters."""

    def __init__(self, model: CoLoGenTransformer, inputs, target, device, autocast_dtype):
        self.model, self.inputs, self.target = model, inputs, target
        params = [p for p in model.trainable_parameters()]
        self.num_trainable = sum(p.numel() for p in params)
        self.opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)
        self.device = device
        self.autocast = (torch.autocast(device_type=device.type, dtype=autocast_dtype)
                         if autocast_dtype is not None else nullcontext())

    def step(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        with self.autocast:
            out = self.model(**self.inputs).sample
        loss = torch.nn.functional.mse_loss(out.float(), self.target.float())
        loss.backward()
        self.opt.step()

    def timed(self, steps: int) -> float:
        _sync(self.device)
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        _sync(self.device)
        return (time.perf_counter() - start) / steps * 1000.0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    notes = []
    if device.type == "cuda":
        torch.backends.cuda.enable_cudnn_sdp(False)
        notes.append("cuDNN SDPA disabled (its backward failed on H200 for these shapes; DESIGN.md section 4)")
        torch.backends.cuda.matmul.allow_tf32 = True
    base_dtype = dtype_from_name(args.dtype or "auto", device)
    dtype_name = {torch.bfloat16: "bf16", torch.float32: "fp32"}[base_dtype]
    preset = get_preset(args.preset)
    rank = args.rank or default_rank(preset.builtin_components)

    base = build_base_transformer(args.preset, torch_dtype=base_dtype, device=device)
    inputs, target, tokens = _batch(base, preset, args, device, base_dtype)
    cologen = CoLoGenTransformer(base, PRWConfig(num_experts=1, rank=rank, routing=args.routing))
    for _ in range(args.experts - 1):
        cologen.add_expert()
    cologen.to(device)  # adapters in fp32 (trainable weights stay fp32; autocast runs the matmuls in bf16)
    baseline = CoLoGenTransformer(base, PRWConfig(blocks="none"))
    baseline.enable_single_lora_baseline(rank=rank)
    baseline.to(device)
    for p in baseline.trainable_parameters():
        p.data = p.data.float()
    for m in (cologen, baseline):
        m.train()
        m.enable_gradient_checkpointing(not args.no_checkpointing)
    autocast_dtype = torch.bfloat16 if base_dtype == torch.bfloat16 else None
    runners = {"baseline": StepRunner(baseline, inputs, target, device, autocast_dtype),
               "cologen": StepRunner(cologen, inputs, target, device, autocast_dtype)}

    times: dict[str, list[float]] = {k: [] for k in runners}
    peaks: dict[str, float | None] = {}
    for name, runner in runners.items():
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        runner.timed(args.warmup)
        peaks[name] = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    for _ in range(args.rounds):
        for name, runner in runners.items():
            times[name].append(runner.timed(args.steps))
    # best-of-rounds is robust to other processes on a shared machine; medians are reported beside it
    baseline_ms, cologen_ms = min(times["baseline"]), min(times["cologen"])
    median_ratio = statistics.median(times["cologen"]) / statistics.median(times["baseline"])
    return {
        "preset": args.preset, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": dtype_name, "batch": args.batch, "tokens_per_sample": tokens, "rank": rank,
        "experts": args.experts, "routing": args.routing, "gradient_checkpointing": not args.no_checkpointing,
        "baseline": "one peft LoRA on Q/K/V of the source tokens", "torch_threads": torch.get_num_threads(),
        "baseline_ms": round(baseline_ms, 3), "cologen_ms": round(cologen_ms, 3),
        "ratio": round(cologen_ms / baseline_ms, 4), "median_ratio": round(median_ratio, 4),
        "baseline_peak_gib": None if peaks["baseline"] is None else round(peaks["baseline"], 2),
        "cologen_peak_gib": None if peaks["cologen"] is None else round(peaks["cologen"], 2),
        "baseline_trainable_params": runners["baseline"].num_trainable,
        "cologen_trainable_params": runners["cologen"].num_trainable,
        "rounds_ms": times, "notes": notes,
    }


def text_lines(result: dict) -> list[str]:
    return [
        f"{result['preset']} on {result['device_name']} ({result['dtype']}), batch {result['batch']}, "
        f"{result['tokens_per_sample']} tokens/sample, rank {result['rank']}, {result['experts']} experts",
        f"  baseline (1 LoRA on Q/K/V): {result['baseline_ms']:.1f} ms/step  peak {result['baseline_peak_gib']} GiB",
        f"  CoLoGen  ({result['experts']} PRW experts): {result['cologen_ms']:.1f} ms/step  "
        f"peak {result['cologen_peak_gib']} GiB",
        f"  ratio: {result['ratio']:.3f} (best rounds; ratio of medians {result['median_ratio']:.3f})",
    ]


def main(argv=None) -> int:
    args = parse_args(argv)
    return print_result(run(args), args.json, text_lines)


if __name__ == "__main__":
    sys.exit(main())
