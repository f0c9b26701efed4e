"""Aspect-ratio buckets (``data.buckets``): enumeration, assignment, paired resizing, one bucket per batch, exact
mid-epoch resume, a tiny training run on mixed-aspect shards, bucketed encoding, and the config refusals."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from tiny_run import tiny_overrides

from lit_cologen.config import ConfigError, load_config
from lit_cologen.data.buckets import auto_buckets, bucketed, nearest_bucket, parse_buckets, resolve_buckets
from lit_cologen.data.config import DataConfig
from lit_cologen.data.datamodule import CoLoGenDataModule
from lit_cologen.data.decode import decode_raw
from lit_cologen.data.encoded import load_latents, read_manifest
from lit_cologen.data.examples import example_from_sample
from lit_cologen.data.schema import Sample
from lit_cologen.data.shapes import make_sample
from lit_cologen.data.shards import ShardWriter, SkipLog, build_index, iter_shard

RES, STEP = 32, 8  # tiny preset: 4 pixels per token; buckets of multiples of 8 within 32 x 32 pixels
TASKS3 = ("inpaint", "edit", "subject")
SIZES = [(64, 64), (96, 54), (54, 96), (80, 40), (40, 80), (72, 60)]  # PIL (w, h): square, 16:9, 9:16, 2:1, ...


def mixed_sample(task: str, i: int) -> Sample:
    """A Shapes-5 sample resized to SIZES[i % 6]: target, aligned source and mask alike; a subject reference stays
    square (it is not pixel-aligned)."""
    s = make_sample(task, i, resolution=64)
    size = SIZES[i % len(SIZES)]
    target = s.target.resize(size, Image.BICUBIC)
    source = s.source if task == "subject" else s.source.resize(size, Image.BICUBIC)
    mask = None if s.mask is None else s.mask.resize(source.size, Image.NEAREST)
    return Sample(s.key, s.task, s.prompt, target, source, mask, s.cond_type, s.meta)


@pytest.fixture(scope="module")
def mixed_dir(tmp_path_factory) -> Path:
    """12 samples per task of TASKS3 in mixed aspect ratios, 4 per shard (9 shards), with an index.json."""
    d = tmp_path_factory.mktemp("mixed")
    for task in TASKS3:
        with ShardWriter(d, f"mixed-{task}", maxcount=4) as w:
            for i in range(12):
                w.write(mixed_sample(task, i))
    build_index(d)
    return d


def bucket_cfg(shards: Path, **kw) -> DataConfig:
    base = dict(source="shards", train_shards=[str(shards)], val_shards=[str(shards)], tasks=list(TASKS3),
                resolution=RES, buckets="auto", bucket_step=STEP, batch_size=2, samples_per_epoch=24,
                shuffle_buffer=8)
    base.update(kw)
    return DataConfig(**base)


def assert_one_bucket(batch: dict, buckets) -> tuple[int, int]:
    """Every tensor of the batch has the same (h, w), one of ``buckets``; returns it."""
    h, w = batch["target"].shape[-2:]
    assert batch["source"].shape[-2:] == batch["mask"].shape[-2:] == (h, w)
    assert (h, w) in buckets
    return int(h), int(w)


# ------------------------------------------------------------------------------------------------- enumeration


@pytest.mark.parametrize("res,step", [(512, 16), (1024, 16), (64, 16), (32, 8), (32, 4), (40, 16)])
def test_auto_buckets_respect_the_budget_and_the_granularity(res, step):
    buckets = auto_buckets(res, step)
    budget = res * res
    assert len(buckets) == len(set(buckets)) > 0
    for h, w in buckets:
        assert h % step == 0 and w % step == 0 and h * w <= budget
        assert max(h, w) <= 4 * min(h, w)
        # maximal: one more step on either side leaves the budget or the ratio limit (a fixed token budget)
        for hh, ww in ((h + step, w), (h, w + step)):
            assert hh * ww > budget or max(hh, ww) > 4 * min(hh, ww)
        assert (w, h) in buckets  # portrait and landscape alike
    if res % step == 0:
        assert (res, res) in buckets
    ratios = [w / h for h, w in buckets]
    assert ratios == sorted(ratios)  # tall -> wide
    assert resolve_buckets("auto", res, step) == buckets
    assert resolve_buckets(None, res, step) is None
    assert auto_buckets(512, 16, max_ratio=2.0) == [b for b in auto_buckets(512, 16) if max(b) <= 2 * min(b)]


def test_a_16_9_pair_keeps_its_aspect_ratio_and_both_images_share_the_bucket():
    buckets = auto_buckets(512, 16)
    w, h = 1920, 1080
    bh, bw = nearest_bucket(buckets, w, h)
    assert (bh, bw) == min(buckets, key=lambda b: abs(math.log(b[1] / b[0]) - math.log(16 / 9)))
    assert abs(bw - bh * 16 / 9) <= 16 and abs(bh - bw * 9 / 16) <= 16  # within one token of the ideal shape
    # a small 16:9 pair (source = a copy of the target): both come out at the bucket, with the same resize + crop
    res, step = 128, 16
    buckets = auto_buckets(res, step)
    img = (np.arange(180 * 320 * 3, dtype=np.uint32).reshape(180, 320, 3) % 251).astype(np.uint8)
    target, source = Image.fromarray(img), Image.fromarray(img.copy())
    mask = Image.fromarray(((np.arange(320)[None, :] // 40 % 2) * 255 * np.ones((180, 1))).astype(np.uint8), "L")
    size = nearest_bucket(buckets, *target.size)
    assert abs(size[1] - size[0] * 16 / 9) <= step
    for crop, rng in (("center", None), ("random", np.random.default_rng(3))):
        ex = example_from_sample(Sample("k", "inpaint", "p", target, source, mask), size, crop, rng)
        assert ex["target"].shape == ex["source"].shape == (3, *size) and ex["mask"].shape == (1, *size)
        assert torch.equal(ex["source"], ex["target"])  # pixel-aligned: the same resize and crop
    # a subject reference (square) is fitted to the target's bucket on its own
    ref = Image.fromarray(img[:, :180])
    ex = example_from_sample(Sample("k", "subject", "p", target, ref), size)
    assert ex["target"].shape == ex["source"].shape == (3, *size)
    # square (h, w) == the int resolution (the default path is unchanged)
    s = mixed_sample("inpaint", 1)
    a, b = example_from_sample(s, 32), example_from_sample(s, (32, 32))
    assert all(torch.equal(a[k], b[k]) for k in ("target", "source", "mask"))


def test_bucketed_batches_are_one_bucket_and_skipping_replays():
    def ex(i: int, hw: tuple[int, int]) -> dict:
        return {"key": str(i), "task": "edit", "prompt": "", "raw_prompt": "", "cond_type": "", "meta": {},
                "target": torch.zeros(3, *hw, dtype=torch.uint8), "source": torch.zeros(3, *hw, dtype=torch.uint8),
                "mask": torch.zeros(1, *hw, dtype=torch.uint8)}

    shapes = [(8, 16), (16, 8), (8, 16), (16, 16), (16, 8), (8, 16), (16, 8), (16, 16), (8, 16)]
    exs = [ex(i, s) for i, s in enumerate(shapes)]
    full = [b["key"] for b in bucketed(exs, 2)]
    assert full == [["0", "2"], ["1", "4"], ["3", "7"], ["5", "8"], ["6"]]  # the partial bucket is flushed at the end
    assert [b["key"] for b in bucketed(exs, 2, flush=False)] == full[:4]
    assert [b["key"] for b in bucketed(exs, 2, n_batches=2, skip=1)] == full[1:3]


# ------------------------------------------------------------------------------------------------- the loaders


@pytest.mark.parametrize("workers", [0, 2])
def test_every_batch_is_one_bucket(mixed_dir, workers):
    cfg = bucket_cfg(mixed_dir, num_workers=workers, crop="random")
    buckets = cfg.bucket_list()
    dm = CoLoGenDataModule(cfg)
    seen = [assert_one_bucket(b, buckets) for b in dm.train_dataloader()]
    assert len(seen) == 12 and len(set(seen)) >= 3  # fixed-length epochs, several buckets
    val = list(dm.val_dataloader())
    keys = [k for b in val for k in b["key"]]
    assert len(keys) == len(set(keys)) == 36  # held out: every sample once (the partial buckets are flushed)
    for b in val:
        assert_one_bucket(b, buckets)
        for meta, tgt in zip(b["meta"], b["target"]):  # each sample at the bucket nearest its own aspect ratio
            w, h = SIZES[meta["index"] % len(SIZES)]
            assert tuple(tgt.shape[-2:]) == nearest_bucket(buckets, w, h)


def test_the_default_stays_square(mixed_dir):
    cfg = bucket_cfg(mixed_dir, buckets=None)
    for b in CoLoGenDataModule(cfg).train_dataloader():
        assert b["target"].shape[-2:] == b["source"].shape[-2:] == (RES, RES)


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch_with_buckets_reproduces_the_batches(mixed_dir, workers):
    """A loader resumed after k batches yields exactly batches k, k+1, ... of the uninterrupted epoch: the replay
    rebuilds the partially filled buckets (and the random crops)."""
    cfg = bucket_cfg(mixed_dir, num_workers=workers, crop="random", samples_per_epoch=20)
    full = list(CoLoGenDataModule(cfg).train_dataloader())
    assert len(full) == 10
    for k in (1, 3, 6):
        loader = CoLoGenDataModule(cfg).train_dataloader()
        loader.dataset.resume_at(0, k)
        rest = list(loader)
        assert [b["key"] for b in rest] == [b["key"] for b in full[k:]]
        for a, b in zip(rest, full[k:]):
            assert torch.equal(a["target"], b["target"]) and torch.equal(a["source"], b["source"])


def test_shapes5_with_buckets_is_one_square_bucket():
    cfg = DataConfig(resolution=RES, buckets="auto", bucket_step=STEP, batch_size=3, samples_per_epoch=6)
    for b in CoLoGenDataModule(cfg).train_dataloader():
        assert b["target"].shape[-2:] == (RES, RES)


# ------------------------------------------------------------------------------------------------- training


class GridProbe(L.Callback):
    """Records the token grid of every training batch and, by wrapping the transformer's forward, the noisy
    tokens, img_ids, source tokens and source_ids of every forward of that batch (one per source layout)."""

    def __init__(self) -> None:
        self.grid: tuple[int, int] | None = None
        self.grids: list[tuple[int, int]] = []
        self.calls: list[tuple] = []

    def on_fit_start(self, trainer, pl_module):
        forward = pl_module.transformer.forward

        def recording(hidden, enc, pooled, t, img_ids, txt_ids, **kw):
            sids = kw.get("source_ids")
            src = kw.get("source_hidden_states")
            self.calls.append((self.grid, tuple(hidden.shape), img_ids.detach().cpu(),
                               None if src is None else tuple(src.shape), None if sids is None else sids.detach().cpu()))
            return forward(hidden, enc, pooled, t, img_ids, txt_ids, **kw)

        pl_module.transformer.forward = recording

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if "target_latent" in batch:  # encoded: latents (B, C, H / 2, W / 2), 2 x 2 latents per token
            assert batch["target_latent"].shape == batch["source_latent"].shape
            self.grid = (batch["target_latent"].shape[-2] // 2, batch["target_latent"].shape[-1] // 2)
        else:
            assert_one_bucket(batch, auto_buckets(RES, STEP))
            self.grid = (batch["target"].shape[-2] // 4, batch["target"].shape[-1] // 4)  # tiny: 4 pixels per token
        self.grids.append(self.grid)

    def check(self, steps: int) -> None:
        """Every forward used img_ids / source_ids of its batch's own grid; several grids were trained."""
        from lit_cologen.models.latents import latent_ids, source_ids

        assert len(self.grids) == steps and len(set(self.grids)) >= 2  # non-square grids were trained
        assert {c[0] for c in self.calls} == set(self.grids)
        for (th, tw), shape, img_ids, src_shape, sids in self.calls:
            assert shape[1] == th * tw and torch.equal(img_ids, latent_ids(th, tw))
            assert src_shape is not None and src_shape[1] == th * tw
            assert any(torch.equal(sids, source_ids(th, tw, layout)) for layout in ("aligned", "reference"))


def _bucket_run(tmp_path: Path, shards: Path, steps: int, **extra) -> GridProbe:
    from lit_cologen.training.config import load_step_config
    from lit_cologen.training.run import run_step

    probe = GridProbe()
    cfg = load_step_config(None, tiny_overrides(tmp_path / "run", steps=steps, **{
        "data.source": "shards", "data.train_shards": f"[{shards}]", "data.tasks": "[inpaint,edit,subject]",
        "data.buckets": "auto", "data.bucket_step": STEP, "data.shuffle_buffer": 8, "train.val_every": 0,
        "train.checkpoint_every": 3, **extra,
    }))
    assert cfg.data.bucket_list() == auto_buckets(RES, STEP)
    run_step(cfg, extra_callbacks=[probe], enable_progress=False)
    return probe


def test_tiny_training_on_mixed_aspect_shards_uses_the_batch_grid(mixed_dir, tmp_path):
    _bucket_run(tmp_path, mixed_dir, 6).check(6)


def test_tiny_training_on_bucketed_encoded_shards(encoded_dir, tmp_path):
    probe = _bucket_run(tmp_path, encoded_dir, 4, **{"data.encoded": "true", "data.batch_size": 1,
                                                     "train.global_batch": 1})
    probe.check(4)


def test_bucket_sides_must_be_whole_tokens_of_the_preset(mixed_dir, tmp_path):
    from lit_cologen.training.config import load_step_config
    from lit_cologen.training.module import CoLoGenModule

    cfg = load_step_config(None, tiny_overrides(tmp_path / "run", **{
        "data.source": "shards", "data.train_shards": f"[{mixed_dir}]", "data.tasks": "[inpaint]",
        "data.buckets": "[[30,30]]", "data.bucket_step": 6, "train.val_every": 0,
    }))
    with pytest.raises(ConfigError, match="data.bucket_step"):
        CoLoGenModule(cfg)


# ------------------------------------------------------------------------------------------------- encode


@pytest.fixture(scope="module")
def encoded_dir(mixed_dir, tmp_path_factory) -> Path:
    """mixed_dir encoded for the tiny preset with auto buckets (summary in ``encode_summary.json``)."""
    import json

    from lit_cologen.training.encode import encode_shards

    out = tmp_path_factory.mktemp("enc") / "lat"
    summary = encode_shards([str(mixed_dir)], out, preset="tiny", resolution=RES, batch_size=5, device="cpu",
                            progress=False, buckets="auto", bucket_step=STEP)
    (out.parent / "encode_summary.json").write_text(json.dumps({k: summary[k] for k in ("samples", "skipped")}))
    return out


def test_encode_with_buckets_writes_bucket_shaped_latents(mixed_dir, encoded_dir):
    import json

    from lit_cologen.models.codecs import PixelShuffleCodec
    from lit_cologen.training.encode import encode_shards

    out = encoded_dir
    summary = json.loads((out.parent / "encode_summary.json").read_text())
    assert summary["samples"] == 36 and summary["skipped"]["total"] == 0
    buckets = auto_buckets(RES, STEP)
    manifest = read_manifest(out)
    assert [tuple(b) for b in manifest["buckets"]] == buckets and manifest["latent_side"] is None
    codec = PixelShuffleCodec(2)
    skips = SkipLog(slots=1, shared=False)
    originals = {r.key: r for url in sorted(mixed_dir.glob("*.tar")) for r in iter_shard(str(url), skips)}
    shapes = set()
    for url in sorted(out.glob("*.tar")):
        for raw in iter_shard(str(url), skips):
            lat = load_latents(raw.members["latents.safetensors"])
            sample = decode_raw(originals[raw.key])
            size = nearest_bucket(buckets, *sample.target.size)
            assert lat["target"].shape[1:] == lat["source"].shape[1:] == (size[0] // 2, size[1] // 2)
            want = codec.encode(example_from_sample(sample, size)["target"][None].float() / 127.5 - 1.0)[0]
            torch.testing.assert_close(lat["target"], want, rtol=0, atol=0)
            shapes.add(tuple(lat["target"].shape[1:]))
    assert len(shapes) >= 3
    # loading the encoded shards groups by latent shape
    dm = CoLoGenDataModule(bucket_cfg(out, encoded=True, val_shards=[]))
    lat_shapes = {(h // 2, w // 2) for h, w in buckets}
    for b in dm.train_dataloader():
        assert b["target_latent"].shape[-2:] == b["source_latent"].shape[-2:]
        assert tuple(b["target_latent"].shape[-2:]) in lat_shapes
    # the config must say the same buckets as the encoding (and the square shards refuse buckets)
    with pytest.raises(ConfigError, match="data.buckets"):
        CoLoGenDataModule(bucket_cfg(out, encoded=True, val_shards=[], buckets=None)).setup()
    with pytest.raises(ConfigError, match="data.buckets"):
        CoLoGenDataModule(bucket_cfg(out, encoded=True, val_shards=[], buckets=[[32, 32]])).setup()
    again = encode_shards([str(mixed_dir)], out, preset="tiny", resolution=RES, device="cpu", progress=False,
                          buckets="auto", bucket_step=STEP)
    assert again["shards_written"] == 0
    with pytest.raises(ValueError, match="other settings"):
        encode_shards([str(mixed_dir)], out, preset="tiny", resolution=RES, device="cpu", progress=False)


# ------------------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("buckets,key", [
    ("square", r"data\.buckets"),
    ([], r"data\.buckets"),
    ([[32, 30]], r"data\.buckets\[0\]"),  # not a multiple of the step
    ([[32, 32], [40, 32]], r"data\.buckets\[1\]"),  # over the pixel budget
    ([[32, 32], [32]], r"data\.buckets\[1\]"),  # not [h, w]
    ([[16, 16], [16, 16]], r"data\.buckets\[1\]"),  # twice
    ([[16.0, 16]], r"data\.buckets\[0\]"),
])
def test_bad_buckets_are_refused_naming_the_key(buckets, key):
    with pytest.raises(ConfigError, match=key):
        DataConfig(resolution=RES, buckets=buckets, bucket_step=STEP)


def test_bucket_config_loading_and_other_refusals(tmp_path):
    with pytest.raises(ConfigError, match="data.bucket_step"):
        DataConfig(bucket_step=3)
    with pytest.raises(ConfigError, match="data.bucket_max_ratio"):
        DataConfig(bucket_max_ratio=0.5)
    with pytest.raises(ConfigError, match="data.buckets"):
        DataConfig(resolution=16, buckets="auto", bucket_step=32)  # no bucket fits
    yaml = tmp_path / "c.yaml"
    yaml.write_text("data:\n  resolution: 32\n  bucket_step: 8\n  buckets: [[32, 32], [24, 40]]\n")
    cfg = load_config(DataConfig, yaml, section="data")
    assert cfg.bucket_list() == [(32, 32), (24, 40)]
    cfg = load_config(DataConfig, None, ["resolution=32", "bucket_step=8", "buckets=auto"], section="data")
    assert cfg.bucket_list() == auto_buckets(32, 8)
    assert parse_buckets("auto") == "auto" and parse_buckets(None) is None
    assert parse_buckets("512x768,768x512") == [[512, 768], [768, 512]]
    with pytest.raises(ValueError, match="HEIGHTxWIDTH"):
        parse_buckets("wide")


def test_encode_command_line_with_buckets(mixed_dir, encoded_dir, tmp_path):
    """`cologen data encode --buckets auto --bucket-step S` writes the same manifest and latents as the Python call."""
    from lit_cologen.cli import main

    out = tmp_path / "cli"
    rc = main(["data", "encode", str(mixed_dir), "--out", str(out), "--preset", "tiny", "--resolution", str(RES),
               "--device", "cpu", "--batch-size", "5", "--buckets", "auto", "--bucket-step", str(STEP)])
    assert rc == 0
    assert read_manifest(out)["buckets"] == read_manifest(encoded_dir)["buckets"]
    skips = SkipLog(slots=1, shared=False)
    shapes = {raw.key: load_latents(raw.members["latents.safetensors"])["target"].shape
              for url in sorted(out.glob("*.tar")) for raw in iter_shard(str(url), skips)}
    want = {raw.key: load_latents(raw.members["latents.safetensors"])["target"].shape
            for url in sorted(encoded_dir.glob("*.tar")) for raw in iter_shard(str(url), skips)}
    assert shapes == want and len(shapes) == 36
