"""Shared helpers of the dataset builders: errors, deterministic randomness, image decoding, parquet rows.

Nothing here downloads anything; every function reads local files only.
"""

from __future__ import annotations

import io
import json
import logging
import re
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lit_cologen.errors import UserError

log = logging.getLogger("lit_cologen.data.builders")

IMAGE_EXTS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class DataSourceError(UserError, ValueError):
    """A dataset on disk that does not match the layout a builder expects.

    The message always names the file (and, where relevant, the column, row or sample) and what was expected.
    """


# ----------------------------------------------------------------------------------------------------------- keys


_KEY_BAD = re.compile(r"[^A-Za-z0-9_\-]+")


def safe_key(*parts: Any) -> str:
    """Join parts into a WebDataset key: only ``[A-Za-z0-9_-]``, no '.' or '/' (the schema forbids them)."""
    text = "-".join(str(p) for p in parts if p is not None and str(p) != "")
    text = _KEY_BAD.sub("_", text).strip("_")
    if not text:
        raise DataSourceError(f"cannot build a sample key from parts {parts!r}")
    return text


def sample_rng(seed: int, key: str) -> np.random.Generator:
    """A generator seeded by (seed, crc32(key)): the same sample gets the same draws in any order or process."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(key.encode("utf-8"))])


# --------------------------------------------------------------------------------------------------------- images


def open_image(path: str | Path, mode: str | None = "RGB") -> Image.Image:
    """Open and fully decode an image file; raise DataSourceError naming the file if it cannot be read."""
    p = Path(path)
    if not p.is_file():
        raise DataSourceError(f"image file not found: {p}")
    try:
        with Image.open(p) as im:
            im.load()
            return _convert(im, mode)
    except Exception as exc:  # PIL raises many types (UnidentifiedImageError, OSError, SyntaxError, ...)
        raise DataSourceError(f"cannot decode image file {p}: {exc}") from exc


def decode_image_bytes(data: bytes, mode: str | None = "RGB", *, where: str = "") -> Image.Image:
    """Decode encoded image bytes (PNG/JPEG/WebP...) to PIL; ``where`` names the source in errors."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return _convert(im, mode) if mode else im.copy()
    except Exception as exc:
        raise DataSourceError(f"cannot decode image bytes ({where}): {exc}") from exc


def _convert(im: Image.Image, mode: str | None) -> Image.Image:
    if mode is None or im.mode == mode:
        return im.copy()
    if mode == "RGB" and im.mode in ("RGBA", "LA", "PA", "P"):
        # composite transparent pixels on white rather than on black garbage
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    if mode == "RGB" and im.mode in ("I", "I;16", "I;16B", "F"):
        return image_to_uint8(im).convert("RGB")
    return im.convert(mode)


def image_to_uint8(im: Image.Image) -> Image.Image:
    """Map a 16-bit / float single-channel image (e.g. a depth PNG) to 8-bit 'L' by min-max scaling."""
    arr = np.asarray(im).astype(np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    scaled = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo) * 255.0
    return Image.fromarray(np.clip(np.round(scaled), 0, 255).astype(np.uint8), mode="L")


def image_cell(value: Any, *, base_dir: Path | None, where: str, mode: str | None = "RGB") -> Image.Image:
    """Decode one image cell of a parquet / HF-datasets table.

    Accepted forms: a struct ``{"bytes": b"...", "path": "..."}`` (the HF ``Image`` feature: bytes first, else the path
    relative to ``base_dir``), raw ``bytes``, or a path string.
    """
    if value is None:
        raise DataSourceError(f"{where}: image cell is empty (null)")
    if isinstance(value, dict):
        data = value.get("bytes")
        if data:
            return decode_image_bytes(bytes(data), mode, where=where)
        path = value.get("path")
        if path:
            return _image_from_path(path, base_dir, where, mode)
        raise DataSourceError(f"{where}: image struct has neither 'bytes' nor 'path'")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return decode_image_bytes(bytes(value), mode, where=where)
    if isinstance(value, str):
        return _image_from_path(value, base_dir, where, mode)
    raise DataSourceError(f"{where}: unsupported image cell type {type(value).__name__}")


def image_cell_bytes(value: Any, *, base_dir: Path | None, where: str) -> bytes:
    """The encoded bytes of an image cell (same forms as ``image_cell``), without decoding."""
    if value is None:
        raise DataSourceError(f"{where}: image cell is empty (null)")
    if isinstance(value, dict):
        if value.get("bytes"):
            return bytes(value["bytes"])
        if value.get("path"):
            return _resolve(value["path"], base_dir, where).read_bytes()
        raise DataSourceError(f"{where}: image struct has neither 'bytes' nor 'path'")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return _resolve(value, base_dir, where).read_bytes()
    raise DataSourceError(f"{where}: unsupported image cell type {type(value).__name__}")


def _resolve(path: str, base_dir: Path | None, where: str) -> Path:
    p = Path(path)
    if not p.is_absolute() and base_dir is not None:
        p = base_dir / p
    if not p.is_file():
        raise DataSourceError(f"{where}: image path {path!r} not found (looked at {p})")
    return p


def _image_from_path(path: str, base_dir: Path | None, where: str, mode: str | None) -> Image.Image:
    return open_image(_resolve(path, base_dir, where), mode)


def limit_size(image: Image.Image, max_side: int | None, resample: int = Image.Resampling.LANCZOS) -> Image.Image:
    """Downscale so that max(W, H) <= max_side (aspect kept); no-op when ``max_side`` is None or already small."""
    if not max_side:
        return image
    w, h = image.size
    if max(w, h) <= max_side:
        return image
    s = max_side / max(w, h)
    return image.resize((max(1, round(w * s)), max(1, round(h * s))), resample)


# ---------------------------------------------------------------------------------------------------------- files


def require_path(path: str | Path | None, what: str, *, option: str | None = None, kind: str = "any") -> Path:
    """Return ``Path(path)`` if it exists (as a file / dir when ``kind`` says so), else raise naming ``option``."""
    if path is None or str(path) == "":
        raise DataSourceError(f"{what}: no path given" + (f" (set option `{option}`)" if option else ""))
    p = Path(path).expanduser()
    ok = p.is_file() if kind == "file" else p.is_dir() if kind == "dir" else p.exists()
    if not ok:
        raise DataSourceError(
            f"{what}: {kind if kind != 'any' else 'path'} not found: {p}" + (f" (option `{option}`)" if option else "")
        )
    return p


def load_json(path: Path) -> Any:
    """Load a JSON file; errors name the file."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError as exc:
        raise DataSourceError(f"JSON file not found: {path}") from exc
    except json.JSONDecodeError as exc:
        raise DataSourceError(f"invalid JSON in {path}: {exc}") from exc


def load_json_records(path: Path) -> list[dict[str, Any]]:
    """Records from a JSON list file or a JSON-lines file (one object per line); errors name file and line."""
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        data = load_json(path)
        if not all(isinstance(r, dict) for r in data):
            raise DataSourceError(f"{path}: expected a JSON list of objects")
        return data
    out: list[dict[str, Any]] = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataSourceError(f"{path}, line {i}: invalid JSON ({exc})") from exc
        if not isinstance(rec, dict):
            raise DataSourceError(f"{path}, line {i}: expected a JSON object, got {type(rec).__name__}")
        out.append(rec)
    return out


# ------------------------------------------------------------------------------------------------- table files

#: File types of a tabular dataset: Hub parquet exports and the Arrow files of the ``datasets`` library.
TABLE_EXTS: tuple[str, ...] = (".parquet", ".arrow")

#: Split names recognised in file and folder names (compared case-insensitively).
SPLIT_WORDS: frozenset[str] = frozenset(
    {"train", "training", "validation", "val", "valid", "dev", "test", "testa", "testb", "eval", "evaluation"}
)

# ``train-00000-of-00031`` with an optional hash suffix (``-453c1a9ccc53b253``, written by ``push_to_hub``); the
# name part may carry a builder prefix (``gedit_bench-train-00000-of-00001``, the ``datasets`` cache).
_SHARD = re.compile(r"^(?P<name>.+?)-\d{5}-of-\d{5}(?:-[0-9a-f]{6,64})?$")
_EVAL_TOKEN = re.compile(r"^(val|valid|validation|dev|test|testa|testb|eval|evaluation)(\d{4})?$", re.IGNORECASE)


def _split_word(token: str) -> str | None:
    return token if token.lower() in SPLIT_WORDS else None


def file_split(path: Path, root: Path | None = None) -> str | None:
    """The split a dataset file belongs to, from its name, else from the nearest folder named like a split.

    Recognised: Hub shards ``{split}-00000-of-00004[-{hash}].parquet``, ``{split}.parquet``, ``{split}-0.parquet``,
    the ``datasets`` cache
    ``{builder}-{split}[-00000-of-00001].arrow``, and folders ``.../{split}/0000.parquet`` (the Hub's parquet
    conversion) or ``.../{split}/data-00000-of-00001.arrow`` (``save_to_disk``). None when nothing names a split.
    Folders at or above ``root`` are not looked at.
    """
    stem = path.stem
    m = _SHARD.match(stem)
    name = m.group("name") if m else stem
    for token in (name, name.split("-", 1)[0], name.rsplit("-", 1)[-1]):  # train | test-0 | builder-validation
        if _split_word(token):
            return token
    parents = path.parents if root is None else [q for q in path.parents if root in q.parents]
    for folder in parents:
        if _split_word(folder.name):
            return folder.name
    return None


def is_eval_split(split: str) -> bool:
    """Whether a split name is an evaluation split: one of its ``-`` / ``_`` separated words is ``validation``,
    ``val``, ``val2017``, ``dev``, ``test``, ``testA``, ``test-dev``... (``train``, ``training``, ``train2017`` are not)."""
    return any(_EVAL_TOKEN.match(t) for t in re.split(r"[-_]", str(split)))


def eval_split_in_name(path: str | Path) -> str | None:
    """The evaluation-split word in a file name (``instances_val2017.json`` -> ``val2017``,
    ``final_refcoco_testA.json`` -> ``testA``), or None."""
    for token in re.split(r"[-_.()\s]", Path(path).stem):
        if token and _EVAL_TOKEN.match(token):
            return token
    return None


def dataset_files(root: str | Path, split: str | None = None, *, option: str = "root") -> list[Path]:
    """The parquet / Arrow files of a dataset: ``root`` is one such file or a folder searched recursively.

    With ``split``, only the files of that split (by ``file_split``) are returned; a split that is not there is an
    error naming the splits that are, whatever the naming: a loader never falls back to other splits. Without
    ``split``, every file is returned. A folder holding both parquet and Arrow files is refused (they are usually two
    copies of one dataset).
    """
    p = require_path(root, "tabular dataset", option=option)
    if p.is_file():
        if p.suffix not in TABLE_EXTS:
            raise DataSourceError(f"{p}: expected a .parquet / .arrow file or a folder of them (option `{option}`)")
        own = file_split(p)
        if split and own and own != split:
            raise DataSourceError(f"{p} is a file of split {own!r}, not {split!r}; pass a file of split {split!r}")
        return [p]
    files = sorted(f for ext in TABLE_EXTS for f in p.rglob(f"*{ext}"))
    if not files:
        raise DataSourceError(f"no .parquet or .arrow files under {p} (option `{option}`)")
    kinds = {f.suffix for f in files}
    if len(kinds) > 1:
        raise DataSourceError(
            f"{p} holds both .parquet and .arrow files (two copies of one dataset?); point `{option}` at one of them"
        )
    if not split:
        return files
    splits = {f: file_split(f, p) for f in files}
    named = [f for f in files if splits[f] == split]
    if named:
        return named
    found = sorted({s for s in splits.values() if s})
    what = f"it has the splits {found}" if found else "no file or folder name there names a split"
    raise DataSourceError(
        f"no files of split {split!r} under {p} ({what}); pass a split that is there, or the file itself"
    )


def training_files(
    root: str | Path, split: str | None, *, dataset: str, allow_eval_split: bool = False, option: str = "root"
) -> list[Path]:
    """``dataset_files`` for a training builder: refuses an evaluation split (see ``check_training_split``), and
    with ``split=None`` refuses a folder that holds evaluation-split files among the others."""
    check_training_split(split, dataset=dataset, allow_eval_split=allow_eval_split)
    files = dataset_files(root, split, option=option)
    log.info("%s: split %s, %d file(s) under %s (%s%s)", dataset, repr(split) if split else "(all)", len(files), root,
             files[0].name, f" ... {files[-1].name}" if len(files) > 1 else "")
    if split is None and not allow_eval_split:
        base = Path(root)
        evals = sorted({s for f in files if (s := file_split(f, base if base.is_dir() else None)) and is_eval_split(s)})
        refuse_eval_splits(evals, dataset=dataset, holder=root)
    return files


def refuse_eval_splits(
    evals: Sequence[str], *, dataset: str, holder: str | Path, kind: str = "split(s)", example: str = "e.g. train"
) -> None:
    """Raise when a source read without a split (``split=None``) holds the evaluation splits ``evals``.

    ``holder`` names what holds them (a folder, a refs file), ``kind`` what they are (``split(s)``, ``folder(s)``)
    and ``example`` the split to suggest. Nothing happens when ``evals`` is empty.
    """
    if evals:
        raise DataSourceError(
            f"{dataset}: split not given and {holder} holds evaluation {kind} {evals}: set option `split` "
            f"({example}), or `allow_eval_split=true` to write them into training shards on purpose"
        )


def checked_training_files(
    root: str | Path,
    split: str | None,
    required: Iterable[str],
    *,
    dataset: str,
    allow_eval_split: bool = False,
    columns_dataset: str | None = None,
) -> list[Path]:
    """``training_files`` of which every file has the ``required`` columns (``check_columns``, whose errors name
    ``columns_dataset``, default ``dataset``)."""
    files = training_files(root, split, dataset=dataset, allow_eval_split=allow_eval_split)
    required = tuple(required)
    for f in files:
        check_columns(f, required, dataset=columns_dataset or dataset)
    return files


def check_training_split(
    split: str | None, *, dataset: str, allow_eval_split: bool = False, source: str | Path | None = None
) -> None:
    """Refuse to build training samples from an evaluation split unless ``allow_eval_split`` says so.

    ``split`` is the requested split; ``source`` an annotation file whose name may name its split
    (``instances_val2017.json``).
    """
    if allow_eval_split:
        return
    if split and is_eval_split(str(split)):
        what = f"split {split!r} is an evaluation split"
    elif source is not None and (word := eval_split_in_name(source)):
        what = f"{Path(source).name} is a file of the evaluation split {word!r}"
    else:
        return
    raise DataSourceError(
        f"{dataset}: {what} and training builders do not read evaluation splits by default; use the training "
        "split, or set option `allow_eval_split=true` to write it into training shards on purpose"
    )


def table_columns(path: Path) -> list[str]:
    """Column names of one parquet / Arrow file."""
    try:
        return list(_table_schema(path).names)
    except DataSourceError:
        raise
    except Exception as exc:
        raise DataSourceError(f"cannot read table file {path}: {exc}") from exc


def _table_schema(path: Path):
    if path.suffix == ".arrow":
        with _open_arrow(path) as reader:
            return reader.schema
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).schema_arrow


class _open_arrow:
    """Context manager: a record-batch reader over an Arrow file, IPC stream format (what the ``datasets`` library
    writes) or IPC file format."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        import pyarrow as pa

        self._source = pa.memory_map(str(self.path), "r")
        try:
            return pa.ipc.open_stream(self._source)
        except pa.ArrowInvalid:
            self._source.seek(0)
            try:
                return pa.ipc.open_file(self._source)
            except pa.ArrowInvalid as exc:
                self._source.close()
                raise DataSourceError(f"cannot read Arrow file {self.path}: {exc}") from exc

    def __exit__(self, *exc: Any) -> None:
        self._source.close()


def check_columns(path: Path, required: Iterable[str], *, dataset: str) -> list[str]:
    """Raise DataSourceError naming the file and each missing column; return the file's columns."""
    cols = table_columns(path)
    missing = [c for c in required if c not in cols]
    if missing:
        raise DataSourceError(
            f"{dataset}: file {path} lacks column(s) {missing} (it has {cols})"
        )
    return cols


def iter_table_rows(
    files: Sequence[Path], columns: Sequence[str] | None = None, *, batch_size: int = 16
) -> Iterator[tuple[Path, int, dict[str, Any]]]:
    """Yield ``(file, row_index_in_file, row_dict)`` from parquet / Arrow files, in small batches (bounded memory)."""
    for f in files:
        i = 0
        for batch in _record_batches(f, columns, batch_size):
            for row in batch.to_pylist():
                yield f, i, row
                i += 1


def _record_batches(path: Path, columns: Sequence[str] | None, batch_size: int) -> Iterator[Any]:
    if path.suffix == ".arrow":
        with _open_arrow(path) as reader:
            names = reader.schema.names
            keep = [c for c in columns if c in names] if columns is not None else None
            for batch in reader:
                batch = batch.select(keep) if keep is not None else batch
                for start in range(0, batch.num_rows, batch_size):
                    yield batch.slice(start, batch_size)
        return
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:
        raise DataSourceError(f"cannot read parquet file {path}: {exc}") from exc
    keep = [c for c in columns if c in pf.schema_arrow.names] if columns is not None else None
    yield from pf.iter_batches(batch_size=batch_size, columns=keep)


# --------------------------------------------------------------------------------------------------- selection


def take(
    samples: Iterable[Any], max_samples: int | None
) -> Iterator[Any]:
    """Yield at most ``max_samples`` items (all when None)."""
    if max_samples is not None and max_samples <= 0:
        return
    n = 0
    for s in samples:
        yield s
        n += 1
        if max_samples is not None and n >= max_samples:
            return


def in_part(index: int, part: int, num_parts: int) -> bool:
    """Whether item ``index`` belongs to ``part`` of ``num_parts`` (round-robin split for parallel builds)."""
    if num_parts < 1 or not 0 <= part < num_parts:
        raise DataSourceError(f"invalid part {part} of num_parts {num_parts}")
    return index % num_parts == part


def part_items(items: Iterable[Any], part: int, num_parts: int) -> Iterator[tuple[int, Any]]:
    """``(index, item)`` for the items of ``part`` of ``num_parts`` (``in_part``; ``index`` counts every item)."""
    for i, item in enumerate(items):
        if in_part(i, part, num_parts):
            yield i, item


def image_folders(images: str | Path | None, candidates: Iterable[Path], *, what: str) -> list[Path]:
    """The image folders of a dataset: ``[images]`` when that option is given (it must be a folder), else those of
    the default ``candidates`` that exist, in order."""
    if images:
        return [require_path(images, what, option="images", kind="dir")]
    return [d for d in candidates if d.is_dir()]


class ErrorPolicy:
    """``on_error='raise'`` re-raises per-item failures; ``'skip'`` logs them and counts them in ``skipped``."""

    def __init__(self, on_error: str = "raise", dataset: str = ""):
        if on_error not in ("raise", "skip"):
            raise DataSourceError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.on_error = on_error
        self.dataset = dataset
        self.skipped = 0

    def handle(self, exc: Exception, where: str) -> None:
        if self.on_error == "raise":
            if isinstance(exc, DataSourceError) and where in str(exc):
                raise exc
            raise DataSourceError(f"{self.dataset}: {where}: {exc}") from exc
        self.skipped += 1
        log.warning("%s: skipping %s: %s", self.dataset, where, exc, extra={"skip_reason": type(exc).__name__})

    def guard(self, fn: Callable[[], Any], where: str) -> Any:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - policy decides
            self.handle(exc, where)
            return None

    def results(self, jobs: Iterable[tuple[Callable[[], Any], str]]) -> Iterator[Any]:
        """Run each ``(fn, where)`` job under ``guard``, one per item asked for; yield the results that are not None
        (a skipped failure, or a job with nothing to give)."""
        for fn, where in jobs:
            out = self.guard(fn, where)
            if out is not None:
                yield out


# ---------------------------------------------------------------------------------------------------- text utils


def article(noun: str) -> str:
    """'a' or 'an' for a noun phrase (by its first letter)."""
    return "an" if noun[:1].lower() in "aeiou" else "a"


_PAREN = re.compile(r"\s*\([^)]*\)")


def clean_class_name(name: str) -> str:
    """Human-readable class name: LVIS ``bow_(weapon)`` -> ``bow``, COCO-Stuff ``sky-other-merged`` -> ``sky``."""
    n = name.replace("_", " ")
    n = _PAREN.sub("", n)
    for suffix in ("-other-merged", "-merged", "-other", "-stuff"):
        if n.endswith(suffix):
            n = n[: -len(suffix)]
    n = n.replace("-", " ")
    return " ".join(n.split()).strip().lower()


def join_names(names: Sequence[str]) -> str:
    """'a dog', 'a dog and a cat', 'a dog, a cat and an apple'."""
    items = [f"{article(n)} {n}" for n in names]
    if not items:
        return ""
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def caption_from_classes(names: Sequence[str], max_names: int = 5) -> str:
    """Template caption used when an image has no caption: ``a photo of a person, a dog and a frisbee``."""
    uniq: list[str] = []
    for n in names:
        if n and n not in uniq:
            uniq.append(n)
    if not uniq:
        return "a photo"
    return "a photo of " + join_names(uniq[:max_names])
