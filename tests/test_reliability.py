"""Reliability: what happens under faults (issue "reliability"; the summary table is tests/RELIABILITY.md).

* SIGKILL (a real subprocess, killed from outside) during a training step, during a checkpoint write and during
  benchmark generation; the restart continues with nothing lost or corrupted.
* A training run over a folder mixing good shards with every kind of bad one.
* Bad configs fail before any compute, naming the key.
* Bad weights (missing, wrong architecture, truncated, pickled) fail clearly; no pickle payload ever runs.
* A NaN / inf loss stops the run with a loadable checkpoint of the last good state, and says where it is.
* Disk full and unwritable output folders: a clear error, earlier results intact (atomic writes).

Faults are injected only inside the test (or the subprocess scripts this file writes): the library is never
patched on disk. Real disk-full / read-only file systems use a small tmpfs when `mount` is allowed (root), and are
skipped otherwise; simulated ENOSPC (a monkeypatched writer) always runs.
"""

from __future__ import annotations

import errno
import io
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import pytest
import torch
from PIL import Image
from tar_files import write_tar
from tiny_run import LossRecorder, tiny_overrides

from lit_cologen.config import ConfigError
from lit_cologen.data.datamodule import CoLoGenDataModule
from lit_cologen.data.schema import encode_png
from lit_cologen.data.shapes import make_sample
from lit_cologen.data.shards import write_shapes5_shards
from lit_cologen.training.checkpoints import LAST_GOOD_FILE
from lit_cologen.training.config import load_step_config
from lit_cologen.training.run import run_curriculum, run_step

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
RES = 32
STEPS = 6  # checkpoints at steps 2, 4, 6


def step_overrides(out: Path, steps: int = STEPS, **extra: object) -> list[str]:
    """The tiny CPU step of the training tests (checkpoint every 2 steps)."""
    return tiny_overrides(out, steps, **extra)


def ckpt_step(path: Path) -> int:
    """global_step of a checkpoint, loaded the way training loads it (weights_only=True)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert ckpt["state_dict"] and all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())
    return int(ckpt["global_step"])


def assert_losses_match(got: dict[int, float], reference: dict[int, float]) -> None:
    for step, loss in got.items():
        assert loss == pytest.approx(reference[step], rel=1e-6, abs=1e-7), f"step {step}: {loss} vs {reference[step]}"


@pytest.fixture(scope="module")
def reference_losses(tmp_path_factory) -> dict[int, float]:
    """Per-step losses of an uninterrupted CPU run (the config every resumed run below uses)."""
    rec = LossRecorder()
    run_step(load_step_config(None, step_overrides(tmp_path_factory.mktemp("ref") / "run")), extra_callbacks=[rec],
             enable_progress=False)
    assert sorted(rec.losses) == list(range(1, STEPS + 1))
    return rec.losses


# ============================================================================================ subprocesses + SIGKILL

TRAIN_SCRIPT = r'''
"""Runs one tiny training step; logs every step's loss (JSONL, fsync'd); can block at a chosen point."""
import io, json, os, sys, time
import lightning as L
import torch

spec = json.load(open(sys.argv[1]))
torch.set_num_threads(spec["threads"])


def block(where):  # tell the test where we are, then wait for its SIGKILL
    with open(spec["marker"], "w") as f:
        f.write(where)
        f.flush()
        os.fsync(f.fileno())
    while True:
        time.sleep(60)


if spec.get("block_in_checkpoint_at") is not None:  # torch.save of that step writes half its bytes, then blocks
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("global_step") == spec["block_in_checkpoint_at"]:
            buf = io.BytesIO()
            real_save(obj, buf, *args, **kwargs)
            data = buf.getvalue()
            f.write(data[: len(data) // 2])
            f.flush()
            block("checkpoint")
        return real_save(obj, f, *args, **kwargs)

    torch.save = save


class LossLog(L.Callback):
    def __init__(self):
        self.f = open(spec["log"], "a")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        row = {"pid": os.getpid(), "step": trainer.global_step, "loss": float(outputs["loss"])}
        self.f.write(json.dumps(row) + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())

    def on_before_backward(self, trainer, pl_module, loss):  # mid-step: forward done, no update yet
        if trainer.global_step == spec.get("block_in_step_after"):
            block("step")


from lit_cologen.training.config import load_step_config
from lit_cologen.training.run import run_step

run_step(load_step_config(None, spec["overrides"]), extra_callbacks=[LossLog()], enable_progress=False)
'''

GENERATE_BLOCKING = r'''
"""`cologen bench generate ...` whose n-th image write (into images/) stops half-way and blocks."""
import io, os, sys, time
from PIL import Image

marker, nth, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
real_save, count = Image.Image.save, [0]


def save(self, fp, format=None, **params):
    target = os.readlink(f"/proc/self/fd/{fp.fileno()}") if hasattr(fp, "fileno") else ""
    if "/images/." in target and target.endswith(".tmp"):
        count[0] += 1
        if count[0] == nth:
            buf = io.BytesIO()
            real_save(self, buf, format=format, **params)
            fp.write(buf.getvalue()[: len(buf.getvalue()) // 2])
            fp.flush()
            os.fsync(fp.fileno())
            with open(marker, "w") as m:
                m.write(target)
            while True:
                time.sleep(60)
    return real_save(self, fp, format, **params)


Image.Image.save = save
from lit_cologen.cli import main

sys.exit(main(argv))
'''


def spawn(argv: list[str], logs: Path) -> subprocess.Popen:
    logs.parent.mkdir(parents=True, exist_ok=True)
    out = open(logs, "w")
    return subprocess.Popen(argv, cwd=REPO, env=ENV, stdout=out, stderr=subprocess.STDOUT)


def wait_until(condition, proc: subprocess.Popen, logs: Path, timeout: float = 300.0, what: str = "") -> None:
    """Poll `condition()` until true; fail (with the subprocess output) if the process exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"subprocess exited ({proc.returncode}) before {what}:\n{logs.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}:\n{logs.read_text()[-3000:]}")
        time.sleep(0.05)


def sigkill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL


def finish(proc: subprocess.Popen, logs: Path, timeout: float = 300.0) -> None:
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert rc == 0, logs.read_text()[-3000:]


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_sigkill_mid_step_and_mid_checkpoint_write_then_resume_reproduces_the_run(tmp_path, reference_losses):
    out, log, marker = tmp_path / "run", tmp_path / "losses.jsonl", tmp_path / "blocked"
    script = tmp_path / "train.py"
    script.write_text(TRAIN_SCRIPT)
    ckpts = out / "checkpoints"

    def launch(phase: str, **blocking) -> tuple[subprocess.Popen, Path]:
        spec = tmp_path / f"{phase}.json"
        spec.write_text(json.dumps({"overrides": step_overrides(out), "log": str(log), "marker": str(marker),
                                    "threads": torch.get_num_threads(), **blocking}))
        logs = tmp_path / f"{phase}.out"
        return spawn([sys.executable, str(script), str(spec)], logs), logs

    # 1) SIGKILL inside step 4 (forward done, before backward), once the log shows step 3 (checkpoint at step 2)
    proc, logs = launch("a", block_in_step_after=3)
    wait_until(lambda: marker.is_file(), proc, logs, what="the run to reach step 4")
    assert [r["step"] for r in read_log(log)] == [1, 2, 3]
    sigkill(proc)
    assert ckpt_step(ckpts / "last.ckpt") == 2 and not (out / "final").exists()
    marker.unlink()

    # 2) restart; SIGKILL in the middle of writing the step-4 checkpoint (half its bytes are on disk)
    proc, logs = launch("b", block_in_checkpoint_at=4)
    wait_until(lambda: marker.is_file(), proc, logs, what="the step-4 checkpoint write")
    (partial,) = [p for p in ckpts.iterdir() if p.name.startswith(".last.ckpt.tmp-")]
    sigkill(proc)
    with pytest.raises(Exception):  # the kill really landed mid-write: the temporary file is truncated
        torch.load(partial, weights_only=True)
    assert ckpt_step(ckpts / "last.ckpt") == 2  # the previous complete checkpoint, not a torn one
    marker.unlink()

    # 3) restart without faults: resumes from step 2 and finishes
    proc, logs = launch("c")
    finish(proc, logs)
    assert (out / "final" / "done.json").is_file() and ckpt_step(ckpts / "last.ckpt") == STEPS
    assert not [p.name for p in ckpts.iterdir() if ".tmp" in p.name]  # the torn temporary file was cleaned up

    rows = read_log(log)
    by_pid: dict[int, list[int]] = {}
    for r in rows:
        by_pid.setdefault(r["pid"], []).append(r["step"])
    assert list(by_pid.values()) == [[1, 2, 3], [3, 4], [3, 4, 5, 6]]  # steps after the step-2 checkpoint redone
    for r in rows:  # every computation of every step (first, recomputed, resumed) equals the uninterrupted run's
        assert r["loss"] == pytest.approx(reference_losses[r["step"]], rel=1e-6, abs=1e-7), r


def complete_pngs(images: Path) -> dict[str, bytes]:
    from benchmarks.harness import image_is_complete

    return {p.stem: p.read_bytes() for p in images.glob("*.png") if not p.name.startswith(".") and image_is_complete(p)}


@pytest.mark.slow
def test_sigkill_mid_generation_then_rerun_writes_every_image_once_and_complete(tmp_path):
    run = tmp_path / "gen"
    images = run / "images"
    args = ["bench", "generate", "shapes5", "--out", str(run), "--generator", "benchmarks.cologen_generator:make",
            "--generator-arg", "steps=2", "--per-task", "4", "--resolution", str(RES), "--no-progress"]
    total = 4 * 5

    # 1) the real CLI, SIGKILLed as soon as its first images are on disk
    proc = spawn([sys.executable, "-m", "lit_cologen.cli", *args], tmp_path / "a.out")
    wait_until(lambda: images.is_dir() and any(p.suffix == ".png" for p in images.iterdir()), proc,
               tmp_path / "a.out", what="the first image")
    sigkill(proc)
    first = complete_pngs(images)
    assert 0 < len(first) < total, "generation finished before the kill"
    assert all(p.name.startswith(".") or p.stem in first for p in images.iterdir())  # nothing torn under a final name

    # 2) rerun, SIGKILLed in the middle of writing its 2nd image (a half-written temporary file stays behind)
    marker = tmp_path / "blocked"
    script = tmp_path / "gen_blocking.py"
    script.write_text(GENERATE_BLOCKING)
    proc = spawn([sys.executable, str(script), str(marker), "2", *args], tmp_path / "b.out")
    wait_until(marker.is_file, proc, tmp_path / "b.out", what="the half-written image")
    sigkill(proc)
    torn = Path(marker.read_text())
    assert torn.is_file() and torn.name.endswith(".tmp")
    second = complete_pngs(images)
    assert len(second) == len(first) + 1 and all(second[k] == v for k, v in first.items())

    # 3) rerun to the end
    proc = spawn([sys.executable, "-m", "lit_cologen.cli", *args], tmp_path / "c.out")
    finish(proc, tmp_path / "c.out")
    report = next(json.loads(line) for line in reversed((tmp_path / "c.out").read_text().splitlines())
                  if line.startswith('{"total"'))
    assert report["skipped"] == len(second) and report["generated"] == total - len(second)

    rows = [json.loads(line) for line in (run / "manifest.jsonl").read_text().splitlines() if line.strip()]
    ids = [r["id"] for r in rows]
    assert len(ids) == total and len(set(ids)) == total  # every request once
    final = complete_pngs(images)
    assert sorted(final) == sorted(ids) and sorted(p.name for p in images.iterdir()) == sorted(f"{i}.png" for i in ids)
    for i in ids:  # every PNG decodes fully at the requested size
        with Image.open(images / f"{i}.png") as im:
            im.load()
            assert im.size == (RES, RES)
    assert all(final[k] == v for k, v in second.items())  # earlier images were kept, not rewritten
    assert not [str(p) for p in run.rglob("*") if ".tmp" in p.name]  # no leftover temporary file anywhere


# ============================================================================================ shards in a training run


class _Evil:
    """Unpickling this creates a flag file (it must never happen)."""

    def __init__(self, flag: Path):
        self.flag = flag

    def __reduce__(self):
        return (Path.touch, (self.flag,))




def bad_shards(folder: Path, flag: Path) -> dict[str, tuple[Path, str, str]]:
    """One shard per fault: name -> (shard, reported kind, key of the bad sample ("" for whole-shard faults)).
    Every bad sample is an inpaint sample (the active task), next to one good sample."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}

    def shard(name: str, kind: str, mutate) -> None:
        good = make_sample("inpaint", 1000 + len(out), "train", RES).to_wds()
        good["__key__"] = f"{name}-good"
        bad = make_sample("inpaint", 2000 + len(out), "train", RES).to_wds()
        bad["__key__"] = f"{name}-bad"
        mutate(bad)
        path = folder / f"bad-{name}.tar"
        write_tar(path, [good, bad])
        out[name] = (path, kind, bad["__key__"])

    shard("corrupt_png", "bad_image", lambda s: s.update({"target.png": s["target.png"][:40] + b"\0" * 64}))
    shard("missing_member", "missing_member", lambda s: s.pop("source.png"))
    shard("unknown_task", "unknown_task", lambda s: s.update({"task.txt": b"dance"}))
    shard("wrong_size", "bad_size", lambda s: s.update({"source.png": encode_png(Image.new("RGB", (RES, RES // 2)))}))
    shard("pickle_member", "forbidden_member", lambda s: s.update({"payload.pickle": pickle.dumps(_Evil(flag))}))
    shard("pyd_member", "forbidden_member", lambda s: s.update({"model.pyd": pickle.dumps(_Evil(flag))}))
    # a tar cut in the middle of the bad sample's target.png
    path = folder / "bad-truncated_tar.tar"
    a = make_sample("inpaint", 3000, "train", RES).to_wds()
    b = make_sample("inpaint", 3001, "train", RES).to_wds()
    write_tar(path, [a, b])
    with tarfile.open(path) as tf:
        m = tf.getmember(f"{b['__key__']}.target.png")
    path.write_bytes(path.read_bytes()[: m.offset_data + m.size // 2])
    out["truncated_tar"] = (path, "truncated_shard", b["__key__"])
    empty = folder / "bad-empty.tar"
    write_tar(empty, [])
    out["empty_shard"] = (empty, "empty_shard", "")
    return out


def test_training_run_over_good_and_every_kind_of_bad_shard_completes_and_reports_each(tmp_path):
    shards = tmp_path / "shards"
    write_shapes5_shards(shards, 6, resolution=RES, tasks=("inpaint",), maxcount=3)  # 2 good shards + index.json
    (shards / "index.json").unlink(missing_ok=True)  # no index: every task stream reads every shard
    flag = tmp_path / "PWNED"
    bad = bad_shards(shards, flag)
    cfg = load_step_config(None, step_overrides(
        tmp_path / "run", steps=2, **{
            "data.source": "shards", "data.train_shards": f"[{shards}]", "data.val_shards": f"[{shards}]",
            "data.shuffle_buffer": 0, "data.samples_per_epoch": 6, "data.val_batch_size": 32,
            "train.val_every": 2, "train.val_batches": 100,
            "train.checkpoint_every": 2}))
    dm = CoLoGenDataModule(cfg.data)
    final = run_step(cfg, datamodule=dm, enable_progress=False)
    assert (final / "done.json").is_file()

    skipped = dm.skipped
    reported = {(r["kind"], Path(r["shard"]).name, r["key"]) for r in skipped["reports"]}
    for name, (path, kind, key) in bad.items():  # validation reads every shard in order: each fault is reported
        assert (kind, path.name, key) in reported, (name, sorted(reported))
    expected = {(kind, path.name, key) for path, kind, key in bad.values()}
    assert reported <= expected  # nothing good was refused
    assert skipped["total"] == sum(skipped["by_kind"].values()) >= len(bad)
    assert all(r["shard"] and r["message"] for r in skipped["reports"])
    assert not flag.exists()  # the pickled members were never unpickled


# ============================================================================================ configs


CURRICULUM_FAULTS = {  # curriculum YAML body -> the key the error must name
    "unknown key": ("common: {train: {max_stpes: 3}}\nsteps: [{name: a}]", "train.max_stpes"),
    "wrong type": ("steps: [{name: a, veteran: {rho: high}}]", "veteran.rho"),
    "wrong type (list)": ("common: {data: {tasks: inpaint}}\nsteps: [{name: a}]", "data.tasks"),
    "missing step name": ("steps: [{name: a}, {veteran: {alpha: 0.5}}]", r"steps\[1\]\.name"),
    "missing shard list": ("common: {data: {source: shards}}\nsteps: [{name: a}]", "data.train_shards"),
    "no steps": ("steps: []", "steps"),
    "unknown top-level key": ("stepz: [{name: a}]\nsteps: [{name: a}]", "stepz"),
    "rho below 0": ("steps: [{name: a, veteran: {rho: -0.1}}]", "veteran.rho"),
    "rho above 1": ("steps: [{name: a}, {name: b, veteran: {rho: 1.01}}]", "veteran.rho"),
    "negative alpha": ("steps: [{name: a}, {name: b, veteran: {alpha: -0.5}}]", "veteran.alpha"),
    "rank 0": ("common: {model: {prw: {rank: 0}}}\nsteps: [{name: a}]", "model.prw.rank"),
    "negative rank": ("steps: [{name: a, model: {prw: {rank: -4}}}]", "model.prw.rank"),
}


@pytest.mark.parametrize("case", sorted(CURRICULUM_FAULTS))
def test_bad_curriculum_fails_before_any_compute_naming_the_key(case, tmp_path):
    body, key = CURRICULUM_FAULTS[case]
    out = tmp_path / "out"
    path = tmp_path / "c.yaml"
    path.write_text(f"name: c\noutput_dir: {out}\n{body}\n")
    started = time.monotonic()
    with pytest.raises(ConfigError, match=f"config key '{key}'"):
        run_curriculum(path, ["data.batch_size=2", "train.global_batch=2"], enable_progress=False)
    assert time.monotonic() - started < 5  # no model was built, nothing trained
    assert not out.exists()  # no output folder was created


def test_train_command_with_a_bad_value_names_the_key_and_creates_nothing(tmp_path, capsys):
    """`cologen train STEP.yaml ...` (its main(), in-process: the subprocess wiring is tested in test_cli_and_ddp):
    one line on stderr naming the key and the file, exit status 2."""
    from lit_cologen.cli import main

    step = tmp_path / "step.yaml"
    step.write_text("model: {preset: tiny, prw: {rank: -4}}\ndata: {batch_size: 2}\ntrain: {global_batch: 2}\n")
    out = tmp_path / "out"
    started = time.monotonic()
    assert main(["train", str(step), f"output_dir={out}", "--no-progress"]) == 2
    assert capsys.readouterr().err == f"cologen: error: config key 'model.prw.rank' in {step}: must be > 0, got -4\n"
    step.write_text("model: {preset: tiny}\nveteran: {alpha: lots}\n")
    with pytest.raises(ConfigError, match=re.escape(f"config key 'veteran.alpha' in {step}")):
        main(["train", str(step), f"output_dir={out}", "--no-progress", "--debug"])
    assert time.monotonic() - started < 5 and not out.exists()


# ============================================================================================ weights


@pytest.fixture
def no_unpickling(monkeypatch):
    """Record every torch.load / pickle load; fail on any that could run code (weights_only must be True)."""
    calls: list[str] = []
    real_load = torch.load

    def load(f, *args, **kwargs):
        calls.append(str(f))
        assert kwargs.get("weights_only") is True, f"torch.load({f!r}) without weights_only=True"
        return real_load(f, *args, **kwargs)

    def refuse(*args, **kwargs):
        raise AssertionError("pickle.load / pickle.loads was called")

    monkeypatch.setattr(torch, "load", load)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    return calls


def test_missing_weights_folder_is_a_clear_error(tmp_path):
    from lit_cologen.models.factory import build_base_transformer
    from lit_cologen.models.transformer import CoLoGenTransformer

    with pytest.raises(FileNotFoundError, match=f"pretrained folder {tmp_path / 'nowhere'} does not exist"):
        build_base_transformer("tiny", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="no transformer weights"):
        build_base_transformer("tiny", str(tmp_path))  # a folder, but no config.json in it
    cfg = load_step_config(None, step_overrides(tmp_path / "run", **{"model.pretrained_path": tmp_path / "gone"}))
    with pytest.raises(ConfigError, match=r"config key 'model\.pretrained_path': .*gone does not exist"):
        run_step(cfg, enable_progress=False)  # named before anything is built or written
    assert not (tmp_path / "run").exists()
    model = CoLoGenTransformer.from_preset("tiny")
    with pytest.raises(FileNotFoundError, match="adapter file not found"):
        model.load_adapters(tmp_path / "no-adapters")


def test_weights_of_another_architecture_are_refused_naming_the_mismatch(tmp_path):
    from diffusers import FluxTransformer2DModel

    from lit_cologen.models.config import PRWConfig
    from lit_cologen.models.factory import build_base_transformer
    from lit_cologen.models.transformer import CoLoGenTransformer

    build_base_transformer("small").save_pretrained(tmp_path / "small" / "transformer")
    with pytest.raises(ValueError, match="num_layers=3, but preset 'tiny' needs num_layers=2"):
        build_base_transformer("tiny", str(tmp_path / "small"))
    FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=2, num_single_layers=2, attention_head_dim=16,
                           num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
                           guidance_embeds=True, axes_dims_rope=(4, 6, 6)).save_pretrained(tmp_path / "flux64")
    with pytest.raises(ValueError, match="in_channels=64, but preset 'tiny' needs in_channels=48"):
        build_base_transformer("tiny", str(tmp_path / "flux64"))
    build_base_transformer("tiny").save_pretrained(tmp_path / "tiny48")
    with pytest.raises(ValueError, match="in_channels=48, but preset 'flux-dev' needs in_channels=64"):
        build_base_transformer("flux-dev", str(tmp_path / "tiny48"))
    # through training: a step config pointing at the wrong base fails when the model is built
    cfg = load_step_config(None, step_overrides(tmp_path / "run", **{"model.pretrained_path": tmp_path / "small"}))
    with pytest.raises(ValueError, match="preset 'tiny'"):
        run_step(cfg, enable_progress=False)
    # adapters trained for another shape (base or rank)
    CoLoGenTransformer.from_preset("small", PRWConfig(rank=4)).save_adapters(tmp_path / "ad-small")
    with pytest.raises(ValueError, match="trained for base num_layers=3"):
        CoLoGenTransformer.from_preset("tiny", PRWConfig(rank=4)).load_adapters(tmp_path / "ad-small")
    CoLoGenTransformer.from_preset("tiny", PRWConfig(rank=8)).save_adapters(tmp_path / "ad-rank8")
    with pytest.raises(ValueError, match="prw.rank=8"):
        CoLoGenTransformer.from_preset("tiny", PRWConfig(rank=4)).load_adapters(tmp_path / "ad-rank8")


def test_truncated_safetensors_are_a_clear_error(tmp_path):
    from lit_cologen.models.config import PRWConfig
    from lit_cologen.models.factory import build_base_transformer
    from lit_cologen.models.transformer import CoLoGenTransformer

    build_base_transformer("tiny").save_pretrained(tmp_path / "base" / "transformer")
    weights = tmp_path / "base" / "transformer" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(OSError, match="cannot load the transformer weights in .*base/transformer"):
        build_base_transformer("tiny", str(tmp_path / "base"))
    path = CoLoGenTransformer.from_preset("tiny", PRWConfig(rank=4)).save_adapters(tmp_path / "ad")
    full = path.read_bytes()
    for cut in (100, len(full) - 100):  # inside the header, inside the tensor data
        path.write_bytes(full[:cut])
        with pytest.raises(ValueError, match="not a readable safetensors adapter file"):
            CoLoGenTransformer.from_preset("tiny", PRWConfig(rank=4)).load_adapters(path)


def test_pickled_weights_and_checkpoints_are_never_unpickled(tmp_path, no_unpickling):
    from lit_cologen.models.config import PRWConfig
    from lit_cologen.models.factory import build_base_transformer
    from lit_cologen.models.transformer import CoLoGenTransformer

    flag = tmp_path / "PWNED"
    evil = {"weight": _Evil(flag)}
    # a transformer folder with a pickled .bin where safetensors are expected
    build_base_transformer("tiny").save_pretrained(tmp_path / "base" / "transformer")
    (tmp_path / "base" / "transformer" / "diffusion_pytorch_model.safetensors").unlink()
    with open(tmp_path / "base" / "transformer" / "diffusion_pytorch_model.bin", "wb") as f:
        pickle.dump(evil, f)
    with pytest.raises(OSError, match="diffusion_pytorch_model.bin not loaded: pickled weights are refused"):
        build_base_transformer("tiny", str(tmp_path / "base"))
    # adapters: a pickle named adapters.safetensors, and a .pt file
    (tmp_path / "ad").mkdir()
    (tmp_path / "ad" / "adapters.safetensors").write_bytes(pickle.dumps(evil))
    (tmp_path / "adapters.pt").write_bytes(pickle.dumps(evil))
    for path in (tmp_path / "ad", tmp_path / "adapters.pt"):
        with pytest.raises(ValueError, match="not a readable safetensors adapter file"):
            CoLoGenTransformer.from_preset("tiny", PRWConfig(rank=4)).load_adapters(path)
    assert no_unpickling == []  # weights are read with safetensors only
    # a last.ckpt holding a pickled custom object: resuming refuses it with a clear message
    cfg = load_step_config(None, step_overrides(tmp_path / "run", steps=2))
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    buf = io.BytesIO()
    torch.save({"state_dict": {}, "global_step": 1, "x": _Evil(flag)}, buf)
    (tmp_path / "run" / "checkpoints" / "last.ckpt").write_bytes(buf.getvalue())
    with pytest.raises(ValueError, match="holds objects other than tensors.*not loaded") as err:
        run_step(cfg, enable_progress=False)
    assert "last.ckpt" in str(err.value) and "weights_only=False" not in str(err.value)
    assert no_unpickling and not flag.exists()  # only weights_only loads happened; the payload never ran
    (tmp_path / "run" / "checkpoints" / "last.ckpt").write_bytes(buf.getvalue()[:100])  # and a torn one
    with pytest.raises(ValueError, match="last.ckpt is truncated or corrupt"):
        run_step(cfg, enable_progress=False)


# ============================================================================================ numerics


class PoisonBatch(L.Callback):
    """Turns the batch of the step after `after` into NaN (a data fault)."""

    def __init__(self, after: int):
        self.after = after

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.after:
            batch["target"].fill_(float("nan"))


class InfiniteLR(L.Callback):
    """Sets the learning rate to inf for the step after `after` (an optimizer fault: the weights diverge)."""

    def __init__(self, after: int):
        self.after = after

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.after:
            for group in trainer.optimizers[0].param_groups:
                group["lr"] = float("inf")


def test_nan_loss_stops_with_a_loadable_last_good_checkpoint_and_says_where(tmp_path, reference_losses):
    out = tmp_path / "run"
    cfg = load_step_config(None, step_overrides(out))
    first = LossRecorder()
    with pytest.raises(FloatingPointError) as err:
        run_step(cfg, extra_callbacks=[first, PoisonBatch(after=3)], enable_progress=False)
    message = str(err.value)
    assert "non-finite loss nan at global step 3" in message
    assert f"last good state (global step 3) was saved to {out / 'checkpoints' / LAST_GOOD_FILE}" in message
    assert ckpt_step(out / "checkpoints" / LAST_GOOD_FILE) == 3  # loadable (weights_only), finite
    assert ckpt_step(out / "checkpoints" / "last.ckpt") == 2  # the periodic checkpoint is untouched
    assert not (out / "final").exists()
    assert_losses_match(first.losses, reference_losses)  # steps 1..3 were good
    # the fault gone, a rerun resumes from the periodic checkpoint and reproduces the uninterrupted run
    again = LossRecorder()
    run_step(cfg, extra_callbacks=[again], enable_progress=False)
    assert sorted(again.losses) == [3, 4, 5, 6]
    assert_losses_match(again.losses, reference_losses)


def test_diverged_weights_never_replace_the_last_good_checkpoint(tmp_path):
    out = tmp_path / "run"
    cfg = load_step_config(None, step_overrides(out, **{"train.checkpoint_every": 1}))
    with pytest.raises(FloatingPointError) as err:  # step 3's update (lr = inf) makes the weights non-finite
        run_step(cfg, extra_callbacks=[InfiniteLR(after=2)], enable_progress=False)
    message = str(err.value)
    assert "non-finite weights at global step 3" in message and "checkpoint not written" in message
    assert f"the last periodic checkpoint {out / 'checkpoints' / 'last.ckpt'} holds the last good state" in message
    assert ckpt_step(out / "checkpoints" / "last.ckpt") == 2  # finite, and still the step-2 state
    assert not (out / "checkpoints" / LAST_GOOD_FILE).exists()  # nothing good to add


def test_inf_learning_rate_from_the_start_leaves_no_poisoned_checkpoint(tmp_path):
    out = tmp_path / "run"
    cfg = load_step_config(None, step_overrides(out, **{"train.checkpoint_every": 1}))
    with pytest.raises(FloatingPointError, match="no checkpoint of a good state exists"):
        run_step(cfg, extra_callbacks=[InfiniteLR(after=0)], enable_progress=False)  # the config refuses lr=inf
    assert not (out / "checkpoints").exists() or not any((out / "checkpoints").iterdir())  # nothing poisoned


# ============================================================================================ disk full, unwritable


@contextmanager
def tmpfs(path: Path, size: str):
    """A small tmpfs at `path` (root only; the test is skipped where mounting is not allowed)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                         text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


class FillDisk(L.Callback):
    """After the step-`after` checkpoint, fills the file system of `out` but for half a checkpoint."""

    def __init__(self, out: Path, after: int):
        self.out, self.after = out, after

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.after:
            ckpt = (self.out / "checkpoints" / "last.ckpt").stat().st_size
            free = shutil.disk_usage(self.out).free
            with open(self.out / "filler", "wb") as f:
                f.write(b"\0" * max(0, free - ckpt // 2))


def test_disk_full_during_checkpoint_keeps_the_previous_one_and_resumes(tmp_path, reference_losses):
    with tmpfs(tmp_path / "disk", "2m") as disk:
        out = disk / "run"
        cfg = load_step_config(None, step_overrides(out))
        with pytest.raises(OSError) as err:  # a real ENOSPC while writing the step-4 checkpoint
            run_step(cfg, extra_callbacks=[FillDisk(out, after=3)], enable_progress=False)
        assert err.value.errno == errno.ENOSPC
        assert f"cannot write checkpoint {out / 'checkpoints' / 'last.ckpt'}" in str(err.value)
        assert ckpt_step(out / "checkpoints" / "last.ckpt") == 2  # intact
        assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last.ckpt"]  # no torn temporary file
        (out / "filler").unlink()  # space freed: the rerun resumes from step 2
        again = LossRecorder()
        run_step(cfg, extra_callbacks=[again], enable_progress=False)
        assert sorted(again.losses) == [3, 4, 5, 6]
        assert_losses_match(again.losses, reference_losses)


def test_simulated_enospc_mid_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    """The same fault without a tmpfs (runs everywhere): torch.save writes half a checkpoint, then ENOSPC."""
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("global_step") == 2:
            buf = io.BytesIO()
            real_save(obj, buf)
            f.write(buf.getvalue()[:1000])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    out = tmp_path / "run"
    with pytest.raises(OSError, match=r"cannot write checkpoint .*last\.ckpt: No space left on device") as err:
        run_step(load_step_config(None, step_overrides(out, steps=2, **{"train.checkpoint_every": 1})),
                 enable_progress=False)
    assert err.value.errno == errno.ENOSPC
    assert ckpt_step(out / "checkpoints" / "last.ckpt") == 1
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last.ckpt"]


def test_unwritable_output_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cfg = load_step_config(None, step_overrides(blocker / "run"))
    started = time.monotonic()
    with pytest.raises(NotADirectoryError, match="a-file/run"):
        run_step(cfg, enable_progress=False)
    assert time.monotonic() - started < 5 and blocker.read_text() == "not a folder"


def test_read_only_output_folder_is_a_clear_error_and_keeps_the_checkpoint(tmp_path):
    with tmpfs(tmp_path / "disk", "2m") as disk:
        out = disk / "run"
        cfg = load_step_config(None, step_overrides(out, steps=2))
        run_step(cfg, enable_progress=False)
        shutil.rmtree(out / "final")  # as if interrupted after the step-2 checkpoint
        before = (out / "checkpoints" / "last.ckpt").read_bytes()
        res = subprocess.run(["mount", "-o", "remount,ro", str(disk)], capture_output=True, text=True)
        if res.returncode != 0:
            pytest.skip(f"cannot remount read-only: {res.stderr.strip()}")
        try:
            with pytest.raises(OSError, match="Read-only file system") as err:
                run_step(cfg, enable_progress=False)
            assert err.value.errno == errno.EROFS and str(out) in str(err.value)
        finally:
            subprocess.run(["mount", "-o", "remount,rw", str(disk)], capture_output=True)
        last = out / "checkpoints" / "last.ckpt"
        assert last.read_bytes() == before and ckpt_step(last) == 2
        assert (run_step(cfg, enable_progress=False) / "done.json").is_file()  # writable again: it finishes


def _copy_requests(tmp_path: Path, n: int):
    from benchmarks.harness import GenerationRequest

    src = tmp_path / "src.png"
    Image.new("RGB", (16, 16), (200, 10, 10)).save(src)
    return [GenerationRequest(id=f"r{i}", task="edit", prompt="p", seed=i, protocol="shapes5", sources=[str(src)],
                              width=16, height=16) for i in range(n)]


def test_generation_disk_full_keeps_earlier_images_and_resumes(tmp_path, monkeypatch):
    from benchmarks.harness import CopySourceGenerator, generate, image_is_complete

    requests = _copy_requests(tmp_path, 5)
    run = tmp_path / "run"
    real_save, calls = Image.Image.save, [0]

    def save(self, fp, format=None, **params):  # the 3rd image: half written, then the disk is full
        if format == "PNG" and isinstance(fp, io.BufferedWriter):  # the harness's atomic image writes
            calls[0] += 1
            if calls[0] == 3:
                fp.write(b"\x89PNG\r\n\x1a\n" + b"\0" * 50)
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, fp, format, **params)

    monkeypatch.setattr(Image.Image, "save", save)
    with pytest.raises(OSError, match=r"cannot write .*r2\.png: No space left on device"):
        generate(run, requests, CopySourceGenerator(), batch_size=1, progress=False)
    images = run / "images"
    assert sorted(p.name for p in images.iterdir()) == ["r0.png", "r1.png"]  # no torn file, no temporary file
    assert all(image_is_complete(p) for p in images.iterdir())
    monkeypatch.setattr(Image.Image, "save", real_save)
    rep = generate(run, requests, CopySourceGenerator(), batch_size=1, progress=False)
    assert (rep.skipped, rep.generated) == (2, 3)
    assert sorted(p.name for p in images.iterdir()) == [f"r{i}.png" for i in range(5)]
    with pytest.raises(OSError) as err:  # an output folder that cannot exist: a clear error naming it
        generate(tmp_path / "src.png" / "run", requests, CopySourceGenerator(), progress=False)
    assert err.value.errno == errno.ENOTDIR and "src.png/run" in str(err.value)
