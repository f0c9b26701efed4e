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


def _published_b32() -> str:
    """The SHA-256 of OpenAI's ViT-B/32 checkpoint, as clip's download URL publishes it."""
    from benchmarks.metrics.reference_weights import published_clip_sha256

    return next(h for h, name in published_clip_sha256().items() if name == "ViT-B/32")


def _res(protocol, metrics, n=10, backbones=None):
    return {"protocol": protocol, "metrics": metrics, "image_count": n,
            "backbones": backbones or {"clip_b32": {"path": "ViT-B-32.pt", "sha256": _published_b32()}}}


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
    assert f"Backbones: clip_b32={_published_b32()[:12]}" in text


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
    assert ("tiny\\_run (ours) & 0.300 {\\scriptsize (-0.015)} & 0.800 {\\scriptsize (-0.025)} "
            "& 0.720 {\\scriptsize (+0.006)}") in tex
    assert "CLIP-T $\\uparrow$" in tex
    # an all-references run is a variant of Table 4's protocol: rendered, with a not-comparable warning
    text = render("4", [("x", _res("dreambench/omnigen-allrefs", {"clip_t": 0.3}))])
    assert "**x** (ours)" in text and "WARNING: protocol(s) ['dreambench/omnigen-allrefs']" in text
    assert "WARNING" not in render("4", [("x", db)])
    with pytest.raises(ValueError, match=r"protocol 'editing/emu', which this table does not use \(its protocols: "
                                         r"\['dreambench/omnigen'\]\)"):
        render("4", [("x", _res("editing/emu", {"clip_i": 0.3}))])
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


# ----------------------------------------------------------------------------------------------------------------------
# units: each printed cell is the hand-computed conversion of a raw stored value (the paper's units and decimals)
# ----------------------------------------------------------------------------------------------------------------------


def _our_cells(text: str, label: str) -> dict[str, str]:
    """Header label -> cell of our row ``label`` in a Markdown table."""
    lines = [l for l in text.splitlines() if l.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    row = next(l for l in lines if f"**{label}**" in l)
    return dict(zip(head, (c.strip() for c in row.strip("|").split("|"))))


def test_table2_editing_cells_are_fractions_at_3_decimals():
    emu = _res("editing/emu", {"clip_i": 0.84567, "clip_out": 0.29951, "l1": 0.10449, "dino": 0.8431})
    mb = _res("editing/magicbrush", {"clip_i": 0.93049, "clip_out": 0.30151, "l1": 0.0624, "dino": 0.93251})
    cells = _our_cells(render("2", [("r", emu), ("r", mb)]), "r")
    assert cells["Emu CLIP_i ↑"] == "0.846 (-0.020)"  # 0.84567 vs 0.866: -0.02033
    assert cells["Emu CLIP_out ↑"] == "0.300 (-0.001)"  # 0.29951 - 0.301 = -0.00149
    assert cells["Emu L1 ↓"] == "0.104 (-0.007)"  # mean |a - b| on [0, 1] pixels, as printed (0.111)
    assert cells["Emu DINO ↑"] == "0.843 (+0.000)"
    assert cells["MB CLIP_i ↑"] == "0.930 (-0.001)" and cells["MB DINO ↑"] == "0.933 (+0.001)"
    assert cells["MB L1 ↓"] == "0.062 (-0.001)"  # 0.0624 - 0.063 = -0.0006
    t2 = get_table("2")
    assert {t2.column_source(None, c.key).factor for c in t2.columns} == {1.0}
    assert {t2.column_source(None, c.key).clamp_min for c in t2.columns} == {None}  # Emu Edit / MagicBrush: no clamp


def test_table3_miou_is_round_100_x_mean_iou_2_and_clip_s_is_stored_x100():
    # results store mIoU / SSIM as fractions, CLIP-S as torchmetrics' max(100 cos, 0), depth RMSE in 0-255 levels
    ctrl = _res("control/controlnetpp", {"canny/clip_score": 33.3149, "depth/rmse": 31.7951, "lineart/ms_ssim": 0.77964,
                                         "seg_cocostuff/miou": 0.294349, "seg_ade20k/miou": 0.43214})
    cells = _our_cells(render("3", [("c", ctrl)]), "c")
    assert cells["Seg mIoU (ADE20K) ↑"] == f"{round(100 * 0.43214, 2):.2f} (+0.39)" == "43.21 (+0.39)"
    # (rounding the fraction first, 0.432 -> 43.20 (+0.38), would be wrong: deltas come from unrounded values)
    assert cells["Seg mIoU (COCO-Stuff) ↑"] == "29.43 (+0.00)"  # 29.4349 vs 29.43
    assert cells["Canny CLIP-S (MultiGen-20M) ↑"] == "33.31 (+0.00)"  # already x100: not multiplied again
    assert cells["LineArt SSIM (MultiGen-20M) ↑"] == "77.96 (+0.00)"  # MS-SSIM 0.77964 x 100
    assert cells["Depth RMSE (MultiGen-20M) ↓"] == "31.80 (+0.01)"  # 31.7951 - 31.79 = 0.0051
    t3 = get_table("3")
    assert t3.column_source(None, "seg_ade20k_miou").factor == 100 and t3.column_source(None, "canny_clip_s").factor == 1


@pytest.mark.parametrize("tid", ["4", "7"])
def test_dreambench_tables_print_fractions_clamped_at_0(tid):
    # the paper prints CoLoGen's DINO 0.714 / CLIP-I 0.825: fractions; Kosmos-G's scorer returns max(mean, 0)
    db = _res("dreambench/omnigen", {"clip_t": 0.31549, "clip_i": 0.82451, "dino": -0.02})
    cells = _our_cells(render(tid, [("d", db)]), "d")
    clip_t = next(v for k, v in cells.items() if k.startswith(("CLIP-T", "C-T")))
    clip_i = next(v for k, v in cells.items() if k.startswith(("CLIP-I", "C-I")))
    assert clip_t == "0.315 (+0.000)"  # 0.31549 - 0.315 = 0.00049
    assert clip_i == "0.825 (+0.000)"  # 0.82451 - 0.825 = -0.00049 rounds to 0: printed "+0.000", not "-0.000"
    assert cells["DINO ↑"] == "0.000 (-0.714)"  # mean -0.02 clamped at 0, delta from the clamped value


def test_table5_clamps_the_dreambench_group_only():
    rows = rows_from_results(get_table("5"), "abl", [
        _res("dreambench/omnigen", {"clip_t": -0.01, "clip_i": 0.8, "dino": 0.7}),
        _res("editing/magicbrush", {"clip_out": -0.01, "clip_i": 0.931, "dino": 0.9}),
    ])
    by_group = {r.group: r for r in rows}
    assert by_group["Dreambooth"].values["clip_t"] == 0.0  # Kosmos-G scorer: max(mean, 0)
    assert by_group["Magicbrush"].values["clip_t"] == -0.01  # Emu Edit definitions: a plain mean
    text = render("5", [("abl", _res("editing/magicbrush", {"clip_out": 0.30149, "clip_i": 0.93149, "dino": 0.93}))])
    row = next(l for l in text.splitlines() if "**abl**" in l)
    assert "| 0.301 (+0.000) | 0.931 (+0.000) | 0.930 (-0.002) |" in row


def test_table6_depth_ssim_is_x100_at_the_papers_1_decimal():
    ctrl = _res("control/controlnetpp", {"canny/clip_score": 33.3149, "canny/fid": 18.2049, "depth/ssim": 0.40149,
                                         "depth/fid": 19.6})
    cells = _our_cells(render("6", [("c", ctrl)]), "c")
    assert cells["Depth SSIM ↑"] == "40.1 (+0.0)"  # 0.40149 x 100 = 40.149; CoLoGen's 40.1 has 1 decimal
    assert cells["Canny C-S ↑"] == "33.31 (+0.00)" and cells["Canny FID ↓"] == "18.20 (+0.00)"
    assert cells["Depth FID ↓"] == "19.60 (+0.04)"
    t6 = get_table("6")  # declared in the data file, not coded
    assert (t6.column("depth_ssim").unit, t6.column_source(None, "depth_ssim").stored.name) == ("x100", "fraction")
    assert t6.column("depth_ssim").decimals == 1 and t6.column("canny_fid").unit == "fid"


def test_table8_judge_scores_are_printed_as_stored():
    ge = _res("gedit/full", {"G_SC": 8.0349, "G_PQ": 7.1, "G_O": 7.3051})
    cells = _our_cells(render("8", [("g", ge)]), "g")
    assert cells["G_SC ↑"] == "8.03 (+0.00)" and cells["G_PQ ↑"] == "7.10 (-0.05)" and cells["G_O ↑"] == "7.31 (+0.00)"
    assert {c.unit for c in get_table("8").columns} == {"judge_0_10"}


def test_declared_decimals_are_those_the_paper_prints_in_its_reference_row():
    for tid in list_tables():
        t = get_table(tid)
        for spec in t.sources:
            ref = t.reference_row(spec.get("group"))
            for c in t.columns:
                printed = ref.values.get(c.key)
                if printed is not None:
                    assert t.column(c.key).decimals == len(printed.partition(".")[2]), (tid, c.key, printed)


def test_a_unit_declaration_error_names_the_column(tmp_path):
    import json

    from benchmarks.paper_tables import DATA_PATH, load_paper_tables

    data = json.loads(DATA_PATH.read_text(encoding="utf-8"))
    data["tables"]["table3"]["sources"][0]["columns"]["depth_rmse"]["stored"] = "fraction"  # fraction -> gray levels?
    bad = tmp_path / "t.json"
    bad.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ValueError, match="cannot convert unit 'fraction' to 'gray_levels'"):
        load_paper_tables(bad)
    data["tables"]["table3"]["columns"][0]["unit"] = "percent"
    bad.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ValueError, match=r"table3 column 'canny_clip_s': unknown unit 'percent'"):
        load_paper_tables(bad)


# ----------------------------------------------------------------------------------------------------------------------
# eval-set size: a row scored on less than the published split is marked "subset"
# ----------------------------------------------------------------------------------------------------------------------


def _es(found, expected, subset, dataset="dreambench", split="test", unit="prompts"):
    return {"dataset": dataset, "split": split, "unit": unit, "expected": expected, "found": found, "subset": subset}


def test_a_subset_row_is_marked_in_markdown_and_latex():
    db = {**_res("dreambench/omnigen", {"clip_t": 0.3, "clip_i": 0.8, "dino": 0.72}), "eval_set": _es(50, 750, True)}
    text = render("4", [("small", db)])
    row = next(l for l in text.splitlines() if "**small**" in l)
    assert "**small** (ours, subset)" in row and "0.300 (-0.015)" in row  # deltas kept, row marked
    assert ("Subset rows (not the published split" in text
            and "small: dreambench/omnigen: dreambench/test 50 of 750 prompts, declared subset" in text)
    tex = render("4", [("small", db)], fmt="latex")
    assert "small (ours, subset) & 0.300" in tex and "declared subset" in tex
    # a count that differs from the published size marks the row even when not declared
    short = {**db, "eval_set": _es(3588, 3589, False, "emu_edit", unit="rows")}
    emu = {**_res("editing/emu", {"clip_i": 0.85}), "eval_set": short["eval_set"]}
    t2 = render("2", [("e", emu)])
    assert "**e** (ours, subset)" in t2 and "emu_edit/test 3,588 of 3,589 rows." in t2
    # images missing at scoring time (--allow-missing) make a subset as well
    miss = {**_res("dreambench/omnigen", {"clip_t": 0.3}), "missing_count": 12, "eval_set": _es(750, 750, False)}
    assert "(ours, subset)" in render("4", [("m", miss)]) and "12 images missing" in render("4", [("m", miss)])


def test_full_split_and_old_results_render_unmarked():
    db = _res("dreambench/omnigen", {"clip_t": 0.3, "clip_i": 0.8, "dino": 0.72})
    old = render("4", [("x", db)])  # no eval_set: a results file from before eval sets were recorded
    full = render("4", [("x", {**db, "eval_set": _es(750, 750, False)})])
    assert old == full and "**x** (ours) |" in old and "subset" not in old.lower()
    # a measured baseline on a subset keeps its kind
    om = {**db, "eval_set": _es(25, 750, True)}
    assert "**OmniGen** (measured, subset)" in render("4", [("OmniGen", om)])


def test_rows_scored_with_random_init_or_unpublished_backbones_are_marked():
    metrics = {"clip_t": 0.3, "clip_i": 0.8, "dino": 0.72}
    rand = {"clip_b32": {"path": "ViT-B-32.pt", "sha256": "cd" * 32, "random_init": True}}
    text = render("4", [("rnd", _res("dreambench/omnigen", metrics, backbones=rand))])
    row = next(l for l in text.splitlines() if "**rnd**" in l)
    assert "(ours, not comparable: random-init backbones)" in row and "(-" not in row and "(+" not in row
    assert "rnd: NOT COMPARABLE, scored with random-init backbones (clip_b32)" in text
    own = {"clip_b32": {"path": "ViT-B-32.pt", "sha256": _published_b32()},
           "dino_vits16": {"path": "dino-vits16", "sha256": {"model.safetensors": "ef" * 32}}}
    text = render("4", [("hf", _res("dreambench/omnigen", metrics, backbones=own))])
    row = next(l for l in text.splitlines() if "**hf**" in l)
    assert "(ours, unverified backbones)" in row and "0.300 (-0.015)" in row  # deltas kept, marked
    assert "hf: unverified backbones (dino_vits16: no published hash to check)" in text
    inception = {"inception": {"path": "w/pt_inception-2015-12-05-6726825d.pth", "sha256": "6726825d" + "0" * 56}}
    from benchmarks.metrics.reference_weights import backbone_status

    assert backbone_status(inception) == ("verified", [])  # torch.hub's hash prefix in the file name
    assert backbone_status({"inception": {**inception["inception"], "sha256": "1" * 64}})[0] == "unverified"


def test_a_metric_that_could_not_be_computed_is_printed_with_its_reason():
    emu = _res("editing/emu", {"clip_i": 0.85, "clip_out": 0.31, "l1": 0.1, "dino": 0.8})
    mb = _res("editing/magicbrush", {"clip_i": 0.94, "l1": 0.07, "dino": 0.9})
    mb["unavailable"] = {"clip_out": "0 of 5 requests have a target caption"}
    text = render("2", [("run-a", emu), ("run-a", mb)])
    row = next(l for l in text.splitlines() if "**run-a**" in l)
    assert "| 0.940 (+0.009) | n/a | 0.070 (+0.007) |" in row  # MagicBrush CLIP_i, CLIP_out, L1
    assert "n/a: run-a: editing/magicbrush clip_out: 0 of 5 requests have a target caption." in text
