"""Render the paper's tables with our rows beside the paper's, as Markdown or LaTeX.

Our rows come from results files (``results.json`` written by the harness). A table column is filled from the
results file whose protocol matches the column's source (``benchmarks/data/paper_tables.json``); several results
files can make one row (Table 2 needs an ``editing/emu`` and an ``editing/magicbrush`` run). Each of our cells shows
the delta vs the paper's CoLoGen row: ``0.850 (-0.016)``. The caption names the protocol(s) of our numbers and warns
when a results file's protocol is not the table's.

Units. Results files store raw values (a cosine 0.8123, an mIoU 0.4321; CLIP-S is stored already as
100 cos per image, its mean clamped at 0 as torchmetrics' ``CLIPScore.compute``). Each cell is converted to the unit the
paper prints, as declared in ``paper_tables.json`` (column ``unit`` and ``decimals``, source ``stored`` and
``clamp_min``; the unit names and factors are that file's ``units``), never by special cases here:

    printed = round(clamp_min(raw * per_fraction[unit] / per_fraction[stored]), decimals)
    delta   = round(converted - paper, decimals)     (from the unrounded converted value)

``decimals`` are those of the paper's reference (CoLoGen) row. The conventions, per table:

=========  =======================  ======================  ===========================================  ========
table      column                   stored (results.json)   printed as (the reference's convention)      decimals
=========  =======================  ======================  ===========================================  ========
2          CLIP_i, CLIP_out, DINO   cosine (fraction)       fraction (Emu Edit / MagicBrush: mean cos)   3
2          L1                       mean |a-b|, [0,1] px    fraction                                     3
3          Canny CLIP-S             mean 100 cos, >= 0      x100, mean clamped at 0 (torchmetrics)       2
3          Depth RMSE               0-255 gray levels       0-255 gray levels                            2
3          LineArt SSIM (MS-SSIM)   fraction                x100                                         2
3          Seg mIoU                 fraction                round(100 * mIoU, 2) (mmseg, ControlNet++)   2
4, 5, 7    CLIP-T, CLIP-I, DINO     cosine (fraction)       fraction, max(mean, 0) (Kosmos-G scorer)     3
5          MagicBrush rows          cosine (fraction)       fraction (CLIP-T = CLIP_out), no clamp       3
6          Canny C-S                mean 100 cos, >= 0      x100, clamped at 0                           2
6          Canny / Depth FID        FID                     FID                                          2
6          Depth SSIM               fraction                x100                                         1
8          G_SC, G_PQ, G_O          judge score 0-10        0-10                                         2
=========  =======================  ======================  ===========================================  ========

Eval-set size. A results file's ``eval_set`` (from the suite's :class:`benchmarks.harness.RequestList`, written by
``generate`` into ``run.json`` and copied by ``score``) says which split it covers, expected vs found. A row whose
results are a declared subset, cover fewer items than the published split (``found != expected``) or miss images is
marked "subset" (row label and a caption line); its deltas are kept but are not a comparison with the paper's
numbers. Results without ``eval_set`` (older files) render unmarked.

Backbones. A row scored with random-init backbones (``random_init`` in its results' backbone records, see
``benchmarks.metrics.random_init``) is marked "not comparable: random-init backbones" and gets no deltas; a row
whose backbone hashes are not all published reference hashes (``benchmarks.metrics.reference_weights``) is marked
"unverified backbones" (deltas kept). A metric the results could not compute (``unavailable`` in results.json, with
its reason) prints as "n/a" with the reason in the caption. A results file of a protocol the table does not use
(nor a variant of one) is an error naming the table's protocols.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from lit_cologen.errors import UserError

from .harness import eval_set_is_subset
from .metrics.reference_weights import backbone_status
from .paper_tables import PaperTable, get_table

__all__ = ["OurRow", "rows_from_results", "render_markdown", "render_latex", "render", "load_results", "format_delta",
           "format_value", "subset_reasons"]


@dataclass
class OurRow:
    """One of our rows: a label, the table group it belongs to, values in the paper's units (None = not run)."""

    label: str
    group: str | None
    values: dict[str, float | None]
    protocols: list[str] = field(default_factory=list)
    backbones: dict[str, Any] = field(default_factory=dict)
    image_counts: dict[str, int] = field(default_factory=dict)
    eval_sets: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # protocol -> results' eval_set
    missing_counts: dict[str, int] = field(default_factory=dict)  # protocol -> images missing when scored
    unavailable: dict[str, str] = field(default_factory=dict)  # column -> why the results could not compute it

    @property
    def backbone_status(self) -> tuple[str, list[str]]:
        """``("random-init" | "unverified" | "verified", keys)``: see ``reference_weights.backbone_status``."""
        return backbone_status(self.backbones)

    @property
    def comparable(self) -> bool:
        """False for a row scored with random-init backbones: its numbers are never compared with the paper's."""
        return self.backbone_status[0] != "random-init"

    @property
    def subset(self) -> bool:
        """True when any results file of the row is not the full published split (see :func:`subset_reasons`)."""
        return bool(subset_reasons(self))


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    """A results file (must carry ``protocol`` and ``metrics``)."""
    data = json.loads(Path(path).read_text())
    if "protocol" not in data or "metrics" not in data:
        raise ValueError(f"{path}: not a results file of the harness (no 'protocol' / 'metrics')")
    return data


def rows_from_results(table: PaperTable, label: str, results: Sequence[dict[str, Any]]) -> list[OurRow]:
    """Our rows of ``table`` from the results files of one model / run (``label``): one row per table group that
    at least one results file fills."""
    rows = []
    for spec in table.sources:
        values: dict[str, float | None] = {}
        unavailable: dict[str, str] = {}
        used: list[dict[str, Any]] = []
        for col in spec["columns"]:
            src = table.column_source(spec.get("group"), col)
            values[col] = None
            # the column's own protocol first, then a variant of it (rendered with a not-comparable warning)
            matching = sorted((r for r in results if _fills(r["protocol"], src.protocol)),
                              key=lambda r: r["protocol"] != src.protocol)
            for res in matching:
                raw = res["metrics"].get(src.metric)
                if raw is not None:
                    values[col] = src.convert(raw)  # the paper's unit, unrounded
                    if res not in used:
                        used.append(res)
                    break
            else:
                why = next(((r["protocol"], r["unavailable"][src.metric]) for r in matching
                            if src.metric in (r.get("unavailable") or {})), None)
                if why:
                    unavailable[col] = f"{why[0]} {src.metric}: {why[1]}"
        if any(v is not None for v in values.values()):
            rows.append(OurRow(
                label=label, group=spec.get("group"), values=values,
                protocols=[r["protocol"] for r in used],
                backbones={k: v for r in used for k, v in r.get("backbones", {}).items()},
                image_counts={r["protocol"]: int(r.get("image_count", 0)) for r in used},
                eval_sets={r["protocol"]: r.get("eval_set") for r in used},
                missing_counts={r["protocol"]: int(r.get("missing_count") or 0) for r in used},
                unavailable=unavailable,
            ))
    return rows


class TableInputError(UserError, ValueError):
    """Results that the requested table cannot use."""


def check_protocols(table: PaperTable, results: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """Refuse a results file whose protocol the table uses neither directly nor as a variant's parent."""
    for label, res in results:
        if not any(_fills(res["protocol"], p) for p in table.protocols):
            raise TableInputError(
                f"{table.id}: results '{label}' are of protocol {res['protocol']!r}, which this table does not use "
                f"(its protocols: {list(table.protocols)}); render them with the table of their protocol"
            )


def subset_reasons(row: OurRow) -> list[str]:
    """Why a row does not cover the published split, one phrase per results file (empty: full split or unknown).

    Reasons: the eval set was declared a subset (``--subset`` / ``subset=True``), it has ``found != expected`` items,
    or images were missing when it was scored (``--allow-missing``)."""
    out = []
    for proto in row.protocols:
        es = row.eval_sets.get(proto)
        parts = []
        if eval_set_is_subset(es):
            of = f" of {es['expected']:,}" if es.get("expected") is not None else ""
            declared = ", declared subset" if es.get("subset") else ""
            parts.append(f"{es.get('dataset')}/{es.get('split')} {es.get('found', 0):,}{of} {es.get('unit')}{declared}")
        if row.missing_counts.get(proto):
            parts.append(f"{row.missing_counts[proto]:,} images missing")
        if parts:
            out.append(f"{proto}: " + ", ".join(parts))
    return out


def _fills(result_protocol: str, column_protocol: str) -> bool:
    from .protocols import PROTOCOLS

    if result_protocol == column_protocol:
        return True
    p = PROTOCOLS.get(result_protocol)
    return p is not None and p.variant_of == column_protocol


def format_value(value: float, decimals: int) -> str:
    """``value`` (already in the paper's unit) rounded to ``decimals`` for display: ``round(43.2149, 2)`` -> ``43.21``."""
    v = round(value, decimals)
    return f"{0.0 if v == 0 else v:.{decimals}f}"  # no "-0.000"


def format_delta(ours: float, paper: float | None, decimals: int) -> str:
    """``+0.012`` / ``-1.30``: ours (unrounded, in the paper's unit) - paper, rounded to the column's printed
    decimals only here; empty without a paper value."""
    if paper is None:
        return ""
    d = round(ours - paper, decimals)
    if d == 0:
        d = 0.0  # no "-0.000"
    return f"{d:+.{decimals}f}"


def _method_key(name: str) -> str:
    """"OmniGen [61]" / "omnigen" -> "omnigen": a method name without its citation, case and punctuation."""
    return re.sub(r"[^a-z0-9]", "", re.sub(r"\[[^\]]*\]", "", name).lower())


def baseline_row(table: PaperTable, row: OurRow):
    """The paper's row of the same method as one of our rows (a measured baseline, e.g. label "OmniGen" for the
    paper's "OmniGen [61]"), or None when the row is a CoLoGen model."""
    key = _method_key(row.label)
    if not key or key == _method_key(table.reference):
        return None
    return next((r for r in table.rows if _method_key(r.method) == key and (row.group is None or r.group in (None, row.group))),
                None)


def _row_name(table: PaperTable, row: OurRow) -> str:
    kind = "measured" if baseline_row(table, row) is not None else "ours"
    status = {"random-init": ", not comparable: random-init backbones", "unverified": ", unverified backbones"}
    return f"{row.label} ({kind}{', subset' if row.subset else ''}{status.get(row.backbone_status[0], '')})"


def _cells(table: PaperTable, row: OurRow) -> list[tuple[str, str]]:
    """(value, delta) strings per column of one of our rows: deltas against the paper's row of the same method for a
    measured baseline, else against the paper's CoLoGen row."""
    ref = baseline_row(table, row) or table.reference_row(row.group)
    out = []
    for c in table.columns:
        v = row.values.get(c.key)
        dec = table.decimals(c.key)
        if v is None:
            out.append(("n/a" if c.key in row.unavailable else "-", ""))
        else:
            out.append((format_value(v, dec), format_delta(v, ref.value(c.key), dec) if row.comparable else ""))
    return out


def _caption(table: PaperTable, ours: Sequence[OurRow]) -> list[str]:
    lines = [f"{table.source}: {table.caption}"]
    lines.append(f"Protocol: {', '.join(table.protocols)}.")
    if ours:
        protos = sorted({p for r in ours for p in r.protocols})
        counts = {p: n for r in ours for p, n in r.image_counts.items()}
        lines.append("Our rows: " + ", ".join(f"{p} ({counts.get(p, '?')} images)" for p in protos)
                     + f"; deltas vs the paper's row '{table.reference}' (a measured baseline: vs the paper's row of "
                     "the same method).")
        off = sorted(set(protos) - set(table.protocols))
        if off:
            lines.append(f"WARNING: protocol(s) {off} differ from the table's {list(table.protocols)}; not comparable.")
        for r in ours:
            status, keys = r.backbone_status
            if status == "random-init":
                lines.append(f"{r.label}: NOT COMPARABLE, scored with random-init backbones ({', '.join(keys)}); "
                             "no deltas.")
            elif status == "unverified":
                lines.append(f"{r.label}: unverified backbones ({', '.join(keys)}: no published hash to check).")
        missing = [(r.label, why) for r in ours for why in r.unavailable.values()]
        if missing:
            lines.append("n/a: " + "; ".join(f"{label}: {why}" for label, why in missing) + ".")
        subsets = [(r.label, reason) for r in ours for reason in subset_reasons(r)]
        if subsets:
            lines.append("Subset rows (not the published split; their deltas do not compare with the paper's): "
                         + "; ".join(f"{label}: {reason}" for label, reason in subsets) + ".")
        hashes = {k: v.get("sha256") for r in ours for k, v in r.backbones.items()}
        if hashes:
            short = {k: _short_hash(h) for k, h in sorted(hashes.items())}
            lines.append("Backbones: " + ", ".join(f"{k}={v}" for k, v in short.items()) + ".")
    return lines


def _short_hash(h: Any) -> str:
    """First 12 hex digits of a file hash; for a folder, of its weights file."""
    if isinstance(h, str):
        return h[:12]
    if isinstance(h, dict) and h:
        name = next((n for n in sorted(h) if n.endswith((".safetensors", ".bin", ".pt", ".pth"))), sorted(h)[0])
        return str(h[name])[:12]
    return "?"


def render_markdown(table: PaperTable, ours: Sequence[OurRow] = ()) -> str:
    """A Markdown table: the paper's rows, then ours (value and delta vs the paper's CoLoGen row); a measured
    baseline sits right below the paper's row of its method, with deltas against that row."""
    extra = table.extra_keys
    has_group = any(r.group for r in table.rows)
    head = (["Group"] if has_group else []) + ["Method"] + [k.capitalize() for k in extra]
    head += [f"{c.label} {c.arrow}" for c in table.columns]
    lines = [f"**{table.id}**. " + " ".join(_caption(table, ours)), "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]

    def prefix(group, method, extras):
        return ([group or ""] if has_group else []) + [method] + [extras.get(k, "") for k in extra]

    def ours_line(o: OurRow, group) -> str:
        cells = [f"{v} ({d})" if d else v for v, d in _cells(table, o)]
        name = _row_name(table, o)
        return "| " + " | ".join(prefix(group, f"**{o.label}**{name[len(o.label):]}", {}) + cells) + " |"

    measured = _measured_rows(table, ours)
    for g in table.groups:
        for r in (r for r in table.rows if r.group == g):
            lines.append("| " + " | ".join(prefix(r.group, r.method, r.extra) + [v or "-" for v in r.values.values()]) + " |")
            lines.extend(ours_line(o, r.group) for o in measured.get(id(r), []))  # a measured baseline: beside its paper row
        for o in _ours_in_group(table, ours, g, measured):
            lines.append(ours_line(o, o.group or g))
    return "\n".join(lines) + "\n"


def _measured_rows(table: PaperTable, ours: Sequence[OurRow]) -> dict[int, list[OurRow]]:
    """id(paper row) -> our measured rows of that method (see :func:`baseline_row`)."""
    out: dict[int, list[OurRow]] = {}
    for o in ours:
        ref = baseline_row(table, o)
        if ref is not None:
            out.setdefault(id(ref), []).append(o)
    return out


def _ours_in_group(table: PaperTable, ours: Sequence[OurRow], g, measured: dict[int, list[OurRow]]) -> list[OurRow]:
    """Our CoLoGen rows (not measured baselines) printed at the end of group ``g``."""
    placed = {id(o) for rows in measured.values() for o in rows}
    last = g == table.groups[-1] and not has_group_sources(table)
    return [o for o in ours if id(o) not in placed and (o.group == g or (o.group is None and last))]


def has_group_sources(table: PaperTable) -> bool:
    return any(s.get("group") for s in table.sources)


_LATEX_ESCAPE = {"&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "$": r"\$", "{": r"\{", "}": r"\}",
                 "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "↑": r"$\uparrow$", "↓": r"$\downarrow$",
                 "–": "--"}


def _tex(s: str) -> str:
    return "".join(_LATEX_ESCAPE.get(ch, ch) for ch in s)


def render_latex(table: PaperTable, ours: Sequence[OurRow] = (), label: str | None = None) -> str:
    """A LaTeX ``table`` (booktabs): the paper's rows, a rule, then ours with deltas in small type."""
    extra = table.extra_keys
    has_group = any(r.group for r in table.rows)
    ncol = int(has_group) + 1 + len(extra) + len(table.columns)
    head = (["Group"] if has_group else []) + ["Method"] + [k.capitalize() for k in extra]
    head += [f"{c.label} {c.arrow}" for c in table.columns]
    out = [r"\begin{table}[t]", r"\centering", r"\small",
           r"\caption{" + _tex(" ".join(_caption(table, ours))) + "}",
           r"\label{" + (label or f"tab:{table.id}") + "}",
           r"\begin{tabular}{" + "l" * (ncol - len(table.columns)) + "c" * len(table.columns) + "}",
           r"\toprule", " & ".join(_tex(h) for h in head) + r" \\", r"\midrule"]

    def prefix(group, method, extras):
        return ([_tex(group or "")] if has_group else []) + [_tex(method)] + [_tex(extras.get(k, "")) for k in extra]

    def ours_line(o: OurRow, group) -> str:
        cells = [f"{v} {{\\scriptsize ({d})}}" if d else v for v, d in _cells(table, o)]
        return " & ".join(prefix(group, _row_name(table, o), {}) + cells) + r" \\"

    groups = table.groups
    measured = _measured_rows(table, ours)
    for gi, g in enumerate(groups):
        for r in (r for r in table.rows if r.group == g):
            out.append(" & ".join(prefix(r.group, r.method, r.extra)
                                  + [_tex(v) if v else "--" for v in r.values.values()]) + r" \\")
            out.extend(ours_line(o, r.group) for o in measured.get(id(r), []))
        mine = _ours_in_group(table, ours, g, measured)
        if mine:
            out.append(r"\cmidrule(lr){1-" + str(ncol) + "}")
        for o in mine:
            out.append(ours_line(o, o.group or g))
        if gi < len(groups) - 1:
            out.append(r"\midrule")
    out += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(out) + "\n"


def render(table_id: str, results: Sequence[tuple[str, dict[str, Any]]] = (), fmt: str = "md") -> str:
    """Render paper table ``table_id`` with our rows from ``(label, results dict)`` pairs (same label = one row)."""
    table = get_table(table_id)
    check_protocols(table, results)
    by_label: dict[str, list[dict[str, Any]]] = {}
    for label, res in results:
        by_label.setdefault(label, []).append(res)
    ours = [row for label, rs in by_label.items() for row in rows_from_results(table, label, rs)]
    if fmt in ("md", "markdown"):
        return render_markdown(table, ours)
    if fmt in ("tex", "latex"):
        return render_latex(table, ours)
    raise ValueError(f"unknown format {fmt!r} (md | latex)")
