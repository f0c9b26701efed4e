"""Encoded shards (`cologen data encode`): latents + text cache instead of the VAE / text encoders at training time."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
from tar_files import write_tar
from tiny_run import LossRecorder, tiny_overrides

from lit_cologen.config import ConfigError
from lit_cologen.data.config import DataConfig
from lit_cologen.data.datamodule import CoLoGenDataModule
from lit_cologen.data.decode import decode_raw
from lit_cologen.data.encoded import load_latents, read_manifest
from lit_cologen.data.examples import example_from_sample
from lit_cologen.data.shards import SkipLog, iter_shard, write_shapes5_shards
from lit_cologen.models.codecs import PixelShuffleCodec
from lit_cologen.training.config import load_step_config
from lit_cologen.training.encode import encode_shards
from lit_cologen.training.run import run_step

RES = 32


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Image shards (two tasks, 6 samples each) and their encoding for the tiny preset."""
    root = tmp_path_factory.mktemp("enc")
    write_shapes5_shards(root / "img", n_per_task=6, resolution=48, tasks=("inpaint", "edit"), maxcount=4)
    summary = encode_shards([str(root / "img")], root / "lat", preset="tiny", resolution=RES, batch_size=5,
                            device="cpu", progress=False)
    return root, summary


def test_encoded_latents_equal_the_codec_of_the_loaders_crop(shards):
    root, summary = shards
    assert summary["samples"] == 12 and summary["shards_written"] == 4 and summary["skipped"]["total"] == 0
    codec = PixelShuffleCodec(2)
    skips = SkipLog(slots=1, shared=False)
    originals = {r.key: r for url in sorted((root / "img").glob("*.tar")) for r in iter_shard(str(url), skips)}
    n = 0
    for url in sorted((root / "lat").glob("*.tar")):
        for raw in iter_shard(str(url), skips):
            lat = load_latents(raw.members["latents.safetensors"])
            example = example_from_sample(decode_raw(originals[raw.key]), RES, "center")
            for k in ("target", "source"):
                want = codec.encode(example[k][None].float() / 127.5 - 1.0)[0]
                torch.testing.assert_close(lat[k], want, rtol=0, atol=0)
            assert raw.members["prompt.txt"] == originals[raw.key].members["prompt.txt"]
            n += 1
    assert n == 12
    manifest = read_manifest(root / "lat")
    assert manifest["latent_side"] == RES // 2 and manifest["preset"] == "tiny"
    index = json.loads((root / "lat" / "index.json").read_text())
    assert index["totals"]["tasks"] == {"edit": 6, "inpaint": 6}


def test_encode_is_resumable_and_refuses_other_settings(shards, tmp_path):
    root, _ = shards
    again = encode_shards([str(root / "img")], root / "lat", preset="tiny", resolution=RES, device="cpu", progress=False)
    assert again["shards_written"] == 0 and again["shards_skipped"] == 4
    with pytest.raises(ValueError, match="other settings"):
        encode_shards([str(root / "img")], root / "lat", preset="tiny", resolution=RES + 16, device="cpu", progress=False)


class FrozenProbe(L.Callback):
    def on_train_end(self, trainer, pl_module):
        self.loaded = dict(pl_module.frozen_components_loaded)


def _overrides(out, shard_dir, encoded: bool, steps: int = 3):
    return tiny_overrides(out, steps=steps, **{
        "data.source": "shards", "data.train_shards": f"[{shard_dir}]", "data.encoded": str(encoded).lower(),
        "data.tasks": "[inpaint,edit]", "data.resolution": RES, "data.shuffle_buffer": 0, "loss.text_dropout": 0.5,
        "train.val_every": 0,
    })


def test_training_on_encoded_shards_matches_image_shards_without_loading_components(shards, tmp_path):
    root, _ = shards
    probe, enc_losses, img_losses = FrozenProbe(), LossRecorder(), LossRecorder()
    run_step(load_step_config(None, _overrides(tmp_path / "enc", root / "lat", True)),
             extra_callbacks=[enc_losses, probe], enable_progress=False)
    run_step(load_step_config(None, _overrides(tmp_path / "img", root / "img", False)),
             extra_callbacks=[img_losses], enable_progress=False)
    assert probe.loaded == {"codec": False, "text": False}  # neither the codec nor the text encoder was built
    assert len(enc_losses.losses) == 3
    for step, loss in img_losses.losses.items():
        assert enc_losses.losses[step] == pytest.approx(loss, rel=1e-5, abs=1e-6)


def test_encoded_config_errors_name_the_key(shards, tmp_path):
    root, _ = shards
    with pytest.raises(ConfigError, match="data.resolution"):
        CoLoGenDataModule(DataConfig(source="shards", train_shards=[str(root / "lat")], encoded=True, resolution=64)).setup()
    with pytest.raises(ConfigError, match="data.crop"):
        DataConfig(source="shards", train_shards=[str(root / "lat")], encoded=True, crop="random")
    with pytest.raises(ConfigError, match="data.encoded"):
        DataConfig(source="shapes5", encoded=True)


def test_corrupt_latents_are_skipped_and_reported(shards, tmp_path):
    root, _ = shards
    src = sorted((root / "lat").glob("*.tar"))[0]
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    (bad_dir / "encoded.json").write_text((root / "lat" / "encoded.json").read_text())
    samples = [{"__key__": r.key, **r.members} for r in iter_shard(str(src), SkipLog(slots=1, shared=False))]
    latents = samples[0]["latents.safetensors"]
    samples[0]["latents.safetensors"] = latents[: len(latents) // 2]  # the first sample's latents are truncated
    write_tar(bad_dir / src.name, samples)
    dm = CoLoGenDataModule(DataConfig(source="shards", train_shards=[str(bad_dir)], encoded=True, resolution=RES,
                                      tasks=[src.name.split("-")[2]], batch_size=2, samples_per_epoch=4, shuffle_buffer=0))
    batch = next(iter(dm.train_dataloader()))
    assert batch["target_latent"].shape == (2, 12, RES // 2, RES // 2) and "target" not in batch
    skipped = dm.skipped
    assert skipped["by_kind"].get("bad_latents", 0) >= 1
    assert any(r["kind"] == "bad_latents" and src.name in r["shard"] for r in skipped["reports"])


def test_encode_command_line(shards, tmp_path, capsys):
    from lit_cologen.cli import main

    root, _ = shards
    rc = main(["data", "encode", str(root / "img"), "--out", str(tmp_path / "cli"), "--preset", "tiny",
               "--resolution", str(RES), "--device", "cpu"])
    assert rc == 0
    assert "data.encoded=true" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "cli").glob("*.tar")) == sorted(p.name for p in (root / "lat").glob("*.tar"))
    assert (tmp_path / "cli" / "text_cache").is_dir() and read_manifest(tmp_path / "cli")["resolution"] == RES
