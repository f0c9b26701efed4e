"""The paper's tables as data (hand-checked cells against paper/cologen.md section 6) and their rendering with our
rows and deltas."""

from __future__ import annotations

import pytest

from benchmarks.paper_tables import get_table, list_tables
from benchmarks.protocols import PROTOCOLS
from benchmarks.tables import format_delta, render, rows_from_results


def test_tables_present_and_well_formed():
    assert list_tables() == [f"table{i}" for i in range(2, 9)]
    for tid in list_tables():
        t = get_table(tid)
        assert t.rows and t.columns and t.reference_row(t.rows[-1].group)
        for r in t.rows:
            assert set(r.values) == {c.key for c in t.columns}
        for spec in t.sources:  # every column source names a real protocol
            for src in spec["columns"].values():
                assert src["protocol"] in PROTOCOLS
        assert all(p in PROTOCOLS for p in t.protocols)


@pytest.mark.parametrize(
    "table, method, column, group, value",
    [
        ("table2", "CoLoGen (ours)", "emu_clip_i", None, 0.866),
        ("table2", "CoLoGen (ours)", "mb_l1", None, 0.063),
        ("table2", "PnP [51]", "emu_dino", None, 0.153),
        ("table2", "UltraEdit [76]", "mb_clip_out", None, None),  # "-" in the paper
        ("table3", "OmniGen [61]", "depth_rmse", None, 28.54),
        ("table3", "CoLoGen (ours)", "lineart_ssim", None, 77.96),
        ("table3", "T2I-Adapter-SD1.5 [35]", "seg_ade20k_miou", None, 12.61),
        ("table4", "DreamBooth [41]", "dino", None, 0.668),
        ("table4", "UniReal [9]", "clip_t", None, 0.326),
        ("table5", "w R_c", "clip_t", "Magicbrush", 0.302),
        ("table5", "w R_c & R_l (Co-training)", "clip_i", "Dreambooth", 0.795),
        ("table6", "RealGen [14]", "depth_ssim", None, 35.0),
        ("table6", "EasyControl [71]", "canny_fid", None, None),
        ("table7", "FLUX-IP-Adapter [64]", "dino", None, 0.582),
        ("table8", "Qwen-Image [55]", "G_O", None, 7.56),
        ("table8", "CoLoGen (Ours)", "G_SC", None, 8.03),
    ],
)
def test_hand_checked_cells(table, method, column, group, value):
    assert get_table(table).value(method, column, group) == value


def test_printed_precision_and_directions():
    t6 = get_table("6")
    assert t6.printed("RealGen [14]", "depth_ssim") == "35.0"
    assert t6.row("RealGen [14]").extra == {"base": "CogV"}
    assert get_table("table7").row("UNO-FLUX [58]").extra == {"data": "1M–5M"}
    t2 = get_table("Table 2")
    assert t2.column("emu_l1").direction == "lower" and t2.column("emu_dino").direction == "higher"
    assert t2.decimals("emu_clip_i") == 3 and get_table("3").decimals("depth_rmse") == 2
    assert get_table("3").column("depth_rmse").arrow == "↓"
    assert get_table("5").reference_row("Dreambooth").value("dino") == 0.714


def test_format_delta():
    assert format_delta(0.850, 0.866, 3) == "-0.016"
    assert format_delta(33.5, 33.31, 2) == "+0.19"
    assert format_delta(0.866, 0.866, 3) == "+0.000"
    assert format_delta(1.0, None, 3) == ""


def _res(protocol, metrics, n=10):
    return {"protocol": protocol, "metrics": metrics, "image_count": n,
            "backbones": {"clip_b32": {"sha256": "ab" * 32}}}


def test_render_markdown_with_deltas():
    emu = _res("editing/emu", {"clip_i": 0.850, "clip_out": 0.31, "l1": 0.1, "dino": 0.8})
    mb = _res("editing/magicbrush", {"clip_i": 0.94, "clip_out": 0.3, "l1": 0.07, "dino": 0.9}, n=5)
    text = render("2", [("run-a", emu), ("run-a", mb)])
    ours = [l for l in text.splitlines() if l.startswith("|") and "** (ours)" in l]
    assert len(ours) == 1  # two results files, one row
    row = ours[0]
    assert "0.850 (-0.016)" in row  # 0.850 - 0.866
    assert "0.100 (-0.011)" in row  # Emu L1 0.1 - 0.111
    assert "0.940 (+0.009)" in row and "0.070 (+0.007)" in row
    assert "editing/emu (10 images)" in text and "editing/magicbrush (5 images)" in text
    assert "| Ours | CoLoGen (ours) | 0.866 |" in text  # the paper's rows are kept
    assert text.index("CoLoGen (ours) |") < text.index("**run-a**")
    assert "Backbones: clip_b32=abababababab" in text


def test_render_scales_groups_and_partial_rows():
    ctrl = _res("control/controlnetpp", {"canny/clip_score": 33.0, "seg_ade20k/miou": 0.4, "depth/rmse": 30.0})
    text = render("table3", [("ours", ctrl)])
    row = next(l for l in text.splitlines() if l.startswith("|") and "** (ours)" in l)
    assert "40.00 (-2.82)" in row  # mIoU 0.4 -> 40.00 in the paper's units, vs 42.82
    assert "30.00 (-1.79)" in row and "33.00 (-0.31)" in row
    assert row.count(" - ") >= 2  # lineart and COCO-Stuff not run
    # Table 5: a DreamBench result lands in the Dreambooth group, a MagicBrush one in Magicbrush
    t5 = get_table("5")
    rows = rows_from_results(t5, "abl", [_res("dreambench/omnigen", {"clip_t": 0.3, "clip_i": 0.8, "dino": 0.7}),
                                         _res("editing/magicbrush", {"clip_out": 0.29, "clip_i": 0.9, "dino": 0.9})])
    assert {r.group for r in rows} == {"Magicbrush", "Dreambooth"}
    mb = next(r for r in rows if r.group == "Magicbrush")
    assert mb.values["clip_t"] == 0.29  # MagicBrush CLIP-T = CLIP_out
    text5 = render("5", [("abl", _res("dreambench/omnigen", {"clip_t": 0.3, "clip_i": 0.8, "dino": 0.7}))])
    lines = text5.splitlines()
    i_ours = next(i for i, l in enumerate(lines) if l.startswith("|") and "** (ours)" in l)
    assert "Dreambooth" in lines[i_ours] and "0.300 (-0.015)" in lines[i_ours]
    assert "w R_c & R_l (CoLoGen)" in lines[i_ours - 1]


def test_render_latex_and_protocol_warning():
    db = _res("dreambench/omnigen", {"clip_t": 0.3, "clip_i": 0.8, "dino": 0.72})
    tex = render("4", [("tiny_run", db)], fmt="latex")
    assert tex.startswith("\\begin{table}") and "\\toprule" in tex and "\\bottomrule" in tex
    assert "tiny\\_run (ours) & 0.300 {\\scriptsize (-0.015)} & 0.800 {\\scriptsize (-0.025)} & 0.720 {\\scriptsize (+0.006)}" in tex
    assert "CLIP-T $\\uparrow$" in tex
    # an all-references run is a variant of Table 4's protocol: rendered, with a not-comparable warning
    text = render("4", [("x", _res("dreambench/omnigen-allrefs", {"clip_t": 0.3}))])
    assert "**x** (ours)" in text and "WARNING: protocol(s) ['dreambench/omnigen-allrefs']" in text
    assert "WARNING" not in render("4", [("x", db)])
    assert "**x** (ours)" not in render("4", [("x", _res("editing/emu", {"clip_i": 0.3}))])
    t7 = render("7", [("x", db)])
    assert "| OmniControl [63] | 200k | 0.684 |" in t7
    with pytest.raises(ValueError):
        render("4", [], fmt="html")


def test_a_measured_baseline_is_compared_with_its_own_paper_row():
    emu = _res("editing/emu", {"clip_i": 0.850, "clip_out": 0.25, "l1": 0.1, "dino": 0.8})
    text = render("2", [("OmniGen", emu)])
    row = next(l for l in text.splitlines() if l.startswith("|") and "**OmniGen**" in l)
    assert "(measured)" in row and "(ours)" not in row
    assert "0.850 (+0.014)" in row  # vs the paper's OmniGen [61] Emu CLIP-I 0.836, not CoLoGen's 0.866
    assert "0.800 (-0.004)" in row  # DINO vs 0.804
    assert "0.100 (" not in row  # the paper has no OmniGen Emu L1: no delta against another method
    mine = next(l for l in render("2", [("run-a", emu)]).splitlines() if "**run-a**" in l)
    assert "(ours)" in mine and "0.850 (-0.016)" in mine  # a CoLoGen run: vs the paper's CoLoGen row


def test_a_measured_baseline_sits_below_its_paper_row():
    emu = _res("editing/emu", {"clip_i": 0.850, "clip_out": 0.25, "l1": 0.1, "dino": 0.8})
    lines = [l for l in render("2", [("OmniGen", emu), ("run-a", emu)]).splitlines() if l.startswith("|")]
    i = next(i for i, l in enumerate(lines) if "OmniGen [61]" in l)
    assert "**OmniGen** (measured)" in lines[i + 1] and lines[i + 1].startswith("| Generalist |")
    assert "**run-a** (ours)" in lines[-1]  # CoLoGen runs stay at the end
    tex = render("2", [("OmniGen", emu)], fmt="tex").splitlines()
    j = next(j for j, l in enumerate(tex) if l.startswith("Generalist & OmniGen [61]"))
    assert "OmniGen (measured)" in tex[j + 1]
