"""Evaluation seeds: every protocol fixes a seed per request by its ``seed_rule`` (never one seed for every image),
every suite's request builder follows it, and the manifest / results.json record it. Fixture data only."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from control_records import ControlRecord
from PIL import Image
from test_evalsets import IMG_STRUCT, cell, make_emu, write_parquet
from test_published_formats import gedit_bench_save_to_disk

import benchmarks.protocols as protocols
from benchmarks.harness import CopySourceGenerator, RunFolder, generate, score
from benchmarks.metrics import Backbones
from benchmarks.protocols import (
    PROTOCOLS,
    SEED_MODULUS,
    SEED_RULES,
    EvalProtocol,
    get_protocol,
    seed_from_request_id,
)

# ------------------------------------------------------------------------------------------------ fixtures


def dreambench_folder(root: Path, subjects=(("backpack", "backpack"), ("dog", "dog"))) -> Path:
    """A DreamBench folder in DreamBooth's layout: prompts_and_classes.txt (25 object + 25 live templates) and one
    sub-folder per subject with 00.jpg."""
    obj = [f"'a {{0}} {{1}} in place {i}'.format(unique_token, class_token)," for i in range(25)]
    live = [f"'a {{0}} {{1}} doing thing {i}'.format(unique_token, class_token)," for i in range(25)]
    text = ("Classes\n\nsubject_name,class\n" + "".join(f"{s},{c}\n" for s, c in subjects)
            + "\nPrompts\n\nObject Prompts\n\nprompt_list = [\n" + "\n".join(obj) + "\n]\n\n"
            + "Live Subject Prompts\n\nprompt_list = [\n" + "\n".join(live) + "\n]\n")
    root.mkdir(parents=True)
    (root / "prompts_and_classes.txt").write_text(text)
    for i, (subject, _) in enumerate(subjects):
        (root / subject).mkdir()
        Image.new("RGB", (16, 16), (10 * i, 20, 30)).save(root / subject / "00.jpg")
    return root


def magicbrush_parquet(root: Path) -> Path:
    a, b, c = (Image.new("RGB", (8, 8), (v, v, v)) for v in (10, 20, 30))
    m = Image.new("RGB", (8, 8), (255, 255, 255))
    write_parquet(
        root / "test-00000-of-00001.parquet",
        {"img_id": ["5", "5", "7"], "turn_index": [1, 2, 1], "source_img": [cell(a), cell(b), cell(a)],
         "mask_img": [cell(m)] * 3, "instruction": ["i1", "i2", "j1"], "target_img": [cell(b), cell(c), cell(c)]},
        {"source_img": IMG_STRUCT, "mask_img": IMG_STRUCT, "target_img": IMG_STRUCT},
    )
    return root


def control_records() -> list[ControlRecord]:
    recs = []
    for i in range(3):
        im = Image.fromarray(np.random.default_rng(i).integers(0, 256, (16, 16, 3), dtype=np.uint8))
        edges = Image.new("L", (16, 16), 0)
        recs.append(ControlRecord("canny", i, f"a square {i}", im, edges.convert("RGB"), edges))
    return recs


# one small request list per protocol that generates runs; a variant scores its base's runs (same requests)
def _dreambench(tmp: Path):
    from benchmarks.suites.dreambench import build_requests

    return build_requests(dreambench_folder(tmp / "db"), prompts_per_subject=3, resolution=32, subset=True)


def _control(tmp: Path):
    from benchmarks.suites.control import requests_from_records

    return requests_from_records(control_records(), tmp / "run", resolution=32)


def _emu(tmp: Path):
    from benchmarks.suites.editing import build_emu_requests

    return build_emu_requests(make_emu(tmp), tmp / "run", subset=True)


def _magicbrush(tmp: Path):
    from benchmarks.suites.editing import build_magicbrush_requests

    return build_magicbrush_requests(magicbrush_parquet(tmp / "mb"), tmp / "run", subset=True)


def _gedit(tmp: Path):
    from benchmarks.suites.gedit import build_requests

    return build_requests(gedit_bench_save_to_disk(tmp / "GEdit-Bench", n_en=3), tmp / "run", subset=True)


def _shapes5(tmp: Path):
    from benchmarks.suites.shapes5 import build_requests

    return build_requests(tmp / "run", per_task=3, resolution=32)


BUILDERS = {
    "dreambench/omnigen": _dreambench,
    "control/controlnetpp": _control,
    "editing/emu": _emu,
    "editing/magicbrush": _magicbrush,
    "gedit/full": _gedit,
    "shapes5": _shapes5,
}


def _prompt_of(req) -> tuple:
    """The prompt a request is image k of, and k (per_image_index protocols)."""
    if req.task == "subject":
        return (req.fields["subject"], req.fields["prompt_index"]), req.fields["image_index"]
    return req.fields["prompt_id"], req.fields["group"]


# ------------------------------------------------------------------------------------------------ tests


def test_every_protocol_has_a_seed_rule_and_a_builder_here():
    for name, proto in PROTOCOLS.items():
        assert proto.seed_rule in SEED_RULES, name
        assert proto.settings.get("seed_reference"), f"{name}: say what the reference does with seeds"
        settings = proto.settings_dict()  # what results.json records as protocol_settings
        assert settings["seed_rule"] == proto.seed_rule and settings["seeds"] == list(proto.seeds)
        base = proto.variant_of or name
        assert base in BUILDERS, f"{name}: no request builder tested for its runs ({base})"
        if proto.variant_of:  # a variant scores its base's runs: same seeds, same rule
            other = get_protocol(proto.variant_of)
            assert (proto.seeds, proto.seed_rule) == (other.seeds, other.seed_rule), name


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_request_seeds_follow_the_protocol_rule(name, tmp_path):
    proto = get_protocol(name)
    reqs = BUILDERS[name](tmp_path)
    assert len(reqs) >= 2 and all(r.protocol == name for r in reqs)
    seeds = [r.seed for r in reqs]
    assert all(isinstance(s, int) for s in seeds)
    if proto.seed_rule == "per_image_index":
        by_prompt = defaultdict(dict)
        for r in reqs:
            prompt, k = _prompt_of(r)
            by_prompt[prompt][k] = r.seed
        assert len(by_prompt) >= 3
        for prompt, got in by_prompt.items():
            # image k of every prompt -> seeds[k]: distinct within the prompt, all images per prompt present
            assert got == {k: proto.seeds[k] for k in range(proto.images_per_prompt)}, prompt
            assert len(set(got.values())) == len(got)
        if name.startswith("dreambench"):
            assert proto.seeds == (0, 1, 2, 3)  # image k -> seed k
            assert all(r.seed == r.fields["image_index"] == int(r.id.rsplit("-s", 1)[1]) for r in reqs)
        else:
            assert proto.seeds == (42, 43, 44, 45)  # group k -> 42 + k
            assert all(r.seed == 42 + r.fields["group"] for r in reqs)
    else:
        # one image per request, its seed from its id: no two requests share one
        assert len(set(seeds)) == len(seeds), seeds
        assert seeds == [seed_from_request_id(r.id, proto.seeds[0]) for r in reqs]
        assert all(0 <= s < SEED_MODULUS for s in seeds)


def test_variant_requests_use_the_base_protocols_seeds(tmp_path):
    """editing/magicbrush-gt scores editing/magicbrush runs; requests built under its name are the base's."""
    from benchmarks.suites.editing import requests_from_records
    from lit_cologen.data.evalsets import load_magicbrush_test

    recs = load_magicbrush_test(magicbrush_parquet(tmp_path / "mb"), subset=True)
    base = requests_from_records(recs, tmp_path / "a", "editing/magicbrush")
    gt = requests_from_records(recs, tmp_path / "b", "editing/magicbrush-gt")
    assert [r.to_row() for r in gt] == [r.to_row() for r in base]
    assert len({r.seed for r in base}) == 3  # was seed 0 for every request


def test_a_seed_depends_on_the_request_id_only(tmp_path):
    """The same id gets the same seed in a prefix (--limit) run and in another run folder."""
    from benchmarks.suites.editing import build_emu_requests
    from benchmarks.suites.gedit import build_requests

    full = build_emu_requests(make_emu(tmp_path / "e"), tmp_path / "r1", subset=True)
    first = build_emu_requests(tmp_path / "e" / "emu_edit_test_set", tmp_path / "r2", limit=1)
    assert [r.seed for r in first] == [full[0].seed]
    root = gedit_bench_save_to_disk(tmp_path / "g", n_en=2)
    en = {r.id: r.seed for r in build_requests(root, tmp_path / "r3", subset=True)}
    again = {r.id: r.seed for r in build_requests(root, tmp_path / "r4", subset=True)}
    cn = {r.id: r.seed for r in build_requests(root, tmp_path / "r5", language="cn", subset=True)}
    assert again == en and len(set(en.values())) == 2
    assert cn == {"gedit-cn-k0": seed_from_request_id("gedit-cn-k0")}


def test_request_seeds_never_collide_within_a_run(monkeypatch):
    proto = get_protocol("editing/emu")
    assert seed_from_request_id("emu-0") == seed_from_request_id("emu-0")
    assert seed_from_request_id("emu-0", base=5) == (seed_from_request_id("emu-0") + 5) % SEED_MODULUS
    assert seed_from_request_id("emu-0", attempt=1) != seed_from_request_id("emu-0")
    # force collisions: every id hashes to 7 on its first attempt
    monkeypatch.setattr(protocols, "seed_from_request_id", lambda rid, base=0, attempt=0: 7 + attempt)
    assert proto.request_seeds(["a", "b", "c"]) == [7, 8, 9]
    assert proto.request_seeds(["a", "b"]) == [7, 8]  # a prefix keeps its seeds
    with pytest.raises(ValueError, match="repeat"):
        proto.request_seeds(["a", "a"])


def test_protocol_seed_rules_are_checked():
    base = get_protocol("editing/emu")
    from dataclasses import replace

    with pytest.raises(ValueError, match="seed_rule must be one of"):
        replace(base, seed_rule="")
    with pytest.raises(ValueError, match="one image per request"):
        replace(base, seeds=(0, 1))
    with pytest.raises(ValueError, match="distinct"):
        replace(get_protocol("dreambench/omnigen"), seeds=(0, 0, 1, 2))
    with pytest.raises(ValueError, match="not a setting"):
        replace(base, settings={"seed_rule": "x"})
    with pytest.raises(ValueError, match="use request_seeds"):
        base.image_seeds()
    with pytest.raises(ValueError, match="use image_seeds"):
        get_protocol("dreambench/omnigen").request_seeds(["a"])
    with pytest.raises(ValueError, match="4 images per prompt"):
        get_protocol("dreambench/omnigen").image_seeds(5)
    assert get_protocol("control/controlnetpp").image_seeds(2) == (42, 43)
    assert isinstance(base, EvalProtocol)


def test_manifest_and_results_record_each_seed_and_the_rule(tmp_path):
    from benchmarks.suites.shapes5 import build_requests

    run = tmp_path / "run"
    reqs = build_requests(run, per_task=2, resolution=32)
    generate(run, reqs, CopySourceGenerator(), progress=False)
    rows = [json.loads(line) for line in (run / "manifest.jsonl").read_text().splitlines()]
    assert [row["seed"] for row in rows] == [r.seed for r in reqs]
    assert [r.seed for r in RunFolder(run).read_manifest()] == [r.seed for r in reqs]
    res = score(run, Backbones(), progress=False)
    assert res["protocol_settings"]["seed_rule"] == "from_request_id"
    assert res["protocol_settings"]["seed_rule_text"] == SEED_RULES["from_request_id"]
    assert "seed_reference" in res["protocol_settings"]
    assert res["seeds"] == sorted(r.seed for r in reqs) and len(res["seeds"]) == res["image_count"] == 10
    saved = json.loads((run / "results.json").read_text())
    assert saved["protocol_settings"]["seed_rule"] == "from_request_id"
