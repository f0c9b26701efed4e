"""The published sizes of the evaluation splits, and the check every eval-set loader makes against them.

``check_size`` compares what a loader loaded with ``PUBLISHED_COUNTS`` and raises ``DataSourceError`` when they
differ, unless ``subset=True`` says a smaller set is intended; ``EvalRecords`` is the loader's list with that
``EvalCount`` (expected vs found), which travels into run.json / results.json as ``eval_set``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .builders._common import DataSourceError


@dataclass(frozen=True)
class PublishedSize:
    """The published size of one evaluation split: ``count`` items of ``unit`` (and where that number is from)."""

    dataset: str
    split: str
    unit: str
    count: int
    source: str


#: Published sizes of the evaluation splits the paper's tables use (key: ``check_size``'s ``key``).
PUBLISHED_COUNTS: dict[str, PublishedSize] = {
    "dreambench": PublishedSize("DreamBench", "all", "prompts", 750,
                                "google/dreambooth dataset/: 30 subjects x 25 prompts"),
    "emu_edit/test": PublishedSize("Emu Edit", "test", "rows", 3589, "facebook/emu_edit_test_set, test split"),
    "emu_edit/validation": PublishedSize("Emu Edit", "validation", "rows", 2022,
                                         "facebook/emu_edit_test_set, validation split"),
    "magicbrush/turns": PublishedSize("MagicBrush", "test", "turns", 1053, "MagicBrush test set: 535 sessions, 1,053 turns"),
    "magicbrush/sessions": PublishedSize("MagicBrush", "test", "sessions", 535,
                                         "MagicBrush test set: 535 sessions, 1,053 turns"),
    "control/multigen_canny": PublishedSize("MultiGen-20M canny eval", "validation", "rows", 5000,
                                            "limingcv/MultiGen-20M_canny_eval (ControlNet++'s canny / hed / lineart set)"),
    "control/multigen_depth": PublishedSize("MultiGen-20M depth eval", "validation", "rows", 5000,
                                            "limingcv/MultiGen-20M_depth_eval"),
    "control/ade20k": PublishedSize("Captioned ADE20K", "validation", "rows", 2000, "limingcv/Captioned_ADE20K card"),
    "control/cocostuff": PublishedSize("Captioned COCOStuff", "validation", "rows", 5000,
                                       "limingcv/Captioned_COCOStuff card"),
    "gedit/en": PublishedSize("GEdit-Bench", "en", "rows", 606, "stepfun-ai/GEdit-Bench: 606 instructions per language"),
    "gedit/cn": PublishedSize("GEdit-Bench", "cn", "rows", 606, "stepfun-ai/GEdit-Bench: 606 instructions per language"),
}


@dataclass(frozen=True)
class EvalCount:
    """What a loader loaded against the published size: ``found`` vs ``expected`` (None: no published size for
    that split), and whether a subset was intended."""

    dataset: str
    split: str
    unit: str
    expected: int | None
    found: int
    subset: bool
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "split": self.split, "unit": self.unit, "expected": self.expected,
                "found": self.found, "subset": self.subset, "notes": list(self.notes)}


class EvalRecords(list):
    """A loader's records (a plain list) with ``count``: the ``EvalCount`` of what was loaded."""

    def __init__(self, records: Sequence[Any], count: EvalCount):
        super().__init__(records)
        self.count = count


def take_records(records: Iterator[Any], limit: int | None) -> list[Any]:
    """The first ``limit`` records (all when None): a ``--limit-items`` selection reads no further."""
    from itertools import islice

    return list(islice(records, limit))


def check_size(
    key: str, found: int, *, subset: bool = False, where: str | Path = "", notes: Sequence[str] = (),
    dataset: str | None = None, split: str | None = None, unit: str = "rows",
) -> EvalCount:
    """Compare a loaded size with ``PUBLISHED_COUNTS[key]``; raise ``DataSourceError`` when they differ and
    ``subset`` is False. A ``key`` without a published size records ``expected=None`` (with ``dataset`` / ``split``)."""
    pub = PUBLISHED_COUNTS.get(key)
    if pub is None:
        return EvalCount(dataset or key, split or "", unit, None, found, subset, tuple(notes))
    count = EvalCount(pub.dataset, pub.split, pub.unit, pub.count, found, subset, tuple(notes))
    if found != pub.count and not subset:
        extra = f" ({'; '.join(notes)})" if notes else ""
        raise DataSourceError(
            f"{pub.dataset} {pub.split}: loaded {found:,} {pub.unit} from {where}, the published split has "
            f"{pub.count:,} ({pub.source}){extra}; check the download, or pass subset=True (`--subset`) if a "
            "subset is intended"
        )
    return count


__all__ = ["EvalCount", "EvalRecords", "PUBLISHED_COUNTS", "PublishedSize", "check_size", "take_records"]
