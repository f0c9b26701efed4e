"""The paper's Tables 2-8 as data (``benchmarks/data/paper_tables.json``), with accessors.

Values are the strings printed in the paper (``"0.866"``, ``"35.0"``; None = "-", not reported), so the precision
is kept; :meth:`PaperTable.value` returns floats. Each table also says which row is the paper's own ("reference",
the row deltas are computed against) and which of our results fill each column (``sources``).

Units are declared, not coded: each column names the unit the paper prints (``unit``, a key of the file's
``units``) and its printed decimals (``decimals``); each column source names the unit its results value is stored
in (``stored``) and, where the reference scorer clamps its mean, ``clamp_min`` (in the printed unit).
:meth:`ColumnSource.convert` turns a stored raw value into the paper's unit (unrounded; rounding is for display
only). The per-table conventions are listed in :mod:`benchmarks.tables`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["DATA_PATH", "Unit", "ColumnSource", "PaperColumn", "PaperRow", "PaperTable", "load_paper_tables",
           "get_table", "list_tables"]

DATA_PATH = Path(__file__).parent / "data" / "paper_tables.json"


@dataclass(frozen=True)
class Unit:
    """A unit values are stored or printed in (``units`` of the data file).

    ``per_fraction``: how many of this unit make a fraction of 1 (``fraction`` 1, ``x100`` 100); None for a unit of
    its own (gray levels, FID, judge scores), which converts only to itself.
    """

    name: str
    per_fraction: float | None
    about: str = ""

    def factor_to(self, other: "Unit") -> float:
        """The factor a value in this unit is multiplied by to be in ``other``."""
        if self.name == other.name:
            return 1.0
        if self.per_fraction is None or other.per_fraction is None:
            raise ValueError(f"cannot convert unit {self.name!r} to {other.name!r}: only units with a per_fraction "
                             "convert to each other; fix 'stored' or 'unit' in paper_tables.json")
        return float(other.per_fraction) / float(self.per_fraction)


@dataclass(frozen=True)
class ColumnSource:
    """Which results value fills a column: ``metrics[metric]`` of a results file of ``protocol``, stored in unit
    ``stored``, printed in the column's unit ``unit``; the converted mean is clamped at ``clamp_min`` (in the printed
    unit) where the reference scorer clamps (Kosmos-G's and torchmetrics' ``compute()``: max(mean, 0))."""

    protocol: str
    metric: str
    stored: Unit
    unit: Unit
    clamp_min: float | None = None

    @property
    def factor(self) -> float:
        return self.stored.factor_to(self.unit)

    def convert(self, raw: float) -> float:
        """A stored raw value (e.g. mIoU 0.4321) in the paper's unit (43.21), unrounded, clamped where declared."""
        v = float(raw) * self.factor
        return max(v, self.clamp_min) if self.clamp_min is not None else v


@dataclass(frozen=True)
class PaperColumn:
    """A column: ``unit`` the paper prints it in, ``decimals`` it prints (those of the paper's reference row)."""

    key: str
    label: str
    direction: str  # "higher" | "lower"
    unit: str = "fraction"
    decimals: int = 3

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
    units: dict[str, Unit] = field(default_factory=dict, compare=False)

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
        """Decimals the paper prints in ``column`` (declared in the data file: those of its reference row)."""
        return self.column(column).decimals

    def column_source(self, group: str | None, column: str) -> ColumnSource | None:
        """How our results fill ``column`` in the sources of ``group`` (None: that group does not fill it)."""
        for spec in self.sources:
            if spec.get("group") == group and column in spec["columns"]:
                return self._source(column, spec["columns"][column])
        return None

    def _source(self, column: str, src: dict[str, Any]) -> ColumnSource:
        return ColumnSource(src["protocol"], src["metric"], self.units[src["stored"]],
                            self.units[self.column(column).unit], src.get("clamp_min"))


def _units(data: dict[str, Any]) -> dict[str, Unit]:
    if not isinstance(data.get("units"), dict) or not data["units"]:
        raise ValueError(f"{DATA_PATH.name}: no 'units' table; declare the units columns are stored / printed in")
    return {name: Unit(name, u.get("per_fraction"), u.get("about", "")) for name, u in data["units"].items()}


def _table(tid: str, d: dict[str, Any], units: dict[str, Unit]) -> PaperTable:
    rows = tuple(
        PaperRow(r.get("group"), r["method"], dict(r["values"]),
                 {k: v for k, v in r.items() if k not in ("group", "method", "values")})
        for r in d["rows"]
    )
    for c in d["columns"]:
        for key in ("unit", "decimals"):
            if key not in c:
                raise ValueError(f"{tid} column {c.get('key')!r}: no {key!r}; declare the paper's printed {key} in "
                                 f"{DATA_PATH.name}")
        if c["unit"] not in units:
            raise ValueError(f"{tid} column {c['key']!r}: unknown unit {c['unit']!r}; use one of {sorted(units)}")
    table = PaperTable(
        id=tid, source=d["source"], caption=d["caption"], protocols=tuple(d["protocols"]),
        columns=tuple(PaperColumn(**c) for c in d["columns"]), sources=tuple(d["sources"]),
        reference=d["reference"], rows=rows, notes=tuple(d.get("notes", ())), units=units,
    )
    for spec in table.sources:  # every source declares a stored unit that converts to its column's unit
        for col, src in spec["columns"].items():
            if src.get("stored") not in units:
                raise ValueError(f"{tid} source {col!r} ({src.get('metric')}): 'stored' unit {src.get('stored')!r} "
                                 f"is not one of {sorted(units)}; declare the unit results.json stores it in")
            table._source(col, src).factor  # raises when the units do not convert
    return table


@lru_cache(maxsize=4)
def load_paper_tables(path: str | Path = DATA_PATH) -> dict[str, PaperTable]:
    """All tables of the data file, by id (``table2`` .. ``table8``)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    units = _units(data)
    return {tid: _table(tid, t, units) for tid, t in data["tables"].items()}


def get_table(table_id: str) -> PaperTable:
    """A paper table by id; ``"4"``, ``"table4"`` and ``"Table 4"`` all work."""
    tables = load_paper_tables()
    key = "table" + str(table_id).lower().replace("table", "").strip()
    if key not in tables:
        raise KeyError(f"unknown paper table {table_id!r}; known: {sorted(tables)}")
    return tables[key]


def list_tables() -> list[str]:
    return sorted(load_paper_tables())
