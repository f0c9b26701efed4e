"""``train.loggers``: one tiny CPU run with TensorBoard, CSV, W&B (offline) and MLflow (local file store) at once.

Truth: each logger's own files, read back with the library's own reader where there is one (TensorBoard's
EventAccumulator, ``MlflowClient``, CSV as CSV). W&B in offline mode writes only its transaction log
(``run-<id>.wandb``, no ``files/config.yaml`` or summary until synced), and wandb 0.31 ships no Python reader of it:
``_wandb_records`` reads the file's framing (LevelDB log blocks, the format wandb documents in its ``sync`` code) and
parses each record with wandb's own protobuf schema (``wandb.proto.wandb_internal_pb2.Record``).

No network: the W&B and MLflow settings are local, and every Python-side connection to an internet address during
the run is recorded and refused (the W&B service process speaks over a Unix socket, which stays allowed).
"""

from __future__ import annotations

import csv
import glob
import json
import socket
import struct
from pathlib import Path

import pytest
import yaml

from lit_cologen.config import ConfigError
from lit_cologen.training.config import load_step_config
from lit_cologen.training.loggers import build_loggers, flat_config, mlflow_key, mlflow_tracking_uri
from lit_cologen.training.run import run_step
from lit_cologen.training.run_folder import config_differences
from tests.tiny_run import tiny_overrides

ALL = "[tensorboard,csv,wandb,mlflow]"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """A 2-step run, 2 experts, a sample grid at step 2, all four loggers; the internet connects it attempted."""
    tmp = tmp_path_factory.mktemp("loggers")
    out = tmp / "run"
    attempts: list = []
    real_connect = socket.socket.connect

    def guarded_connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(address)
            raise OSError("test_loggers: no network")
        return real_connect(self, address)

    with pytest.MonkeyPatch.context() as mp:
        for key, sub in (("WANDB_DIR", "wandb_dir"), ("WANDB_CACHE_DIR", "wandb_cache"),
                         ("WANDB_CONFIG_DIR", "wandb_config"), ("WANDB_DATA_DIR", "wandb_data")):
            mp.setenv(key, str(tmp / sub))
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        mp.delenv("WANDB_API_KEY", raising=False)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.setattr(socket.socket, "connect", guarded_connect)
        cfg = load_step_config(None, tiny_overrides(out, steps=2, **{
            "model.prw.num_experts": 2, "train.loggers": ALL, "train.sample_every": 2, "train.sample_steps": 1}))
        run_step(cfg, enable_progress=False)
    return {"out": out, "cfg": cfg, "attempts": attempts}


def test_no_internet_connection_was_attempted(run):
    assert run["attempts"] == []


def test_csv_has_the_loss_the_routing_shares_and_the_config(run):
    folder = run["out"] / "csv" / "version_0"
    with open(folder / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    losses = [r["train/loss"] for r in rows if r.get("train/loss")]
    assert len(losses) == 2 and all(float(v) > 0 for v in losses)
    shares = [r for r in rows if r.get("routing/block_00/expert_0")]  # the histogram's stand-in in CSV
    assert shares and all(abs(float(r["routing/block_00/expert_0"]) + float(r["routing/block_00/expert_1"]) - 1)
                          < 1e-6 for r in shares)
    hparams = yaml.safe_load((folder / "hparams.yaml").read_text())
    assert hparams["model.prw.num_experts"] == 2 and hparams["train.loggers"] == ["tensorboard", "csv", "wandb",
                                                                                    "mlflow"]
    assert hparams["train.max_steps"] == 2 and hparams["global_batch"] == 2


def _wandb_records(path: Path) -> list:
    """The records of a W&B transaction log (``run-<id>.wandb``): a 7-byte header (``:W&B``, magic, version), then
    32 KiB blocks of chunks (crc32, length, type: full / first / middle / last), each record a protobuf ``Record``."""
    from wandb.proto import wandb_internal_pb2

    data, block, pos, buf, records = path.read_bytes(), 32768, 7, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # the block's tail is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        buf += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # full, last
            record = wandb_internal_pb2.Record()
            record.ParseFromString(buf)
            records.append(record)
            buf = b""
    return records


def test_wandb_offline_run_has_the_config_histograms_and_the_sample_grid(run):
    runs = glob.glob(str(run["out"] / "wandb" / "offline-run-*"))
    assert len(runs) == 1
    folder = Path(runs[0])
    records = _wandb_records(next(folder.glob("run-*.wandb")))
    config = {u.key: json.loads(u.value_json) for r in records if r.WhichOneof("record_type") == "config"
              for u in r.config.update}
    assert config["model.prw.num_experts"] == 2 and config["train.wandb.mode"] == "offline"
    history: dict[str, list] = {}
    for r in records:
        if r.WhichOneof("record_type") == "history":
            for item in r.history.item:
                history.setdefault(item.key or "/".join(item.nested_key), []).append(json.loads(item.value_json))
    assert len(history["train/loss"]) == 2
    assert set(history["routing/block_00/_type"]) == {"histogram"}  # a W&B histogram per block
    assert all(sum(counts) == 2 for counts in history["routing/block_00/values"])  # batch 2, one decision each
    assert "routing_task/inpaint/expert_0" in history
    assert history["samples/_type"] == ["images/separated"]
    assert list(folder.glob("files/media/images/samples_*.png"))
    exits = [r.exit.exit_code for r in records if r.WhichOneof("record_type") == "exit"]
    assert exits == [0]  # finished at the end of the fit (FinishLoggers)


def test_mlflow_run_has_params_loss_and_the_sample_grid(run, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = mlflow_tracking_uri(run["cfg"])
    assert uri == f"file:{(run['out'] / 'mlruns').resolve()}"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("lit-cologen")
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.info.run_name == "t" and found.info.status == "FINISHED"
    assert found.data.params["model.prw.num_experts"] == "2" and found.data.params["train.mlflow.experiment"] == \
        "lit-cologen"
    losses = client.get_metric_history(found.info.run_id, "train/loss")
    assert len(losses) == 2 and all(m.value > 0 for m in losses)
    assert "routing/block_00/expert_1" in found.data.metrics  # the histogram's stand-in in MLflow
    assert mlflow_key("routing_t/t<0.33/expert_0") in found.data.metrics or \
        mlflow_key("routing_t/t<0.66/expert_0") in found.data.metrics
    images = [a.path for a in client.list_artifacts(found.info.run_id, "images")]
    assert any(p.startswith("images/samples+step+2") and p.endswith(".png") for p in images)


def test_tensorboard_has_histograms_shares_and_the_sample_grid(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run["out"] / "tb"), size_guidance={"histograms": 0, "scalars": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    assert sorted(t for t in tags["histograms"] if t.startswith("routing/block_")) == \
        [f"routing/block_{k:02d}" for k in range(4)]
    assert "routing_task/inpaint" in tags["histograms"] and "routing_task/inpaint/expert_0" in tags["scalars"]
    assert not [t for t in tags["scalars"] if t.startswith("routing/block_")]  # TensorBoard shows the histogram
    assert "samples" in tags["images"] and "train/loss" in tags["scalars"]
    assert (run["out"] / "tb" / "hparams.yaml").is_file()


def _cfg(tmp_path, **extra):
    return load_step_config(None, tiny_overrides(tmp_path / "run", **extra))


def test_default_is_tensorboard_in_tb_and_an_empty_list_logs_nothing(tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger

    cfg = _cfg(tmp_path)
    assert cfg.train.loggers == ["tensorboard"] and cfg.train.wandb.mode == "offline"
    (logger,) = build_loggers(cfg, tmp_path / "run")
    assert isinstance(logger, TensorBoardLogger) and Path(logger.log_dir) == tmp_path / "run" / "tb"
    assert build_loggers(_cfg(tmp_path, **{"train.loggers": "[]"}), tmp_path / "run") == []


@pytest.mark.parametrize(("value", "words"), [("[tensorboard,comet]", "unknown logger(s) ['comet']"),
                                              ("[csv,wandb,csv]", "names ['csv'] more than once")])
def test_bad_loggers_are_refused_naming_the_key(tmp_path, value, words):
    with pytest.raises(ConfigError, match=r"train\.loggers") as err:
        _cfg(tmp_path, **{"train.loggers": value})
    assert words in str(err.value)


def test_bad_wandb_mode_is_refused_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.wandb\.mode"):
        _cfg(tmp_path, **{"train.wandb.mode": "cloud"})


def test_changing_the_loggers_keeps_a_run_folder_resumable(tmp_path):
    a = _cfg(tmp_path)
    b = _cfg(tmp_path, **{"train.loggers": ALL, "train.wandb.project": "p", "train.mlflow.tracking_uri": "file:/x"})
    assert config_differences(a, b) == []


def test_flat_config_uses_the_dotted_override_keys(tmp_path):
    flat = flat_config(_cfg(tmp_path))
    assert flat["model.prw.rank"] == 4 and flat["train.loggers"] == ["tensorboard"] and flat["train.ema"] is None
