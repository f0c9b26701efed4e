"""Sampling speed with and without the source K/V cache (DESIGN.md D3, section 4 target: cached <= 0.6x).

Editing at a fixed resolution: the full sampler (`lit_cologen.sampling.denoise`, flow-match Euler with FLUX's shift,
embedded guidance 3.5) runs twice from the same noise, text and source tokens: once computing the source branch a
single time and reusing its per-block K/V (`use_source_cache=True`), once recomputing the source tokens at every
step. No VAE or text encoder is needed: random text embeddings (B, L, D), pooled (B, P), noise and source tokens
(B, (H/16)(W/16), 64) go straight to `denoise`. The PRW adapters (random, non-zero experts and routers, as after
training) are part of the source branch, so the comparison includes them.

It prints both times, their ratio (best of `--rounds`, alternating the two; the ratio of medians and the median of
the per-round ratios beside it, which resist a shared machine's changing load) and the max abs difference of the
two outputs (the cache must not change the image).

    python -m benchmarks.cache_speed                                 # CPU: tiny preset, 64 px, 28 steps
    python -m benchmarks.cache_speed --preset flux-dev --device cuda # GPU: random-init bf16, 1024 px, 28 steps
    python -m benchmarks.cache_speed --json                          # one JSON object

With ``--compile`` / ``--fp8`` / ``--base-quantization`` (``lit_cologen.models.runtime``) it measures instead the
cached sampler with today's default (eager, base dtype) against the same model switched to the chosen runtime, in
one process: both times, their ratio (target for compile + FP8 on a GPU: <= 0.6x), the max abs difference of the
outputs (compile alone must give the same image) and their PSNR over the output tokens' range (for FP8 / int8,
whose outputs differ by design).

    python -m benchmarks.cache_speed --preset flux-dev --device cuda --compile --fp8
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import torch

from benchmarks.script_output import default_rank, print_result
from lit_cologen.models.config import PRWConfig
from lit_cologen.models.factory import build_base_transformer
from lit_cologen.models.latents import latent_ids, source_ids, text_ids
from lit_cologen.models.presets import get_preset
from lit_cologen.models.transformer import CoLoGenTransformer
from lit_cologen.sampling import denoise
from lit_cologen.utils.dtypes import dtype_from_name

TARGET_RATIO = 0.6


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default=None, help="default: flux-dev on cuda, tiny on cpu")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--dtype", default=None, choices=["bf16", "fp32"], help="default: bf16 on cuda, fp32 on cpu")
    p.add_argument("--resolution", type=int, default=None, help="image side in pixels (default: 1024 cuda, 64 cpu)")
    p.add_argument("--steps", type=int, default=28)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--guidance", type=float, default=3.5)
    p.add_argument("--experts", type=int, default=5)
    p.add_argument("--rank", type=int, default=None, help="LoRA rank (default 128; 8 on tiny / small)")
    p.add_argument("--text-length", type=int, default=None, help="default: the preset's (512 flux-dev)")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds per mode (default 1 on cuda, 5 on cpu)")
    p.add_argument("--warmup-steps", type=int, default=2, help="steps of one untimed warm-up run per mode")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compile", action="store_true", help="compare against compiled block forwards")
    p.add_argument("--fp8", action="store_true", help="compare against FP8 matmuls in the frozen base (FP8 GPUs)")
    p.add_argument("--base-quantization", default="none", choices=["none", "int8", "nf4"],
                   help="compare against a weight-only quantized base")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend (default inductor)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p.parse_args(argv)


def runtime_chosen(args: argparse.Namespace) -> bool:
    return bool(args.compile or args.fp8 or args.base_quantization != "none")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _randomise_adapters(model: CoLoGenTransformer, seed: int, scale: float) -> None:
    """Non-zero expert B matrices and router weights (a fresh expert is zero: its delta would be free to skip)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for adapter in model.adapters():
            bank = adapter.experts
            for k in range(bank.num_experts):
                for p in (bank.lora_B_k[k], bank.lora_B_v[k]):
                    p.copy_((torch.randn(p.shape, generator=g) * scale).to(p.dtype))
            w = adapter.router.w_route
            w.copy_((torch.randn(w.shape, generator=g) * w.shape[1] ** -0.5).to(w.dtype))


def build(args: argparse.Namespace):
    """(model, inputs dict for `denoise`, info dict)."""
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    preset_name = args.preset or ("flux-dev" if device.type == "cuda" else "tiny")
    preset = get_preset(preset_name)
    dtype = dtype_from_name(args.dtype or "auto", device)
    dtype_name = {torch.bfloat16: "bf16", torch.float32: "fp32"}[dtype]
    resolution = args.resolution or (1024 if device.type == "cuda" else 64)
    per_tok = preset.pixels_per_token
    if resolution % per_tok:
        raise SystemExit(f"--resolution {resolution} is not a multiple of {per_tok} for preset {preset_name}")
    rank = args.rank or default_rank(preset.builtin_components)

    torch.manual_seed(args.seed)  # the experts' A matrices (Kaiming) come from the global RNG
    base = build_base_transformer(preset_name, torch_dtype=dtype, seed=args.seed, device=device)
    model = CoLoGenTransformer(base, PRWConfig(num_experts=1, rank=rank, router_noise=False))
    for _ in range(args.experts - 1):
        model.add_expert()
    model.to(device=device, dtype=dtype).eval()
    _randomise_adapters(model, args.seed, scale=0.02 if dtype == torch.bfloat16 else 0.5)

    cfg = base.config
    th = tw = resolution // per_tok
    lt = args.text_length or preset.text_max_length
    g = torch.Generator().manual_seed(args.seed + 1)
    mk = lambda *s: torch.randn(*s, generator=g).to(device=device, dtype=dtype)  # noqa: E731
    inputs = dict(
        noise=mk(args.batch, th * tw, cfg.in_channels),
        prompt_embeds=mk(args.batch, lt, cfg.joint_attention_dim),
        pooled=mk(args.batch, cfg.pooled_projection_dim),
        img_ids=latent_ids(th, tw, device=device),
        txt_ids=text_ids(lt, device=device),
        source_tokens=mk(args.batch, th * tw, cfg.in_channels),
        source_ids=source_ids(th, tw, "aligned", device=device),
        guidance=args.guidance,
    )
    info = dict(preset=preset_name, device=str(device),
                device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                dtype=dtype_name, resolution=resolution, batch=args.batch, steps=args.steps, text_tokens=lt,
                noisy_tokens=th * tw, source_tokens=th * tw, experts=args.experts, rank=rank,
                torch_threads=torch.get_num_threads())
    return model, inputs, device, info


def timed(model, inputs, device, steps: int, cached: bool) -> tuple[float, torch.Tensor]:
    """Seconds for one `denoise` call of `steps` steps, and its output (B, Lx, C)."""
    _sync(device)
    start = time.perf_counter()
    out = denoise(model, num_steps=steps, use_source_cache=cached, **inputs)
    _sync(device)
    return time.perf_counter() - start, out


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR (dB) of ``a`` against the reference ``b`` over ``b``'s value range (finite values only)."""
    finite = torch.isfinite(a) & torch.isfinite(b)
    a, b = a[finite].double(), b[finite].double()
    mse = float((a - b).square().mean())
    peak = float(b.max() - b.min())
    return float("inf") if mse == 0 else 10 * math.log10(peak * peak / mse)


def run_runtime_comparison(args: argparse.Namespace) -> dict:
    """Cached sampling: the default runtime, then the same model with the chosen runtime (same inputs)."""
    from lit_cologen.models.runtime import configure_runtime

    model, inputs, device, info = build(args)
    rounds = args.rounds or (1 if device.type == "cuda" else 3)
    timed(model, inputs, device, max(1, args.warmup_steps), True)
    default = [timed(model, inputs, device, args.steps, True) for _ in range(rounds)]
    configure_runtime(model, device=device, compile=args.compile, compile_backend=args.compile_backend, fp8=args.fp8,
                      base_quantization=args.base_quantization, training=False)
    warm_s, _ = timed(model, inputs, device, max(1, args.warmup_steps), True)  # compilation happens here
    chosen = [timed(model, inputs, device, args.steps, True) for _ in range(rounds)]
    ref, out = default[-1][1].float(), chosen[-1][1].float()
    best_d, best_c = min(s for s, _ in default), min(s for s, _ in chosen)
    finite = torch.isfinite(ref) & torch.isfinite(out)
    return {**info, "runtime": {"compile": args.compile, "fp8": args.fp8, "base_quantization": args.base_quantization},
            "default_s": round(best_d, 4), "chosen_s": round(best_c, 4), "ratio": round(best_c / best_d, 4),
            "chosen_warmup_s": round(warm_s, 2), "target_ratio": TARGET_RATIO,
            "max_abs_diff": float((out - ref).abs()[finite].max()), "psnr_db": round(psnr(out, ref), 2),
            "notes": []}


def run(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    if runtime_chosen(args):
        return run_runtime_comparison(args)
    model, inputs, device, info = build(args)
    notes = []
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    rounds = args.rounds or (1 if device.type == "cuda" else 5)
    for cached in (True, False):  # warm-up: kernels, allocator, autotuning
        timed(model, inputs, device, max(1, args.warmup_steps), cached)
    times: dict[str, list[float]] = {"cached": [], "uncached": []}
    outputs = {}
    for _ in range(rounds):
        for name, cached in (("uncached", False), ("cached", True)):
            seconds, out = timed(model, inputs, device, args.steps, cached)
            times[name].append(seconds)
            outputs[name] = out
    a, b = outputs["cached"].float(), outputs["uncached"].float()
    finite = torch.isfinite(a) & torch.isfinite(b)
    if not bool(finite.all()):
        notes.append(f"{int((~finite).sum())} non-finite output values (random weights) excluded from the difference")
    diff = float((a - b).abs()[finite].max()) if bool(finite.any()) else float("nan")
    scale = float(b.abs()[finite].max()) if bool(finite.any()) else float("nan")
    best_c, best_u = min(times["cached"]), min(times["uncached"])
    ratio = best_c / best_u
    return {
        **info,
        "cached_s": round(best_c, 4), "uncached_s": round(best_u, 4),
        "ratio": round(ratio, 4),
        "median_ratio": round(statistics.median(times["cached"]) / statistics.median(times["uncached"]), 4),
        # each round runs uncached then cached back to back: the median of their ratios resists load drifting
        "paired_median_ratio": round(statistics.median(c / u for c, u in zip(times["cached"], times["uncached"])), 4),
        "target_ratio": TARGET_RATIO, "meets_target": ratio <= TARGET_RATIO,
        "max_abs_diff": diff, "output_max_abs": scale,
        "rounds_s": {k: [round(x, 4) for x in v] for k, v in times.items()}, "notes": notes,
    }


def text_lines(result: dict) -> list[str]:
    if "runtime" in result:
        chosen = ", ".join(f"{k}={v}" for k, v in result["runtime"].items())
        return [
            f"{result['preset']} on {result['device_name']} ({result['dtype']}), {result['resolution']}^2 editing, "
            f"{result['steps']} steps with the source K/V cache",
            f"  default runtime: {result['default_s']:.3f} s",
            f"  chosen ({chosen}): {result['chosen_s']:.3f} s (first run incl. compilation: "
            f"{result['chosen_warmup_s']:.1f} s)",
            f"  ratio: {result['ratio']:.3f} (target <= {TARGET_RATIO} for compile + fp8)",
            f"  max |chosen - default|: {result['max_abs_diff']:.3g}; PSNR {result['psnr_db']} dB",
        ]
    return [
        f"{result['preset']} on {result['device_name']} ({result['dtype']}), {result['resolution']}^2 editing, "
        f"batch {result['batch']}, {result['steps']} steps, {result['noisy_tokens']} noisy + "
        f"{result['source_tokens']} source + {result['text_tokens']} text tokens, {result['experts']} experts "
        f"(rank {result['rank']})",
        f"  uncached (source recomputed each step): {result['uncached_s']:.3f} s",
        f"  cached   (source K/V computed once):    {result['cached_s']:.3f} s",
        f"  ratio: {result['ratio']:.3f} (target <= {TARGET_RATIO}; ratio of medians {result['median_ratio']:.3f}, "
        f"median of per-round ratios {result['paired_median_ratio']:.3f})",
        f"  max |cached - uncached|: {result['max_abs_diff']:.3g} (outputs up to {result['output_max_abs']:.3g})",
    ]


def main(argv=None) -> int:
    args = parse_args(argv)
    return print_result(run(args), args.json, text_lines)


if __name__ == "__main__":
    sys.exit(main())
