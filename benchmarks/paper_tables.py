"""The paper's Tables 2-8 as data (``benchmarks/data/paper_tables.json``), with accessors.

Values are the strings printed in the paper (``"0.866"``, ``"35.0"``; None = "-", not reported), so the precision
is kept; :meth:`PaperTable.value` returns floats. Each table also says which of our results fill each column
(``sources``: protocol, metric key, scale factor to the paper's units) and which row is the paper's own
("reference", the row deltas are computed against).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["DATA_PATH", "PaperColumn", "PaperRow", "PaperTable", "load_paper_tables", "get_table", "list_tables"]

DATA_PATH = Path(__file__).parent / "data" / "paper_tables.json"


@dataclass(frozen=True)
class PaperColumn:
    key: str
    label: str
    direction: str  # "higher" | "lower"

    @property
    def arrow(self) -> str:
        return "↑" if self.direction == "higher" else "↓"


@dataclass(frozen=True)
class PaperRow:
    group: str | None
    method: str
    values: dict[str, str | None]
    extra: dict[str, str] = field(default_factory=dict)  # e.g. {"base": "FLUX"}, {"data": "200k"}

    def value(self, column: str) -> float | None:
        v = self.values.get(column)
        return None if v is None else float(v)


@dataclass(frozen=True)
class PaperTable:
    id: str
    source: str
    caption: str
    protocols: tuple[str, ...]
    columns: tuple[PaperColumn, ...]
    sources: tuple[dict[str, Any], ...]
    reference: str
    rows: tuple[PaperRow, ...]
    notes: tuple[str, ...] = ()

    @property
    def groups(self) -> list[str | None]:
        return list(dict.fromkeys(r.group for r in self.rows))

    @property
    def extra_keys(self) -> list[str]:
        return list(dict.fromkeys(k for r in self.rows for k in r.extra))

    def column(self, key: str) -> PaperColumn:
        for c in self.columns:
            if c.key == key:
                return c
        raise KeyError(f"{self.id}: no column {key!r} (has {[c.key for c in self.columns]})")

    def row(self, method: str, group: str | None = None) -> PaperRow:
        for r in self.rows:
            if r.method == method and (group is None or r.group == group):
                return r
        raise KeyError(f"{self.id}: no row {method!r}" + (f" in group {group!r}" if group else ""))

    def value(self, method: str, column: str, group: str | None = None) -> float | None:
        return self.row(method, group).value(column)

    def printed(self, method: str, column: str, group: str | None = None) -> str | None:
        return self.row(method, group).values.get(column)

    def reference_row(self, group: str | None = None) -> PaperRow:
        """The paper's CoLoGen row (of ``group`` when the table has groups of its own, like Table 5)."""
        has_group_sources = any(s.get("group") for s in self.sources)
        return self.row(self.reference, group if has_group_sources else None)

    def decimals(self, column: str) -> int:
        """Decimals of the column as printed (the most used among its values; 3 if none)."""
        counts: dict[int, int] = {}
        for r in self.rows:
            v = r.values.get(column)
            if v is not None:
                d = len(v.split(".")[1]) if "." in v else 0
                counts[d] = counts.get(d, 0) + 1
        return max(counts, key=lambda d: (counts[d], d)) if counts else 3


def _table(tid: str, d: dict[str, Any]) -> PaperTable:
    rows = tuple(
        PaperRow(r.get("group"), r["method"], dict(r["values"]),
                 {k: v for k, v in r.items() if k not in ("group", "method", "values")})
        for r in d["rows"]
    )
    return PaperTable(
        id=tid, source=d["source"], caption=d["caption"], protocols=tuple(d["protocols"]),
        columns=tuple(PaperColumn(**c) for c in d["columns"]), sources=tuple(d["sources"]),
        reference=d["reference"], rows=rows, notes=tuple(d.get("notes", ())),
    )


@lru_cache(maxsize=4)
def load_paper_tables(path: str | Path = DATA_PATH) -> dict[str, PaperTable]:
    """All tables of the data file, by id (``table2`` .. ``table8``)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return {tid: _table(tid, t) for tid, t in data["tables"].items()}


def get_table(table_id: str) -> PaperTable:
    """A paper table by id; ``"4"``, ``"table4"`` and ``"Table 4"`` all work."""
    tables = load_paper_tables()
    key = "table" + str(table_id).lower().replace("table", "").strip()
    if key not in tables:
        raise KeyError(f"unknown paper table {table_id!r}; known: {sorted(tables)}")
    return tables[key]


def list_tables() -> list[str]:
    return sorted(load_paper_tables())
