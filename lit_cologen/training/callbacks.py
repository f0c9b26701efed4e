"""Training observability: routing statistics, throughput, per-task sample grids (the loggers + PNG) and the
console report of a run (one-line progress reports for logs, the numbers of the end-of-run summary)."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from PIL import Image

from lit_cologen.data.tasks import source_layout
from lit_cologen.models.latents import latent_ids, source_ids, text_ids, unpack_latents
from lit_cologen.sampling import denoise
from lit_cologen.training.loggers import log_histograms, log_image


class RoutingStatsCallback(L.Callback):
    """Every `every` steps: per-block histograms of the chosen expert, per task and per timestep bucket, and the
    share of each expert (scalars), to every logger of the trainer (``loggers.log_histograms``: a histogram in
    TensorBoard and W&B, the per-expert shares as scalars in CSV and MLflow). Reads the step's ``outputs["routing"]``
    (a :class:`~lit_cologen.training.module.RoutingRecord`) and copies it to the host only on the steps it logs."""

    def __init__(self, every: int = 50):
        self.every = every

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.every or not trainer.is_global_zero:
            return
        record = outputs.get("routing") if isinstance(outputs, dict) else None
        if record is None or not record.decisions or not trainer.loggers:
            return
        step, tasks, ts = trainer.global_step, record.tasks, record.t.tolist()
        n = pl_module.transformer.num_experts
        edges, labels = np.arange(n + 1) - 0.5, [f"expert_{k}" for k in range(n)]
        per_task: dict[str, list] = defaultdict(list)
        per_bucket: dict[str, list] = defaultdict(list)
        from lit_cologen.training.module import _bucket

        blocks: dict[str, torch.Tensor] = {}
        for block, (index, _probs) in enumerate(record.decisions):
            index = index.cpu()
            blocks[f"routing/block_{block:02d}"] = index.float()
            flat = index.reshape(index.shape[0], -1)
            for i, task in enumerate(tasks[: flat.shape[0]]):
                per_task[task].append(flat[i])
                per_bucket[_bucket(ts[i])].append(flat[i])
        log_histograms(trainer.loggers, blocks, step, edges, labels)
        groups = {f"{name}/{key}": torch.cat(chunks).float()
                  for name, by_key in (("routing_task", per_task), ("routing_t", per_bucket))
                  for key, chunks in by_key.items()}
        log_histograms(trainer.loggers, groups, step, edges, labels, shares_everywhere=True)


def format_duration(seconds: float) -> str:
    """A short human duration: ``12.3s``, ``7m05s``, ``1h05m``, ``2d03h``."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(round(seconds)), 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h{m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d{h:02d}h"


class ProgressReport(L.Callback):
    """The console report of a run, on global rank zero.

    With ``lines`` (the console is not a terminal, e.g. a SLURM log, or the bar is off), one line every ``every``
    optimizer steps and at the last step::

        step 120/1000 loss 0.1234 1.9 samples/s eta 7m05s

    ``loss``: the mean training loss of the micro-batches since the previous line; ``samples/s``: global samples
    (steps x ``global_batch``) per second over the same window (validation time included); ``eta``: the remaining steps
    at this run's average time per step so far. The lines go to the ``lit_cologen.train`` logger (INFO).

    Whatever ``lines`` is, it keeps the numbers of the end-of-run summary: ``start_step`` (the global step this run
    started from: > 0 when resumed), ``steps_this_run``, ``seconds`` (training time of this run, validation
    included), ``samples_per_s`` and ``train_loss`` (the mean over the last window, ``loss_steps`` steps).
    """

    def __init__(self, every: int, global_batch: int, lines: bool = True,
                 logger: logging.Logger | None = None) -> None:
        self.every, self.global_batch, self.lines = max(1, int(every)), int(global_batch), lines
        self._logger = logger or logging.getLogger("lit_cologen.train")
        self.start_step = self.end_step = 0
        self._t0 = self._t_end = None
        self._win_t = self._win_step = None
        self._loss_sum, self._loss_n = 0.0, 0
        self.train_loss: float | None = None
        self.loss_steps = 0

    def on_train_start(self, trainer, pl_module) -> None:
        self.start_step = self.end_step = trainer.global_step
        self._t0 = self._win_t = time.perf_counter()
        self._t_end = None
        self._win_step = trainer.global_step
        self._loss_sum, self._loss_n = 0.0, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None:  # summed on the device: read (one host sync) only on reporting steps
            self._loss_sum = self._loss_sum + loss.detach().double()
            self._loss_n += 1
        step = trainer.global_step
        self.end_step = step
        if step == self._win_step or (step % self.every and step != trainer.max_steps):
            return  # mid-accumulation, or not a reporting step
        now = time.perf_counter()
        window, dt = step - self._win_step, max(now - self._win_t, 1e-9)
        self.train_loss = float(self._loss_sum) / self._loss_n if self._loss_n else None
        self.loss_steps = window
        if self.lines and trainer.is_global_zero:
            per_step = (now - self._t0) / max(step - self.start_step, 1)
            eta = format_duration(per_step * max(trainer.max_steps - step, 0))
            loss_text = f"{self.train_loss:.4f}" if self.train_loss is not None else "-"
            self._logger.info("step %d/%d loss %s %.1f samples/s eta %s", step, trainer.max_steps, loss_text,
                          window * self.global_batch / dt, eta)
        self._win_t, self._win_step = now, step
        self._loss_sum, self._loss_n = 0.0, 0

    def on_train_end(self, trainer, pl_module) -> None:
        self._t_end = time.perf_counter()

    @property
    def steps_this_run(self) -> int:
        return self.end_step - self.start_step

    @property
    def seconds(self) -> float:
        if self._t0 is None:
            return 0.0
        return (self._t_end if self._t_end is not None else time.perf_counter()) - self._t0

    @property
    def samples_per_s(self) -> float | None:
        return self.steps_this_run * self.global_batch / self.seconds if self.seconds > 0 else None


class ThroughputCallback(L.Callback):
    """Logs samples/s (global) over each logging window."""

    def __init__(self, every: int = 10):
        self.every, self._t0, self._step0 = every, None, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._t0 is None:
            self._t0, self._step0 = time.perf_counter(), trainer.global_step
            return
        done = trainer.global_step - self._step0
        if done >= self.every:
            dt = time.perf_counter() - self._t0
            rate = done * pl_module.cfg.train.global_batch / dt
            pl_module.log("train/samples_per_s", rate, prog_bar=True, logger=True, rank_zero_only=True)
            self._t0, self._step0 = time.perf_counter(), trainer.global_step


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) in [-1, 1] -> PIL images."""
    arr = ((images.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]


def grid(rows: list[list[Image.Image]]) -> Image.Image:
    """Paste rows of equally sized images into one image."""
    w, h = rows[0][0].size
    out = Image.new("RGB", (w * max(len(r) for r in rows), h * len(rows)), "white")
    for r, row in enumerate(rows):
        for c, im in enumerate(row):
            out.paste(im, (c * w, r * h))
    return out


@torch.no_grad()
def sample_batch(module, batch: dict[str, Any], num_steps: int, seed: int = 0) -> torch.Tensor:
    """Generate (B, 3, H, W) in [-1, 1] for a batch (deterministic routing, fixed seed)."""
    was_training = module.transformer.training
    module.transformer.eval()
    try:
        embeds, pooled, x0, src, (th, tw) = module.encode_batch(batch, list(batch["prompt"]))
        dtype = module.transformer.base.x_embedder.weight.dtype
        gen = torch.Generator().manual_seed(seed)
        noise = torch.randn(x0.shape, generator=gen).to(module.device, dtype)
        out = torch.empty_like(noise)
        img_ids, txt = latent_ids(th, tw, device=module.device), text_ids(embeds.shape[1], device=module.device)
        layouts = [source_layout(t) for t in batch["task"]] if src is not None else ["none"] * len(batch["task"])
        for layout in sorted(set(layouts)):
            sel = torch.tensor([i for i, item_layout in enumerate(layouts) if item_layout == layout],
                               device=module.device)
            kw = {}
            if layout != "none":
                kw = dict(source_tokens=src[sel].to(dtype), source_ids=source_ids(th, tw, layout, device=module.device))
            out[sel] = denoise(module.transformer, noise[sel], embeds[sel].to(dtype), pooled[sel].to(dtype), img_ids, txt,
                               num_steps=num_steps, guidance=module.cfg.loss.guidance if module.cfg.loss.guidance else None,
                               **kw)
        codec = module.codec
        return codec.decode(unpack_latents(out, th * 2, tw * 2).to(codec.dtype)).float()
    finally:
        module.transformer.train(was_training)


@torch.no_grad()
def batch_pixels(module, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """(source, target) images (B, 3, H, W) in [-1, 1] of a batch: as loaded, or decoded from encoded latents."""
    if "target" in batch:
        return batch["source"], batch["target"]
    codec = module.codec
    return tuple(codec.decode(batch[k].to(codec.device, codec.dtype)).float().cpu()
                 for k in ("source_latent", "target_latent"))


class SampleGridCallback(L.Callback):
    """Every `every` steps: a grid with one row per sample [source | generated | target], per task, saved as PNG
    under `<output_dir>/samples/` and logged as ``samples`` to every logger that holds images (``loggers.log_image``:
    TensorBoard, W&B, MLflow; not CSV)."""

    def __init__(self, batch: dict[str, Any], every: int, num_steps: int, out_dir: str | Path):
        self.batch, self.every, self.num_steps, self.out_dir = batch, every, num_steps, Path(out_dir)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if not self.every or step % self.every or not trainer.is_global_zero:
            return
        generated = to_pil(sample_batch(pl_module, self.batch, self.num_steps))
        sources, targets = (to_pil(pixels) for pixels in batch_pixels(pl_module, self.batch))
        rows = [[s, g, t] for s, g, t in zip(sources, generated, targets)]
        image = grid(rows)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"step_{step:07d}.png"
        tmp = path.with_suffix(".tmp.png")
        image.save(tmp)
        tmp.replace(path)
        log_image(trainer.loggers, "samples", image, step)
