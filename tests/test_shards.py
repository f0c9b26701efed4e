"""Shard writing (caps, atomic rename, determinism), index.json, the raw reader, URL expansion and the data CLI."""

from __future__ import annotations

import argparse
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest

from lit_cologen.data.cli import add_data_cli
from lit_cologen.data.decode import decode_raw
from lit_cologen.data.schema import TASKS
from lit_cologen.data.shapes import make_sample
from lit_cologen.data.shards import (
    INDEX_NAME,
    ShardWriter,
    SkipLog,
    build_index,
    expand_shards,
    find_indexes,
    iter_shard,
    read_index,
    shard_task_counts,
    tar_final_bytes,
    update_index,
    write_shapes5_shards,
)


def test_count_cap_and_index(tmp_path):
    with ShardWriter(tmp_path, "caps", maxcount=10) as w:
        for i in range(25):
            w.write(make_sample(TASKS[i % 2], i))
    assert sorted(w.shards) == ["caps-000000.tar", "caps-000001.tar", "caps-000002.tar"]
    assert [w.shards[n].samples for n in sorted(w.shards)] == [10, 10, 5]
    index = update_index(tmp_path, w.shards, {"caps": {"note": "test"}})
    assert index["totals"]["samples"] == 25
    assert index["totals"]["tasks"] == {"inpaint": 13, "ground": 12}
    assert index["shards"]["caps-000000.tar"]["tasks"] == {"inpaint": 5, "ground": 5}
    for name, info in index["shards"].items():
        assert info["bytes"] == (tmp_path / name).stat().st_size
    assert read_index(tmp_path / INDEX_NAME) == index
    # a rescan of the tars gives the same shard table
    rebuilt = build_index(tmp_path)
    assert rebuilt["shards"] == index["shards"] and rebuilt["totals"] == index["totals"]


def test_size_cap(tmp_path):
    samples = [make_sample("control", i) for i in range(30)]
    one = max(sum(512 + -(-len(v) // 512) * 512 for k, v in s.to_wds().items() if not k.startswith("_")) for s in samples)
    maxsize = tar_final_bytes(4 * one)
    with ShardWriter(tmp_path, "size", maxcount=1000, maxsize=maxsize) as w:
        for s in samples:
            w.write(s)
    sizes = [(tmp_path / n).stat().st_size for n in w.shards]
    assert len(sizes) > 3
    assert max(sizes) <= maxsize
    assert sum(i.samples for i in w.shards.values()) == 30
    # every archive is a complete tar of whole samples (a control sample has 6 members), and nearly full
    for n, info in w.shards.items():
        with tarfile.open(tmp_path / n) as tf:
            assert len(tf.getnames()) == 6 * info.samples
    assert min(i.samples for n, i in sorted(w.shards.items())[:-1]) >= 3


def test_writes_are_atomic(tmp_path):
    w = ShardWriter(tmp_path, "atomic", maxcount=100)
    w.write(make_sample("edit", 0))
    assert not (tmp_path / "atomic-000000.tar").exists()  # only the temporary file exists while writing
    assert any(p.name.startswith("atomic-000000.tar.tmp-") for p in tmp_path.iterdir())
    w.close()
    assert (tmp_path / "atomic-000000.tar").exists()
    assert not any(".tmp-" in p.name for p in tmp_path.iterdir())
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path, "crash", maxcount=1) as w2:
            w2.write(make_sample("edit", 1))  # finishes crash-000000 when the next sample arrives
            w2.write(make_sample("edit", 2))
            raise RuntimeError("builder died")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "crash-000000.tar" in names and "crash-000001.tar" not in names
    assert not any(".tmp-" in n for n in names)


def test_same_samples_same_bytes(tmp_path):
    for d in ("a", "b"):
        with ShardWriter(tmp_path / d, "det", maxcount=100) as w:
            for i in range(5):
                w.write(make_sample("subject", i))
    assert (tmp_path / "a" / "det-000000.tar").read_bytes() == (tmp_path / "b" / "det-000000.tar").read_bytes()


def test_shapes5_shards_round_trip(tmp_path):
    index = write_shapes5_shards(tmp_path, 7, split="eval", resolution=32, maxcount=4)
    assert index["totals"]["samples"] == 35 and index["totals"]["tasks"] == {t: 7 for t in sorted(TASKS)}
    assert index["meta"]["shapes5-eval-edit"]["split"] == "eval"
    for name, info in index["shards"].items():
        assert len(info["tasks"]) == 1 and name.startswith(f"shapes5-eval-{next(iter(info['tasks']))}-")
    skips = SkipLog(shared=False)
    seen = 0
    for url in expand_shards(str(tmp_path)):
        for raw in iter_shard(url, skips):
            s = decode_raw(raw)
            ref = make_sample(s.task, s.meta["index"], split="eval", resolution=32)
            assert s.key == ref.key and s.prompt == ref.prompt and s.cond_type == ref.cond_type and s.meta == ref.meta
            np.testing.assert_array_equal(np.asarray(s.target), np.asarray(ref.target))
            np.testing.assert_array_equal(np.asarray(s.source), np.asarray(ref.source))
            seen += 1
    assert seen == 35 and skips.total() == 0


def test_expand_and_find_indexes(tmp_path):
    write_shapes5_shards(tmp_path, 3, tasks=("inpaint", "edit"), maxcount=2)
    names = sorted(p.name for p in tmp_path.glob("*.tar"))
    assert len(names) == 4
    by_dir = expand_shards(str(tmp_path))
    assert [Path(u).name for u in by_dir] == names
    brace = expand_shards(str(tmp_path / "shapes5-train-edit-{000000..000001}.tar"))
    assert [Path(u).name for u in brace] == ["shapes5-train-edit-000000.tar", "shapes5-train-edit-000001.tar"]
    assert [Path(u).name for u in expand_shards(str(tmp_path / "*inpaint*.tar"))] == names[2:]
    assert expand_shards(["pipe:cat x.tar", "https://host/a-{0..1}.tar"]) == ["pipe:cat x.tar", "https://host/a-0.tar", "https://host/a-1.tar"]
    idx = find_indexes([str(tmp_path / "*.tar")])
    counts = shard_task_counts(by_dir, idx)
    assert counts[by_dir[0]] == {"edit": 2}
    assert shard_task_counts(["elsewhere/x.tar"], idx) == {"elsewhere/x.tar": None}


def test_pipe_urls_read_through_gopen(tmp_path):
    write_shapes5_shards(tmp_path, 2, tasks=("ground",))
    path = next(tmp_path.glob("*.tar"))
    skips = SkipLog(shared=False)
    keys = [r.key for r in iter_shard(f"pipe:cat {path}", skips)]
    assert keys == ["train_ground_s0_00000000", "train_ground_s0_00000001"] and skips.total() == 0
    list(iter_shard(f"pipe:cat {tmp_path}/missing.tar", skips))
    assert skips.counts()["unreadable_shard"] + skips.counts()["empty_shard"] >= 1


def test_http_urls_read_through_gopen(tmp_path):
    import functools
    import http.server
    import threading

    write_shapes5_shards(tmp_path, 2, tasks=("control",))
    name = next(tmp_path.glob("*.tar")).name
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        skips = SkipLog(shared=False)
        keys = [r.key for r in iter_shard(f"{base}/{name}", skips)]
        assert keys == ["train_control_s0_00000000", "train_control_s0_00000001"] and skips.total() == 0
        assert list(iter_shard(f"{base}/missing.tar", skips)) == []
        (report,) = skips.reports()
        assert report["kind"] == "unreadable_shard" and report["shard"].endswith("missing.tar")
    finally:
        server.shutdown()


def test_stopping_early_reports_nothing(tmp_path):
    write_shapes5_shards(tmp_path, 5, tasks=("edit",))
    path = next(tmp_path.glob("*.tar"))
    skips = SkipLog(shared=False)
    for url in (str(path), f"pipe:cat {path}"):
        it = iter_shard(url, skips)
        next(it)
        it.close()
    assert skips.total() == 0


def test_skiplog_pickles_as_snapshot():
    import pickle

    log = SkipLog(slots=2)
    log.record("bad_image", "s.tar", "k1", "boom")
    copy = pickle.loads(pickle.dumps(log))
    assert copy.counts()["bad_image"] == 1 and copy.reports()[0]["key"] == "k1"


def test_data_cli(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="cologen data")
    add_data_cli(parser.add_subparsers(dest="cmd", required=True))
    args = parser.parse_args(["shapes5", "--out", str(tmp_path), "--n-per-task", "3", "--tasks", "inpaint,control",
                              "--resolution", "32", "--maxsize", "1M"])  # fmt: skip
    assert args.maxsize == 1 << 20
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["samples"] == 6 and out["tasks"] == {"control": 3, "inpaint": 3}
    os.remove(tmp_path / INDEX_NAME)
    args = parser.parse_args(["index", str(tmp_path)])
    assert args.func(args) == 0
    assert read_index(tmp_path / INDEX_NAME)["totals"]["samples"] == 6


def test_writer_accepts_encoded_dicts_and_checks_arguments(tmp_path):
    with ShardWriter(tmp_path, "raw") as w:
        w.write({"__key__": "k0", "task.txt": b"edit", "prompt.txt": b"x"})
    with tarfile.open(tmp_path / "raw-000000.tar") as tf:
        assert tf.getnames() == ["k0.prompt.txt", "k0.task.txt"]
        assert tf.extractfile("k0.task.txt").read() == b"edit"
    with pytest.raises(ValueError):
        ShardWriter(tmp_path, "bad", maxcount=0)
    with pytest.raises(ValueError):
        ShardWriter(tmp_path, "a/b")
    with pytest.raises(ValueError):
        (tmp_path / "fake.json").write_text("{}")
        read_index(tmp_path / "fake.json")


def test_rerun_is_idempotent_and_removes_stale_shards(tmp_path):
    write_shapes5_shards(tmp_path, 6, tasks=("edit",), maxcount=2)
    first = {p.name: p.read_bytes() for p in tmp_path.glob("*.tar")}
    assert len(first) == 3
    index = write_shapes5_shards(tmp_path, 3, tasks=("edit",), maxcount=2)  # a smaller set under the same names
    names = sorted(p.name for p in tmp_path.glob("*.tar"))
    assert names == ["shapes5-train-edit-000000.tar", "shapes5-train-edit-000001.tar"]
    assert index["totals"]["samples"] == 3 and sorted(index["shards"]) == names
    more = write_shapes5_shards(tmp_path, 2, tasks=("edit",), start=3)  # a second set is added, not overwritten
    assert more["totals"]["samples"] == 5 and "shapes5-train-edit-from3-000000.tar" in more["shards"]
