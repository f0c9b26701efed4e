"""WebDataset shards: an atomic, size- and count-capped writer, the ``index.json`` file, a robust raw reader.

Writing::

    with ShardWriter(out_dir, "shapes5-train-inpaint", maxcount=1000, maxsize=1 << 30) as w:
        w.write(sample)                      # a schema Sample (or its to_wds() dict)
    update_index(out_dir, w.shards)          # merge into <out_dir>/index.json

Each shard is written to ``NAME.tar.tmp-<pid>`` and renamed to ``NAME.tar`` only once complete (``os.replace``),
so a crashed build never leaves a half shard under a real name. Shards never exceed ``maxsize`` bytes (final tar
size, padding included) unless a single sample alone is larger, and hold at most ``maxcount`` samples. Tar member
times are fixed (``mtime``), so the same samples give byte-identical shards.

``index.json`` (one per folder) lists every shard with its sample count per task, so loaders know the tasks of each
shard and the epoch length without opening the tars::

    {"format": "lit-cologen/shards-index/1",
     "shards": {"shapes5-train-inpaint-000000.tar": {"samples": 1000, "bytes": 9062400, "tasks": {"inpaint": 1000}}},
     "totals": {"shards": 5, "samples": 5000, "bytes": ..., "tasks": {"inpaint": 1000, ...}},
     "meta": {"shapes5-train-inpaint": {"generator": "shapes5", "split": "train", "resolution": 64, ...}}}

Reading: :func:`iter_shard` streams one shard URL (local path, ``file:``, ``pipe:``, ``http(s)://`` through
webdataset's ``gopen``; ``s3://`` is rewritten to ``pipe:aws s3 cp URL -``) into :class:`RawSample` groups of
member bytes, and reports unreadable, truncated and empty shards to a :class:`SkipLog` instead of raising.
Nothing is decoded here, and nothing is ever unpickled.

Commands: ``_cmd_shapes5`` (write Shapes-5 shards) and ``_cmd_index`` (rebuild ``index.json``), whose parsers
(``cologen data shapes5`` / ``index``, or ``python -m lit_cologen.data.cli``) live in :mod:`lit_cologen.data.cli`.
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import json
import logging
import multiprocessing as mp
import os
import re
import tarfile
from dataclasses import dataclass, field
from multiprocessing.context import get_spawning_popen
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import webdataset as wds
from webdataset.gopen import gopen
from webdataset.shardlists import expand_urls

from lit_cologen.utils.atomic import atomic_write_text

from .builders._common import DataSourceError
from .schema import TASKS, Sample

logger = logging.getLogger(__name__)

INDEX_NAME = "index.json"
INDEX_FORMAT = "lit-cologen/shards-index/1"
_BLOCK = 512
_RECORD = 20 * _BLOCK  # tarfile pads archives to a multiple of this

# ============================================================================================================ writing


def tar_member_bytes(size: int, name: str = "") -> int:
    """Bytes one member of ``size`` bytes takes in a tar: header + data padded to 512, plus (an upper bound of)
    the PAX extended header tarfile adds for a name longer than 99 bytes or not ASCII."""
    extra = 0
    raw = name.encode("utf-8")
    if len(raw) > 99 or not name.isascii():
        extra = _BLOCK + -(-(len(raw) * 2 + 64) // _BLOCK) * _BLOCK
    return _BLOCK + -(-size // _BLOCK) * _BLOCK + extra


def tar_final_bytes(members_bytes: int) -> int:
    """Final archive size for members totalling ``members_bytes``: + end-of-archive blocks, padded to 10240."""
    return -(-(members_bytes + 2 * _BLOCK) // _RECORD) * _RECORD


@dataclass
class ShardInfo:
    """One written shard: sample count, bytes on disk and samples per task."""

    samples: int = 0
    bytes: int = 0
    tasks: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"samples": self.samples, "bytes": self.bytes, "tasks": dict(sorted(self.tasks.items()))}


class ShardWriter:
    """Write samples into ``<out_dir>/<prefix>-%06d.tar`` shards (webdataset ``TarWriter``), atomically.

    A new shard starts when the current one holds ``maxcount`` samples or the next sample would push its final
    size over ``maxsize`` bytes. ``shards`` maps each finished shard's file name to its :class:`ShardInfo`.
    Use as a context manager, or call :meth:`close`; on an exception inside ``with`` the unfinished shard is
    deleted (finished shards stay).
    """

    def __init__(
        self,
        out_dir: str | Path,
        prefix: str,
        maxcount: int = 1000,
        maxsize: int = 1 << 30,
        start_shard: int = 0,
        mtime: int = 0,
    ) -> None:
        if maxcount < 1:
            raise ValueError(f"maxcount must be >= 1, got {maxcount}")
        if maxsize < tar_final_bytes(0) + _BLOCK:
            raise ValueError(f"maxsize must be >= {tar_final_bytes(0) + _BLOCK} bytes, got {maxsize}")
        if not prefix or "/" in prefix:
            raise ValueError(f"prefix must be a non-empty file name prefix, got {prefix!r}")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.maxcount = maxcount
        self.maxsize = maxsize
        self.mtime = int(mtime)  # an int: a float mtime makes tarfile add a PAX header to every member
        self.shards: dict[str, ShardInfo] = {}
        self._next_shard = start_shard
        self._tar: wds.TarWriter | None = None
        self._file = None
        self._tmp: Path | None = None
        self._final: Path | None = None
        self._info = ShardInfo()
        self._members_bytes = 0

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write(self, sample: Sample | Mapping[str, Any]) -> None:
        """Append one sample (a schema Sample, validated, or an already encoded webdataset dict of bytes)."""
        obj = sample.to_wds() if isinstance(sample, Sample) else dict(sample)
        if "__key__" not in obj:
            raise ValueError("sample dict needs a '__key__'")
        key = str(obj["__key__"])
        need = sum(tar_member_bytes(len(v), f"{key}.{k}") for k, v in obj.items() if not k.startswith("_"))
        if self._tar is not None and (
            self._info.samples >= self.maxcount or tar_final_bytes(self._members_bytes + need) > self.maxsize
        ):
            self._finish()
        if self._tar is None:
            self._start()
        assert self._tar is not None
        self._tar.write(obj)
        self._members_bytes = self._tar.tarstream.offset  # exact bytes so far (tarfile's own count)
        self._info.samples += 1
        task = obj.get("task.txt", b"")
        task = task.decode("utf-8", "replace") if isinstance(task, (bytes, bytearray)) else str(task)
        self._info.tasks[task] = self._info.tasks.get(task, 0) + 1

    def close(self) -> dict[str, ShardInfo]:
        """Finish the current shard; returns ``shards``."""
        if self._tar is not None:
            self._finish()
        return self.shards

    def abort(self) -> None:
        """Drop the unfinished shard (its temporary file is deleted)."""
        if self._tar is not None:
            try:
                self._tar.close()
            finally:
                self._tar = None
                if self._file is not None:
                    self._file.close()
                if self._tmp is not None and self._tmp.exists():
                    self._tmp.unlink()

    def _start(self) -> None:
        name = f"{self.prefix}-{self._next_shard:06d}.tar"
        self._next_shard += 1
        self._final = self.out_dir / name
        self._tmp = self.out_dir / f"{name}.tmp-{os.getpid()}"
        self._file = open(self._tmp, "wb")
        self._tar = wds.TarWriter(self._file, encoder=False, mtime=self.mtime)
        self._info = ShardInfo()
        self._members_bytes = 0

    def _finish(self) -> None:
        assert self._tar is not None and self._tmp is not None and self._final is not None and self._file is not None
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._tar = None
        self._info.bytes = self._tmp.stat().st_size
        os.replace(self._tmp, self._final)
        self.shards[self._final.name] = self._info


# ============================================================================================================== index


def index_totals(shards: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    tasks: dict[str, int] = {}
    for info in shards.values():
        for t, n in info.get("tasks", {}).items():
            tasks[t] = tasks.get(t, 0) + int(n)
    return {
        "shards": len(shards),
        "samples": sum(int(i.get("samples", 0)) for i in shards.values()),
        "bytes": sum(int(i.get("bytes", 0)) for i in shards.values()),
        "tasks": dict(sorted(tasks.items())),
    }


def update_index(
    out_dir: str | Path,
    shards: Mapping[str, ShardInfo | Mapping[str, Any]],
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Merge ``shards`` (file name -> info) and ``meta`` (prefix -> dict) into ``<out_dir>/index.json`` (atomic).

    Entries for shard files that no longer exist are dropped. Concurrent updates of one folder are not locked:
    build in parallel with ``write_shapes5_shards(workers=N)``, which writes the index once.
    """
    out_dir = Path(out_dir)
    path = out_dir / INDEX_NAME
    index = read_index(path) if path.exists() else {"format": INDEX_FORMAT, "shards": {}, "meta": {}}
    for name, info in shards.items():
        index["shards"][name] = info.to_json() if isinstance(info, ShardInfo) else dict(info)
    index["shards"] = {n: i for n, i in sorted(index["shards"].items()) if (out_dir / n).exists()}
    index.setdefault("meta", {}).update(meta or {})
    index["totals"] = index_totals(index["shards"])
    index["format"] = INDEX_FORMAT
    atomic_write_text(path, json.dumps(index, indent=1, sort_keys=True) + "\n")
    return index


def read_index(path_or_url: str | Path) -> dict[str, Any]:
    """Load an ``index.json`` (local path or any URL gopen opens); ValueError if it is not one."""
    with gopen(str(path_or_url), "rb") as f:
        data = json.loads(f.read().decode("utf-8"))
    if not isinstance(data, dict) or data.get("format") != INDEX_FORMAT or not isinstance(data.get("shards"), dict):
        raise ValueError(f"{path_or_url}: not a lit-cologen shard index (format {INDEX_FORMAT!r})")
    return data


def build_index(shard_dir: str | Path, meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Rescan every ``*.tar`` in ``shard_dir`` (reading only ``task.txt`` members) and rewrite ``index.json``.

    Unreadable or truncated shards are logged and still listed with what could be counted.
    """
    shard_dir = Path(shard_dir)
    skips = SkipLog(slots=1, shared=False)
    shards: dict[str, ShardInfo] = {}
    for path in sorted(shard_dir.glob("*.tar")):
        info = ShardInfo(bytes=path.stat().st_size)
        for raw in iter_shard(str(path), skips, select=lambda ext: ext == "task.txt"):
            task = raw.members.get("task.txt", b"?").decode("utf-8", "replace").strip()
            info.samples += 1
            info.tasks[task] = info.tasks.get(task, 0) + 1
        shards[path.name] = info
    if skips.total():
        logger.warning("index of %s: problems while scanning: %s", shard_dir, skips.counts())
    old = shard_dir / INDEX_NAME
    if old.exists():
        old.unlink()
    return update_index(shard_dir, shards, meta)


# ============================================================================================================ skip log

SKIP_KINDS: tuple[str, ...] = (
    "unreadable_shard",  # the URL could not be opened or is not a tar
    "truncated_shard",  # the tar ends early (mid-member, or without its end-of-archive blocks)
    "empty_shard",  # a shard with no members
    "forbidden_member",  # a .pyd/.pickle/.pth/... member: never decoded, the sample is refused
    "duplicate_member",  # the same member twice in one sample
    "missing_member",  # a required member (task, prompt, target, source, meta, cond_type) is absent
    "unknown_task",  # task.txt not in TASKS
    "bad_cond_type",  # control without a valid cond_type, or a cond_type on another task
    "bad_text",  # a .txt member that is not UTF-8
    "bad_meta",  # meta.json that is not a JSON object
    "bad_image",  # a PNG member that does not decode (or is not a PNG, or is too large)
    "bad_size",  # image sizes that disagree (aligned tasks, mask) or are too small; latents of the wrong size
    "bad_latents",  # an encoded shard's latents.safetensors that does not load or holds the wrong tensors
)
REPORT_BYTES = 512


class SkipLog:
    """Counts and reports skipped input (shard + key + kind + message), shared by all DataLoader workers.

    Counters and the first ``max_reports`` reports of each worker live in shared memory (one row per worker, so no
    locks), so the main process sees what its workers skipped at any time, including at the end of a finite
    stream. Every skip is also logged (WARNING; the first 20 per worker, then every 1000th). Counts are events:
    a resampled stream that meets the same bad sample twice counts it twice.
    """

    def __init__(self, slots: int = 1, max_reports: int = 64, shared: bool = True) -> None:
        self.slots = max(1, int(slots))
        self.max_reports = int(max_reports)
        n_counts, n_bytes = self.slots * len(SKIP_KINDS), self.slots * self.max_reports * REPORT_BYTES
        if shared:
            self._counts = mp.RawArray(ctypes.c_int64, n_counts)
            self._n_reports = mp.RawArray(ctypes.c_int64, self.slots)
            self._reports = mp.RawArray(ctypes.c_char, n_bytes)
        else:
            self._counts = (ctypes.c_int64 * n_counts)()
            self._n_reports = (ctypes.c_int64 * self.slots)()
            self._reports = (ctypes.c_char * n_bytes)()

    _ARRAYS = ("_counts", "_n_reports", "_reports")

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if get_spawning_popen() is None:  # plain pickling / deepcopy: a snapshot, no longer shared
            for name in self._ARRAYS:
                arr = state[name]
                state[name] = ("snapshot", arr._type_, len(arr), bytes(memoryview(arr).cast("B")))
        return state  # while spawning a worker the shared arrays go as they are (multiprocessing shares them)

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name in self._ARRAYS:
            val = state[name]
            if isinstance(val, tuple) and val and val[0] == "snapshot":
                _, ctype, n, data = val
                state[name] = (ctype * n).from_buffer_copy(data)
        self.__dict__.update(state)

    @staticmethod
    def _slot_of_current_worker() -> int:
        import torch.utils.data

        info = torch.utils.data.get_worker_info()
        return 0 if info is None else int(info.id)

    def record(self, kind: str, shard: str, key: str, message: str) -> None:
        """Count one skip of ``kind`` and keep its report (shard URL, sample key, message)."""
        if kind not in SKIP_KINDS:
            raise ValueError(f"unknown skip kind {kind!r}")
        slot = self._slot_of_current_worker() % self.slots
        ki = SKIP_KINDS.index(kind)
        self._counts[slot * len(SKIP_KINDS) + ki] += 1
        n = self._n_reports[slot]
        if n < self.max_reports:
            report = {"kind": kind, "shard": str(shard)[-200:], "key": str(key)[:120], "message": str(message)[:150]}
            data = json.dumps(report).encode("utf-8")[:REPORT_BYTES]
            start = (slot * self.max_reports + n) * REPORT_BYTES
            self._reports[start : start + REPORT_BYTES] = data.ljust(REPORT_BYTES, b"\0")
            self._n_reports[slot] = n + 1
        total = sum(self._counts[slot * len(SKIP_KINDS) : (slot + 1) * len(SKIP_KINDS)])
        if total <= 20 or total % 1000 == 0:
            logger.warning("skipped input (%s) shard=%s key=%s: %s [worker %d: %d skipped so far]",
                           kind, shard, key, message, slot, total)  # fmt: skip

    def counts(self) -> dict[str, int]:
        """Skips per kind, summed over workers (kinds with zero included)."""
        k = len(SKIP_KINDS)
        return {kind: sum(self._counts[s * k + i] for s in range(self.slots)) for i, kind in enumerate(SKIP_KINDS)}

    def total(self) -> int:
        return sum(self.counts().values())

    def reports(self) -> list[dict[str, str]]:
        """The kept reports (first ``max_reports`` per worker), worker by worker."""
        out = []
        for s in range(self.slots):
            for j in range(self._n_reports[s]):
                start = (s * self.max_reports + j) * REPORT_BYTES
                raw = bytes(self._reports[start : start + REPORT_BYTES]).rstrip(b"\0")
                try:
                    out.append(json.loads(raw.decode("utf-8")))
                except (UnicodeDecodeError, json.JSONDecodeError):  # a report cut inside a multi-byte char
                    out.append({"kind": "?", "shard": "?", "key": "?", "message": raw.decode("utf-8", "replace")})
        return out

    def summary(self) -> dict[str, Any]:
        """{"total": n, "by_kind": {kind: n (nonzero only)}, "reports": [...]}."""
        counts = {k: v for k, v in self.counts().items() if v}
        return {"total": sum(counts.values()), "by_kind": counts, "reports": self.reports()}

    def reset(self) -> None:
        ctypes.memset(self._counts, 0, ctypes.sizeof(self._counts))
        ctypes.memset(self._n_reports, 0, ctypes.sizeof(self._n_reports))


# ============================================================================================================ reading


@dataclass
class RawSample:
    """One sample's undecoded tar members: ``members`` maps the extension ("task.txt", ...) to bytes."""

    shard: str
    key: str
    members: dict[str, bytes]
    names: list[str] = field(default_factory=list)  # every member extension seen, read or not
    problem: tuple[str, str] | None = None  # (skip kind, message) found while reading, e.g. a duplicate member


def open_url(url: str):
    """Open a shard URL for reading with webdataset's gopen (``s3://`` goes through ``aws s3 cp``)."""
    if url.startswith("s3://"):
        url = f"pipe:aws s3 cp {url} -"
    return gopen(url, "rb")


def split_member_name(name: str) -> tuple[str | None, str | None]:
    """"dir/KEY.target.png" -> ("dir/KEY", "target.png") (webdataset's rule: the key ends at the first dot of
    the base name); (None, None) without an extension."""
    m = re.match(r"^((?:.*/|)[^.]+)[.]([^/]*)$", name)
    return (m.group(1), m.group(2).lower()) if m else (None, None)


class _EndTrackingTarInfo(tarfile.TarInfo):
    """Remembers on the TarFile how the archive ended: its end-of-archive block, or plain end of data."""

    @classmethod
    def fromtarfile(cls, tf):  # noqa: ANN001 - tarfile's API
        try:
            return super().fromtarfile(tf)
        except tarfile.EOFHeaderError:
            tf._lc_end = "marker"
            raise
        except (tarfile.EmptyHeaderError, tarfile.TruncatedHeaderError):
            tf._lc_end = "eof"
            raise


def iter_shard(
    url: str,
    skips: SkipLog,
    select: Callable[[str], bool] | None = None,
    report: bool = True,
    opener: Callable[[str], Any] = open_url,
) -> Iterator[RawSample]:
    """Stream the samples of one shard as RawSample groups (consecutive members sharing a key).

    Problems are reported to ``skips`` (when ``report``) and never raised: unreadable URL -> ``unreadable_shard``;
    a read error mid-archive -> ``truncated_shard`` naming the key being read (that sample is dropped); an archive
    without its end-of-archive blocks -> ``truncated_shard`` (the last sample is still yielded: validation decides
    if it is complete); no members -> ``empty_shard``. ``select(ext)`` limits which members are read into memory
    (``RawSample.names`` still lists every member).
    """
    def note(kind: str, key: str, msg: str) -> None:
        if report:
            skips.record(kind, url, key, msg)

    try:
        stream = opener(url)
    except Exception as exn:  # noqa: BLE001 - any opener failure is a skipped shard
        note("unreadable_shard", "", f"cannot open: {exn!r}")
        return
    n_members, current, last_key = 0, None, ""
    error: Exception | None = None
    truncated = False
    try:
        tf = tarfile.open(fileobj=stream, mode="r|*", tarinfo=_EndTrackingTarInfo)
        for info in tf:
            if not info.isreg():
                continue
            key, ext = split_member_name(info.name)
            if key is None or os.path.basename(info.name).startswith("__"):
                continue
            last_key = key
            wanted = select is None or select(ext)
            data = tf.extractfile(info).read() if wanted else b""
            tf.members = []  # streaming: do not keep every TarInfo
            n_members += 1
            if current is None or current.key != key:
                if current is not None:
                    yield current
                current = RawSample(url, key, {})
            if ext in current.names and current.problem is None:
                current.problem = ("duplicate_member", f"member {ext!r} appears twice")
            current.names.append(ext)
            if wanted:
                current.members[ext] = data
        truncated = getattr(tf, "_lc_end", "marker") == "eof" and n_members > 0
    except Exception as exn:  # noqa: BLE001 - tarfile/IO errors of any kind: report, keep going
        error = exn
    finally:  # also runs when the consumer stops early (GeneratorExit): then nothing below runs or is reported
        close_error: Exception | None = None
        try:
            stream.close()
        except Exception as exn:  # noqa: BLE001 - e.g. a pipe: command (curl, aws) that exited non-zero
            close_error = exn
    if close_error is not None and n_members == 0:
        note("unreadable_shard", "", f"stream failed: {close_error!r}" + (f" ({error!r})" if error else ""))
        return
    if error is not None:
        if n_members == 0 and "empty file" in str(error):
            note("empty_shard", "", "zero-byte shard")
            return
        note("truncated_shard" if n_members > 0 else "unreadable_shard", last_key, f"read error: {error!r}")
        current = None  # the sample being read is incomplete
    elif close_error is not None:
        note("truncated_shard", last_key, f"stream failed after {n_members} members: {close_error!r}")
        current = None
    elif truncated:
        note("truncated_shard", last_key, "archive ends without its end-of-archive blocks")
    if current is not None:
        yield current
    elif n_members == 0 and error is None:
        note("empty_shard", "", "shard has no members")


def expand_shards(specs: str | Sequence[str]) -> list[str]:
    """Shard URLs from specs: a local folder (its ``*.tar``, sorted), a local glob, a brace pattern
    (``shards-{000000..000009}.tar``, ``::``-joined lists), or a ``pipe:`` / ``http(s)://`` / ``s3://`` URL."""
    if isinstance(specs, str):
        specs = [specs]
    urls: list[str] = []
    for spec in specs:
        for item in expand_urls(str(spec)):
            if "://" not in item and not item.startswith("pipe:"):
                path = item[5:] if item.startswith("file:") else item
                if os.path.isdir(path):
                    found = sorted(str(p) for p in Path(path).glob("*.tar"))
                elif any(c in path for c in "*?["):
                    found = sorted(glob.glob(path))
                elif os.path.isfile(path):
                    found = [item]
                else:
                    raise DataSourceError(f"shard spec {spec!r}: {path} does not exist (check the path, relative to "
                                          f"{os.getcwd()})")
                if not found:
                    raise DataSourceError(f"shard spec {spec!r}: no .tar shards at {path}")
                urls.extend(found)
                continue
            urls.append(item)
    return urls


def find_indexes(specs: str | Sequence[str], index: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    """(base, index) pairs: ``index`` when given (its base is its parent), else ``index.json`` of each local folder
    a spec names or points into. ``base`` + shard file name = the shard's URL / path."""
    if index is not None:
        base = index.rsplit("/", 1)[0] if "/" in index else "."
        return [(base, read_index(index))]
    found: dict[str, dict[str, Any]] = {}
    for spec in [specs] if isinstance(specs, str) else specs:
        for item in expand_urls(str(spec)):
            if "://" in item or item.startswith("pipe:"):
                continue
            folder = item if os.path.isdir(item) else os.path.dirname(item) or "."
            path = os.path.join(folder, INDEX_NAME)
            if folder not in found and os.path.isfile(path):
                found[folder] = read_index(path)
    return list(found.items())


def shard_task_counts(urls: Sequence[str], indexes: Sequence[tuple[str, dict[str, Any]]]) -> dict[str, dict[str, int] | None]:
    """URL -> {task: samples} from the indexes (matched by file name), or None for a shard no index lists."""
    by_name: dict[str, dict[str, int]] = {}
    for _, idx in indexes:
        for name, info in idx["shards"].items():
            by_name[name] = {t: int(n) for t, n in info.get("tasks", {}).items()}
    return {u: by_name.get(u.rsplit("/", 1)[-1]) for u in urls}


# ============================================================================================================ Shapes-5


def _write_task_shards(args: tuple) -> tuple[str, dict[str, dict[str, Any]], dict[str, Any]]:
    out_dir, task, n, split, resolution, seed, maxcount, maxsize, start = args
    from .shapes import make_sample

    prefix = f"shapes5-{split}-{task}" + (f"-s{seed}" if seed else "") + (f"-from{start}" if start else "")
    with ShardWriter(out_dir, prefix, maxcount=maxcount, maxsize=maxsize) as writer:
        for i in range(start, start + n):
            writer.write(make_sample(task, i, split=split, resolution=resolution, seed=seed))
    pattern = re.compile(rf"^{re.escape(prefix)}-\d{{6}}\.tar$")
    for stale in Path(out_dir).iterdir():  # shards of this exact set left by an earlier, larger run
        if pattern.match(stale.name) and stale.name not in writer.shards:
            logger.warning("removing stale shard %s (not part of this run of %s)", stale, prefix)
            stale.unlink()
    meta = {"generator": "shapes5", "task": task, "split": split, "resolution": resolution, "seed": seed,
            "start": start, "count": n}  # fmt: skip
    return prefix, {k: v.to_json() for k, v in writer.shards.items()}, meta


def write_shapes5_shards(
    out_dir: str | Path,
    n_per_task: int,
    split: str = "train",
    resolution: int = 64,
    seed: int = 0,
    tasks: Sequence[str] = TASKS,
    maxcount: int = 1000,
    maxsize: int = 1 << 30,
    workers: int = 1,
    start: int = 0,
) -> dict[str, Any]:
    """Write Shapes-5 samples ``start .. start + n_per_task - 1`` of each task as shards
    ``shapes5-<split>-<task>[-s<seed>][-from<start>]-%06d.tar`` (one task per shard) and update ``index.json``;
    returns the index.

    Re-running with the same arguments rewrites the same files (idempotent; stale higher-numbered shards of the
    same set are removed); other sets in the folder are kept. ``workers`` > 1 builds tasks in parallel processes;
    the index is written once, at the end.
    """
    bad = [t for t in tasks if t not in TASKS]
    if bad:
        raise ValueError(f"unknown task(s) {bad} (expected {TASKS})")
    if n_per_task < 1:
        raise ValueError(f"n_per_task must be >= 1, got {n_per_task}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(str(out_dir), t, n_per_task, split, resolution, seed, maxcount, maxsize, start) for t in tasks]
    if workers > 1 and len(jobs) > 1:
        with mp.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
            results = pool.map(_write_task_shards, jobs)
    else:
        results = [_write_task_shards(j) for j in jobs]
    shards: dict[str, Any] = {}
    meta: dict[str, Any] = {}
    for prefix, written, m in results:
        shards.update(written)
        meta[prefix] = m
    return update_index(out_dir, shards, meta)


# ================================================================================================================ CLI


def _parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", str(text).lower())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 1000000, 500M, 1G)")
    return int(float(m.group(1)) * 1024 ** " kmgt".index(m.group(2) or " "))


def _cmd_shapes5(args: argparse.Namespace) -> int:
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    index = write_shapes5_shards(
        args.out, args.n_per_task, split=args.split, resolution=args.resolution, seed=args.seed, tasks=tasks,
        maxcount=args.maxcount, maxsize=args.maxsize, workers=args.workers, start=args.start,
    )  # fmt: skip
    print(json.dumps({"out": str(args.out), **index["totals"]}, indent=1))
    return 0


def _cmd_index(args: argparse.Namespace) -> int:
    index = build_index(args.dir)
    print(json.dumps({"dir": str(args.dir), **index["totals"]}, indent=1))
    return 0
