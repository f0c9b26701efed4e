"""The loader: config checks, batch format, mixing, epochs, node/worker splits, and every corruption kind skipped,
counted and reported with shard and key while the good samples still come through."""

from __future__ import annotations

import pickle
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tar_files import write_tar

from lit_cologen.config import ConfigError, load_config
from lit_cologen.data.config import DataConfig
from lit_cologen.data.datamodule import CoLoGenDataModule
from lit_cologen.data.datasets import Shapes5TrainDataset, ShardEvalDataset, ShardTrainDataset
from lit_cologen.data.examples import collate, example_from_sample
from lit_cologen.data.schema import TASKS, Sample, encode_png
from lit_cologen.data.shapes import make_sample
from lit_cologen.data.shards import SkipLog, expand_shards, write_shapes5_shards
from lit_cologen.data.streams import plan_task_shards
from lit_cologen.data.tasks import format_prompt

RES = 32


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("shapes5")
    write_shapes5_shards(d, 12, resolution=RES, maxcount=4)  # 3 shards per task
    return d


def keys_of(loader) -> list[str]:
    return [k for b in loader for k in b["key"]]


# ------------------------------------------------------------------------------------------------------------ config


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="data.resolution"):
        DataConfig(resolution=12)
    with pytest.raises(ConfigError, match="data.task_weights.edit"):
        DataConfig(tasks=["inpaint"], task_weights={"edit": 1.0})
    with pytest.raises(ConfigError, match="data.tasks"):
        DataConfig(tasks=["dance"])
    with pytest.raises(ConfigError, match="data.train_shards"):
        DataConfig(source="shards")
    with pytest.raises(ConfigError, match="data.val_split"):
        DataConfig(val_split="train")
    yaml = tmp_path / "c.yaml"
    yaml.write_text("data:\n  resolution: 32\n  tasks: [inpaint, edit]\n  task_weights: {edit: 0.5}\n")
    cfg = load_config(DataConfig, yaml, section="data")
    assert cfg.resolution == 32 and cfg.probs() == pytest.approx({"inpaint": 2 / 3, "edit": 1 / 3})
    yaml.write_text("data:\n  resolutoin: 32\n")
    with pytest.raises(ConfigError, match="resolutoin"):
        load_config(DataConfig, yaml, section="data")


# ------------------------------------------------------------------------------------------------------ batch format


def test_procedural_batch_format():
    dm = CoLoGenDataModule(DataConfig(resolution=RES, batch_size=10, samples_per_epoch=20))
    batch = next(iter(dm.train_dataloader()))
    b = 10
    assert batch["target"].shape == batch["source"].shape == (b, 3, RES, RES)
    assert batch["mask"].shape == (b, 1, RES, RES)
    assert batch["target"].dtype == torch.float32 and batch["target"].min() >= -1 and batch["target"].max() <= 1
    assert set(torch.unique(batch["mask"]).tolist()) <= {0.0, 1.0}
    for i in range(b):
        task = batch["task"][i]
        ref = make_sample(task, batch["meta"][i]["index"], resolution=RES)
        assert batch["key"][i] == ref.key and batch["raw_prompt"][i] == ref.prompt
        assert batch["prompt"][i] == format_prompt(task, ref.prompt, ref.cond_type)
        assert batch["cond_type"][i] == (ref.cond_type or "")
        tgt = torch.from_numpy(np.asarray(ref.target).copy()).permute(2, 0, 1).float() / 127.5 - 1
        assert torch.allclose(batch["target"][i], tgt)
        if task == "inpaint":
            assert torch.equal(batch["mask"][i, 0], torch.from_numpy(np.asarray(ref.mask) > 0).float())
        else:
            assert batch["mask"][i].sum() == 0


def test_resize_and_crop_exact():
    img = np.zeros((32, 64, 3), np.uint8)  # H 32, W 64
    img[:, :, 0] = np.arange(64, dtype=np.uint8)[None, :] * 3
    mask = np.zeros((32, 64), np.uint8)
    mask[:, 20:30] = 255
    s = Sample("k", "inpaint", "p", Image.fromarray(img), Image.fromarray(img), Image.fromarray(mask, "L"))
    ex = example_from_sample(s, 32)  # shorter side is already 32: centre crop columns 16..47, no resampling
    expected = torch.from_numpy(img[:, 16:48].copy()).permute(2, 0, 1)
    assert torch.equal(ex["target"], expected) and torch.equal(ex["source"], expected)
    assert torch.equal(ex["mask"][0], torch.from_numpy(mask[:, 16:48] > 0).to(torch.uint8))
    batch = collate([ex])
    assert torch.allclose(batch["target"][0], expected.float() / 127.5 - 1) and batch["mask"].dtype == torch.float32
    rng = np.random.default_rng(0)
    ex2 = example_from_sample(s, 32, "random", rng)
    x0 = int(ex2["target"][0, 0, 0]) // 3  # the red ramp encodes the column
    assert torch.equal(ex2["mask"][0], torch.from_numpy(mask[:, x0 : x0 + 32] > 0).to(torch.uint8))
    big = example_from_sample(make_sample("edit", 0, resolution=64), 32)
    assert big["target"].shape == (3, 32, 32)


# ----------------------------------------------------------------------------------------------- epochs, ranks


def test_procedural_epochs_and_ranks_are_deterministic_and_disjoint():
    cfg = DataConfig(resolution=RES, batch_size=4, samples_per_epoch=16)
    a, b = CoLoGenDataModule(cfg).train_dataloader(), CoLoGenDataModule(cfg).train_dataloader()
    e0a, e0b = keys_of(a), keys_of(b)
    e1a = keys_of(a)  # second pass = epoch 1
    assert e0a == e0b and len(e0a) == 16 and len(a) == 4
    assert not set(e0a) & set(e1a)
    skips = SkipLog(shared=False)
    r0 = [k for batch in Shapes5TrainDataset(cfg, 0, 2, skips, 16) for k in batch["key"]]
    r1 = [k for batch in Shapes5TrainDataset(cfg, 1, 2, skips, 16) for k in batch["key"]]
    assert len(r0) == len(r1) == 8 and not set(r0) & set(r1)


def test_procedural_validation_is_fixed_and_balanced():
    dm = CoLoGenDataModule(DataConfig(resolution=RES, batch_size=8, val_samples=20))
    v = dm.val_dataloader()
    first, second = keys_of(v), keys_of(v)
    assert first == second and len(first) == 20 and len(v) == 3
    assert all(k.startswith("eval_") for k in first)
    assert Counter(k.split("_")[1] for k in first) == {t: 4 for t in TASKS}


# --------------------------------------------------------------------------------------------------------- shards


def test_shard_mixing_follows_the_weights(shard_dir):
    cfg = DataConfig(source="shards", train_shards=[str(shard_dir)], tasks=["inpaint", "edit", "control"],
                     task_weights={"inpaint": 6, "edit": 2, "control": 0}, resolution=RES, batch_size=20,
                     samples_per_epoch=400, shuffle_buffer=16)  # fmt: skip
    dm = CoLoGenDataModule(cfg)
    loader = dm.train_dataloader()
    tasks = Counter(t for b in loader for t in b["task"])
    assert set(tasks) == {"inpaint", "edit"} and sum(tasks.values()) == 400
    assert tasks["inpaint"] / 400 == pytest.approx(0.75, abs=0.07)
    # the index routes every shard to its own task only
    assert all("inpaint" in Path(u).name for u in dm._train_plan["inpaint"].urls)
    assert dm.skipped["total"] == 0


def test_fewer_shards_than_workers(tmp_path):
    write_shapes5_shards(tmp_path, 3, resolution=RES, tasks=("ground",))  # a single shard
    cfg = DataConfig(source="shards", train_shards=[str(tmp_path)], tasks=["ground"], resolution=RES,
                     batch_size=4, num_workers=2, samples_per_epoch=16, shuffle_buffer=4)  # fmt: skip
    loader = CoLoGenDataModule(cfg).train_dataloader()
    batches = list(loader)
    assert len(batches) == len(loader) == 4 and all(len(b["key"]) == 4 for b in batches)
    assert {k for b in batches for k in b["key"]} <= {f"train_ground_s0_{i:08d}" for i in range(3)}


def test_train_streams_differ_by_rank_and_epoch_but_repeat(shard_dir):
    cfg = DataConfig(source="shards", train_shards=[str(shard_dir)], resolution=RES, batch_size=5, shuffle_buffer=8)
    dm = CoLoGenDataModule(cfg)
    dm.setup()
    skips = SkipLog(shared=False)

    def run(rank: int, epoch: int) -> list[str]:
        ds = ShardTrainDataset(cfg, dm._train_plan, rank, 2, skips, 30)
        ds.set_epoch(epoch)
        return [k for b in ds for k in b["key"]]

    assert run(0, 0) == run(0, 0)
    assert run(0, 0) != run(1, 0) and run(0, 0) != run(0, 1)


@pytest.mark.parametrize("n_shards", [15, 2])  # >= consumers: split by shard; fewer: split by sample
def test_eval_split_covers_everything_once(shard_dir, n_shards):
    urls = expand_shards(str(shard_dir))[:n_shards]
    cfg = DataConfig(source="shards", train_shards=[str(shard_dir)], resolution=RES, batch_size=3)
    everything = [k for b in ShardEvalDataset(cfg, urls, 0, 1, SkipLog(shared=False)) for k in b["key"]]
    parts = [[k for b in ShardEvalDataset(cfg, urls, r, 3, SkipLog(shared=False)) for k in b["key"]] for r in range(3)]
    assert sorted(sum(parts, [])) == sorted(everything) and len(set(everything)) == len(everything)
    assert all(parts)  # no rank is left without data
    assert everything == [k for b in ShardEvalDataset(cfg, urls, 0, 1, SkipLog(shared=False)) for k in b["key"]]


def test_plan_without_index_reports_each_shard_once():
    plan = plan_task_shards(["a.tar", "b.tar"], {"a.tar": None, "b.tar": {"edit": 3}}, ["inpaint", "edit"])
    assert plan["inpaint"].urls == ["a.tar"] and plan["edit"].urls == ["a.tar", "b.tar"]
    assert plan["inpaint"].owned == {"a.tar"} and plan["edit"].owned == {"b.tar"}


# ---------------------------------------------------------------------------------------------------- corruption


def good(task: str, i: int) -> dict:
    return make_sample(task, i, resolution=RES).to_wds()




class _Evil:
    """Unpickling this would create a flag file."""

    def __init__(self, flag: str) -> None:
        self.flag = flag

    def __reduce__(self):
        return (Path.touch, (Path(self.flag),))


def corrupt(kind: str, tmp_path: Path) -> tuple[Path, str, list[str]]:
    """A shard with good samples around one bad one: (shard path, bad key, good keys that must come through)."""
    a, b, c = good("inpaint", 0), good("control", 1), good("edit", 2)
    bad_key = b["__key__"]
    path = tmp_path / f"{kind}.tar"
    goods = [a["__key__"], c["__key__"]]
    if kind == "bad_image":
        b["target.png"] = b"\x89PNG\r\n\x1a\n" + b"not really a png" * 8
    elif kind == "truncated_png":
        b["source.png"] = b["source.png"][: len(b["source.png"]) // 2]
    elif kind == "missing_member":
        del b["source.png"]
    elif kind == "unknown_task":
        b["task.txt"] = b"dance"
    elif kind == "bad_cond_type":
        b["cond_type.txt"] = b"sketch"
    elif kind == "bad_meta":
        b["meta.json"] = b"{not json"
    elif kind == "bad_size":
        b["source.png"] = encode_png(Image.new("RGB", (RES, RES // 2)))
    elif kind.startswith("forbidden_"):  # forbidden_pickle / forbidden_pth / forbidden_pyd: one member each
        b[f"payload.{kind.split('_')[1]}"] = pickle.dumps(_Evil(str(tmp_path / "PWNED")))
    elif kind in ("empty_shard", "zero_byte_shard"):
        if kind == "empty_shard":
            write_tar(path, [])
        else:
            path.write_bytes(b"")
        return path, "", []
    elif kind == "truncated_shard":
        write_tar(path, [a, b, c])
        with tarfile.open(path) as tf:
            member = tf.getmember(f"{bad_key}.target.png")
            cut = member.offset_data + member.size // 2
        path.write_bytes(path.read_bytes()[:cut])
        return path, bad_key, [a["__key__"]]
    else:
        raise AssertionError(kind)
    write_tar(path, [a, b, c])
    return path, bad_key, goods


CORRUPTIONS = {
    "bad_image": "bad_image",
    "truncated_png": "bad_image",
    "missing_member": "missing_member",
    "unknown_task": "unknown_task",
    "bad_cond_type": "bad_cond_type",
    "bad_meta": "bad_meta",
    "bad_size": "bad_size",
    "forbidden_pickle": "forbidden_member",
    "forbidden_pth": "forbidden_member",
    "forbidden_pyd": "forbidden_member",
    "empty_shard": "empty_shard",
    "zero_byte_shard": "empty_shard",
    "truncated_shard": "truncated_shard",
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corrupt_input_is_skipped_counted_and_reported(case, tmp_path, shard_dir):
    path, bad_key, goods = corrupt(case, tmp_path)
    clean = expand_shards(str(shard_dir))[0]
    cfg = DataConfig(source="shards", train_shards=[str(shard_dir)], val_shards=[clean, str(path)],
                     resolution=RES, batch_size=4)  # fmt: skip
    dm = CoLoGenDataModule(cfg)
    got = keys_of(dm.val_dataloader())
    clean_keys = [f"train_control_s0_{i:08d}" for i in range(4)]
    assert got == clean_keys + goods  # the good samples still come through, in order
    kind = CORRUPTIONS[case]
    summary = dm.skipped
    assert summary["by_kind"] == {kind: 1} and summary["total"] == 1
    (report,) = summary["reports"]
    assert report["kind"] == kind and report["key"] == bad_key and report["stage"] == "val"
    assert report["shard"].endswith(path.name)
    assert not (tmp_path / "PWNED").exists()  # nothing was unpickled


def test_corrupt_shards_in_training_with_workers(tmp_path, shard_dir):
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    paths = {case: corrupt(case, bad_dir) for case in ("bad_image", "unknown_task", "forbidden_pickle", "zero_byte_shard")}
    urls = [str(p) for p, _, _ in paths.values()] + expand_shards(str(shard_dir))
    cfg = DataConfig(source="shards", train_shards=urls, resolution=RES, batch_size=8, num_workers=2,
                     samples_per_epoch=160, shuffle_buffer=8)  # fmt: skip
    dm = CoLoGenDataModule(cfg)
    n = sum(len(b["key"]) for b in dm.train_dataloader())
    assert n == 160  # the epoch is full despite the bad shards
    by_kind = dm.skipped["by_kind"]  # seen from the main process although the workers did the skipping
    assert set(by_kind) <= {"bad_image", "unknown_task", "forbidden_member", "empty_shard"} and by_kind
    reported = {(r["kind"], Path(r["shard"]).name, r["key"]) for r in dm.skipped["reports"]}
    expected = {(CORRUPTIONS[c], p.name, k) for c, (p, k, _) in paths.items()}
    assert reported <= expected and reported
    assert not (bad_dir / "PWNED").exists()


def test_a_task_with_nothing_readable_fails_loudly(tmp_path):
    (tmp_path / "x.tar").write_bytes(b"")
    cfg = DataConfig(source="shards", train_shards=[str(tmp_path / "x.tar")], tasks=["edit"], resolution=RES,
                     batch_size=2, samples_per_epoch=4)  # fmt: skip
    with pytest.raises(RuntimeError, match="no usable sample"):
        list(CoLoGenDataModule(cfg).train_dataloader())


# -------------------------------------------------------------------------------------------------------- Lightning


def test_lightning_fit_consumes_the_datamodule():
    import lightning as L

    class Probe(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.seen: list[str] = []

        def training_step(self, batch, _):
            self.seen.extend(batch["key"])
            return (batch["target"].mean() * self.w).sum() + self.w.square().sum()

        def validation_step(self, batch, _):
            pass

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = CoLoGenDataModule(DataConfig(resolution=RES, batch_size=2, samples_per_epoch=6, val_samples=4))
    probe = Probe()
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)  # fmt: skip
    trainer.fit(probe, datamodule=dm)
    assert len(probe.seen) == 12 and len(set(probe.seen)) == 12  # two epochs, new samples each
    assert dm.state_dict()["next_epoch"] == 2


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch_continues_the_same_batch_sequence(workers):
    """A train loader resumed after k batches yields exactly batches k, k+1, ... of the uninterrupted epoch."""
    from lit_cologen.data.config import DataConfig
    from lit_cologen.data.datamodule import CoLoGenDataModule

    cfg = DataConfig(source="shapes5", resolution=16, batch_size=2, num_workers=workers, samples_per_epoch=16,
                     tasks=["inpaint", "edit"])
    full = [b["key"] for b in CoLoGenDataModule(cfg).train_dataloader()]
    assert len(full) == 8
    for k in (1, 3, 5):
        loader = CoLoGenDataModule(cfg).train_dataloader()
        loader.dataset.resume_at(0, k)
        assert [b["key"] for b in loader] == full[k:]
