"""The command line never misleads: signals save and resume, every run ends with a summary, logs get one-line
progress reports, `cologen curriculum --dry-run` says what would run, and a tiny run prints no library warning."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf
from tiny_run import tiny_overrides

from lit_cologen.data.datamodule import CoLoGenDataModule
from lit_cologen.training.config import load_curriculum, load_step_config
from lit_cologen.training.interrupt import TrainingInterrupted
from lit_cologen.training.run import run_curriculum, run_step

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
TINY = REPO / "experiments/presets/tiny.yaml"
CURRICULUM = REPO / "experiments/cologen/curriculum_tiny.yaml"
NOISE = re.compile(r"Warning|warn|Tip")
PROGRESS = re.compile(r"step (\d+)/(\d+) loss \d+\.\d{4} \d+\.\d samples/s eta \S+$")


def cologen(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lit_cologen.cli", *args], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def _noise(text: str) -> list[str]:
    return [line for line in text.splitlines() if NOISE.search(line)]


# ------------------------------------------------------------------------------------------------ signals


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_saves_the_current_step_and_the_rerun_resumes_to_the_end(tmp_path, signum, code):
    out = tmp_path / "run"
    args = ["train", str(TINY), *tiny_overrides(out, steps=40, **{"train.checkpoint_every": 1000})]
    err_file = tmp_path / "stderr.txt"
    with open(tmp_path / "stdout.txt", "w") as so, open(err_file, "w") as se:
        proc = subprocess.Popen([sys.executable, "-m", "lit_cologen.cli", *args], cwd=REPO, env=ENV, stdout=so,
                                stderr=se, text=True)
        deadline = time.time() + 240
        while "step 2/40" not in err_file.read_text() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)  # training steps have started (a progress line: stderr is not a terminal)
        assert proc.poll() is None, err_file.read_text()[-3000:]
        proc.send_signal(signum)
        rc = proc.wait(timeout=120)
    stderr = err_file.read_text()
    assert rc == code, stderr[-3000:]
    ckpt = torch.load(out / "checkpoints/last.ckpt", weights_only=True)
    assert 2 <= ckpt["global_step"] < 40  # the periodic cadence (1000) never wrote it: the signal did
    name = signal.Signals(signum).name
    assert stderr.strip().splitlines()[-1] == (
        f"cologen: step 't' interrupted ({name}): saved {out / 'checkpoints/last.ckpt'} at step "
        f"{ckpt['global_step']}/40; rerun the same command to resume from step {ckpt['global_step']}")
    assert "Traceback" not in stderr and not (out / "final").exists()

    again = cologen(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    steps = [int(m.group(1)) for m in map(PROGRESS.search, again.stderr.splitlines()) if m]
    assert steps[0] == ckpt["global_step"] + 1 and steps[-1] == 40  # resumed exactly after the saved step
    assert json.loads((out / "final/done.json").read_text())["global_step"] == 40
    assert not _noise(again.stdout + again.stderr)  # resuming mid-epoch into the same folder: no warnings either


class SignalAt(L.Callback):
    """Sends `signum` to this process after micro-batch `batch` (the first of an accumulation group)."""

    def __init__(self, batch: int, signum: int = signal.SIGINT):
        self.batch, self.signum, self.sent = batch, signum, False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == self.batch and not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.signum)


class MicroBatchLosses(L.Callback):
    """(global step before the micro-batch, its loss) of every micro-batch."""

    def __init__(self):
        self.losses: list[tuple[int, float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append((self._step, float(outputs["loss"])))


def test_ctrl_c_inside_an_accumulation_group_saves_at_its_end_and_resumes_the_same_losses(tmp_path):
    acc = {"train.global_batch": 4}  # batch 2 x accumulate 2
    full = MicroBatchLosses()
    run_step(load_step_config(TINY, tiny_overrides(tmp_path / "a", steps=6, **acc)), extra_callbacks=[full],
             enable_progress=False)

    cfg = load_step_config(TINY, tiny_overrides(tmp_path / "b", steps=6, **{**acc, "train.checkpoint_every": 1000}))
    first = MicroBatchLosses()
    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN when started in the background (nohup &)
    with pytest.raises(TrainingInterrupted) as info:  # micro-batch 4 = first half of step 3
        run_step(cfg, extra_callbacks=[first, SignalAt(batch=4)], enable_progress=False)
    assert info.value.saved_step == 3 and info.value.exit_code == 130
    assert not isinstance(info.value, Exception)  # an `except Exception` (a sweep's per-point handler) cannot eat it
    assert torch.load(tmp_path / "b/checkpoints/last.ckpt", weights_only=True)["global_step"] == 3
    assert signal.getsignal(signal.SIGINT) is before  # our handler is gone again, the previous one is back
    second = MicroBatchLosses()
    run_step(cfg, extra_callbacks=[second], enable_progress=False)
    assert [s for s, _ in first.losses] == [0, 0, 1, 1, 2, 2] and second.losses[0][0] == 3  # resumed after step 3
    resumed = first.losses + second.losses
    assert [s for s, _ in resumed] == [s for s, _ in full.losses] == [k // 2 for k in range(12)]
    for (step, got), (_, want) in zip(resumed, full.losses):
        assert got == pytest.approx(want, rel=1e-6, abs=1e-7), step


# ------------------------------------------------------------------------------------------ summary, console


def test_the_summary_reports_steps_losses_skips_outputs_and_the_next_command(tmp_path):
    out = tmp_path / "run"
    cfg = load_step_config(TINY, tiny_overrides(out, steps=4, **{"train.val_every": 2, "train.val_batches": 1,
                                                                  "train.log_every": 2}))
    dm = CoLoGenDataModule(cfg.data)
    dm.skip_logs["train"].record("forbidden_member", "shard-0.tar", "k1", "a .pickle member")  # as a loader does
    reports: list[str] = []
    final = run_step(cfg, datamodule=dm, enable_progress=False, report=reports.append)
    done = json.loads((final / "done.json").read_text())
    assert done["skipped"] == {"total": 1, "by_kind": {"forbidden_member": 1}}
    assert done["steps_this_run"] == 4 and done["train_loss_steps"] == 2 and done["val_loss"] is not None
    (summary,) = reports
    lines = summary.splitlines()
    assert re.fullmatch(r"step 't' finished: 4/4 steps \(4 in this run\) in \S+, \d+\.\d samples/s", lines[0])
    assert lines[1] == (f"  loss: train {done['train_loss']:.4f} (mean of the last 2 step(s)), "
                        f"val {done['val_loss']:.4f}")
    assert lines[2] == "  skipped samples: 1 (forbidden_member 1)"
    assert lines[3] == f"  outputs: {final} (README.md, adapters.safetensors, done.json)"  # README.md: the model card
    assert lines[4] == (f"  next: cologen sample --task inpaint --image IN.png --out OUT.png --preset tiny "
                        f"--adapters {final}")
    reports.clear()
    assert run_step(cfg, enable_progress=False, report=reports.append) == final
    assert reports == [f"step 't' already finished, skipped: 4 steps, train loss {done['train_loss']:.4f}, val loss "
                       f"{done['val_loss']:.4f}, skipped samples 1 (forbidden_member 1) ({final / 'done.json'})"]


def test_a_tiny_train_prints_progress_lines_and_a_summary_and_no_warning(tmp_path):
    out = tmp_path / "run"
    # a short epoch (4 batches < log interval 10), validation, and a run that ends in its second epoch
    res = cologen("train", str(TINY), *tiny_overrides(out, steps=6, **{
        "train.log_every": 10, "data.samples_per_epoch": 8, "train.val_every": 3, "train.val_batches": 1,
        "data.tasks": "[inpaint,edit]"}))
    assert res.returncode == 0, res.stderr[-3000:]
    assert not _noise(res.stdout + res.stderr), _noise(res.stdout + res.stderr)
    progress = [m.groups() for m in map(PROGRESS.search, res.stderr.splitlines()) if m]
    assert progress == [("6", "6")]  # every log_every (10) steps, and the last step
    assert "it/s]" not in res.stdout + res.stderr  # no tqdm bar in a log
    assert res.stdout.splitlines()[0].startswith("step 't' finished: 6/6 steps (6 in this run) in ")
    assert f"  outputs: {out / 'final'} (README.md, adapters.safetensors, done.json)" in res.stdout.splitlines()


def test_curriculum_summaries_name_the_next_step_and_finished_steps_are_one_line(tmp_path):
    overrides = [f"output_dir={tmp_path / 'cur'}", "train.max_steps=2", "train.val_every=0", "data.batch_size=2",
                 "train.global_batch=2"]
    reports: list[str] = []
    finals = run_curriculum(CURRICULUM, overrides, enable_progress=False, only=["base", "inpaint"],
                            report=reports.append)
    assert len(reports) == 2
    assert reports[0].splitlines()[-1] == "  next: step 'inpaint' (starting now)"
    assert reports[1].splitlines()[-1] == (f"  next: cologen curriculum {CURRICULUM} {' '.join(overrides)} "
                                           f"--only ground")
    reports.clear()
    run_curriculum(CURRICULUM, overrides, enable_progress=False, only=["base", "inpaint"], report=reports.append)
    assert [r.split(":")[0] for r in reports] == ["step 'base' already finished, skipped",
                                                 "step 'inpaint' already finished, skipped"]
    assert all(len(r.splitlines()) == 1 for r in reports) and str(finals[1] / "done.json") in reports[1]


# ------------------------------------------------------------------------------------------------ dry run


def test_curriculum_dry_run_lists_the_steps_with_their_status_and_trains_nothing(tmp_path):
    cur = tmp_path / "cur"
    overrides = [f"output_dir={cur}", "train.max_steps=2", "train.checkpoint_every=2", "train.val_every=0",
                 "data.batch_size=2",
                 "train.global_batch=4"]  # accumulate 2
    run_step(load_curriculum(CURRICULUM, overrides)[1][0], enable_progress=False)  # base: done
    _, steps = load_curriculum(CURRICULUM, overrides)
    partial = Path(steps[1].output_dir)  # inpaint: a checkpoint to resume
    (partial / "checkpoints").mkdir(parents=True)
    (partial / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(steps[1])))
    (partial / "checkpoints/last.ckpt").write_bytes((cur / "0_base/checkpoints/last.ckpt").read_bytes())
    other = OmegaConf.structured(steps[2])  # ground: a folder of another configuration
    other.optim.lr = 0.5
    (Path(steps[2].output_dir) / "checkpoints").mkdir(parents=True)  # something trained under another config
    (Path(steps[2].output_dir) / "config.yaml").write_text(OmegaConf.to_yaml(other))
    (Path(steps[2].output_dir) / "checkpoints/last.ckpt").write_bytes((cur / "0_base/checkpoints/last.ckpt").read_bytes())
    before = sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))

    res = cologen("curriculum", str(CURRICULUM), *overrides, "--dry-run")
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*")) == before  # nothing written
    lines = res.stdout.splitlines()
    assert lines[0] == f"curriculum 'cologen-tiny' ({CURRICULUM}), dry run: nothing is trained"
    assert lines[1].split() == ["#", "name", "iterations", "global", "batch", "accumulate", "samples", "status",
                                "output"]
    rows = {line.split()[1]: line for line in lines[2:8]}
    assert list(rows) == ["base", "inpaint", "ground", "control", "subject", "edit"]
    for name, line in rows.items():  # iterations, global batch, accumulation, samples = 2 x 4
        assert line.split()[2:6] == ["2", "4", "2", "8"], line
    assert re.search(r" done \(2 steps\) +" + re.escape(f"{cur}/0_base") + "$", rows["base"])
    assert re.search(r" partial \(checkpoint at step 2/2\) +" + re.escape(f"{cur}/1_inpaint") + "$", rows["inpaint"])
    assert re.search(r" mismatching \(1 key\(s\) differ from .*2_ground/config\.yaml: optim\.lr\) ", rows["ground"])
    assert re.search(r" todo +" + re.escape(f"{cur}/3_control") + "$", rows["control"])
    assert lines[8] == ("6 step(s), 12 iterations, 48 samples; to train: 5 step(s); mismatching: ground "
                        "(would be refused)")
    only = cologen("curriculum", str(CURRICULUM), *overrides, "--dry-run", "--only", "edit")
    assert only.returncode == 0 and [line.split()[1] for line in only.stdout.splitlines()[2:-1]] == ["edit"]
