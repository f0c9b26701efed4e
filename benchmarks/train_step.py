"""Training-step time and peak memory through the real CoLoGenModule and Lightning Trainer.

The base is random-init (the preset's shape, built directly on the device in the base dtype); the batches are
pre-encoded latents with cached text embeddings, as with `cologen data encode`, so neither the VAE nor the text
encoders are resident. What is timed is one optimizer step of the module as `cologen train` runs it: forward of
source + noisy + text tokens through the routed experts, flow-matching + veteran loss, backward (gradient
checkpointing), gradient clipping, AdamW on the fp32 experts + router, and Lightning's loop and callbacks around it.
The model is in the state of the last curriculum step: `--experts` experts, the newest trainable, veterans frozen.

    python -m benchmarks.train_step --preset flux-dev --resolution 512 --batch 4 --rank 128 --experts 5   # GPU
    python -m benchmarks.train_step --preset tiny --json                                                     # CPU
    python -m benchmarks.train_step --preset small --strategy fsdp --steps 3   # the FSDP path on one GPU
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset

from benchmarks.script_output import default_rank, print_result
from lit_cologen.models.config import PRWConfig
from lit_cologen.models.factory import build_base_transformer
from lit_cologen.models.presets import get_preset
from lit_cologen.models.transformer import CoLoGenTransformer
from lit_cologen.training.config import load_step_config
from lit_cologen.training.module import CoLoGenModule
from lit_cologen.training.trainer import build_trainer


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
    p.add_argument("--warmup", type=int, default=2, help="untimed steps")
    p.add_argument("--steps", type=int, default=5, help="timed steps")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p.parse_args(argv)


class EncodedBatches(IterableDataset):
    """The same encoded batch forever: latents (B, C, h, w) as `cologen data encode` writes them."""

    def __init__(self, batch: dict):
        self.batch = batch

    def __iter__(self):
        while True:
            yield self.batch


class StepTimer(L.Callback):
    """Wall time of every optimizer step (device synchronised at both ends) and the peak device memory."""

    def __init__(self, device: torch.device):
        self.device, self.times, self._t0 = device, [], None

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._sync()
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._sync()
        self.times.append((time.perf_counter() - self._t0) * 1000.0)


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    preset = get_preset(args.preset)
    gpu = device.type == "cuda"
    rank = args.rank or default_rank(preset.builtin_components)
    res = args.resolution or preset.resolution
    out = tempfile.mkdtemp(prefix="cologen-train-step-")
    overrides = [
        f"output_dir={out}", "name=bench", f"model.preset={args.preset}", f"model.prw.rank={rank}",
        f"model.prw.num_experts={args.experts}", f"data.batch_size={args.batch}", f"data.resolution={res}",
        f"train.global_batch={args.batch}", f"train.max_steps={args.warmup + args.steps}",
        f"train.precision={'bf16-mixed' if gpu else '32-true'}", f"train.accelerator={'gpu' if gpu else 'cpu'}",
        "train.devices=1", f"train.strategy={args.strategy}", "train.checkpoint_every=100000", "train.log_every=1",
        "veteran.alpha=0.5", "veteran.rho=0.8", "model.gradient_checkpointing=true",
    ]
    cfg = load_step_config(None, overrides)
    base_dtype = torch.bfloat16 if gpu else torch.float32
    built = time.perf_counter()
    base = build_base_transformer(args.preset, torch_dtype=base_dtype, seed=0, device=device)
    model = CoLoGenTransformer(base, PRWConfig(num_experts=1, rank=rank))
    for _ in range(args.experts - 1):
        model.add_expert()  # veterans frozen, the newest trains
    model.to(device)
    module = CoLoGenModule(cfg, transformer=model)
    build_s = time.perf_counter() - built

    tcfg = base.config
    side = res // (preset.pixels_per_token // 2)  # latent side
    channels = tcfg.in_channels // 4
    g = torch.Generator().manual_seed(0)
    latent_dtype = torch.bfloat16 if gpu else torch.float32
    mk = lambda *s: torch.randn(*s, generator=g).to(latent_dtype)  # noqa: E731
    prompts = [f"bench prompt {i}" for i in range(args.batch)]
    for p in prompts + [""]:
        module.text_cache.put(p, mk(preset.text_max_length, tcfg.joint_attention_dim), mk(tcfg.pooled_projection_dim))
    batch = {
        "key": [f"k{i}" for i in range(args.batch)], "task": [args.task] * args.batch, "prompt": prompts,
        "raw_prompt": prompts, "cond_type": [""] * args.batch, "meta": [{}] * args.batch,
        "target_latent": mk(args.batch, channels, side, side), "source_latent": mk(args.batch, channels, side, side),
    }
    timer = StepTimer(device)
    trainer = build_trainer(cfg, extra_callbacks=[timer], enable_progress=False, module=module)
    if gpu:
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    trainer.fit(module, train_dataloaders=DataLoader(EncodedBatches(batch), batch_size=None))
    fit_s = time.perf_counter() - started
    timed = timer.times[args.warmup:]
    tokens = (side // 2) ** 2 * 2 + preset.text_max_length
    return {
        "preset": args.preset, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if gpu else "cpu", "precision": cfg.train.precision,
        "strategy": args.strategy, "resolution": res, "batch": args.batch, "task": args.task,
        "tokens_per_sample": tokens, "rank": rank, "experts": args.experts,
        "trainable_params": sum(p.numel() for p in module.trainable_parameters() if p.requires_grad),
        "step_ms_median": round(statistics.median(timed), 1), "step_ms_min": round(min(timed), 1),
        "steps_ms": [round(t, 1) for t in timer.times], "samples_per_s": round(args.batch * 1000 / statistics.median(timed), 2),
        "peak_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if gpu else None,
        "frozen_components_loaded": module.frozen_components_loaded, "build_s": round(build_s, 1),
        "fit_s": round(fit_s, 1),
    }


def text_lines(result: dict) -> list[str]:
    return [
        f"{result['preset']} on {result['device_name']} ({result['precision']}, {result['strategy']}), batch "
        f"{result['batch']}, {result['tokens_per_sample']} tokens/sample, rank {result['rank']}, "
        f"{result['experts']} experts",
        f"  step: {result['step_ms_median']} ms median ({result['step_ms_min']} min), "
        f"{result['samples_per_s']} samples/s, peak {result['peak_gib']} GiB",
        f"  frozen components built: {result['frozen_components_loaded']}",
    ]


def main(argv=None) -> int:
    args = parse_args(argv)
    return print_result(run(args), args.json, text_lines)


if __name__ == "__main__":
    sys.exit(main())
