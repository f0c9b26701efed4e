"""The evaluation harness: generation (layout, resume, atomic writes, sharding, seeds), scoring of every suite on
small fixtures with random-init backbones, and the `bench` CLI. The generators here are test doubles."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from control_records import ControlRecord
from PIL import Image

from benchmarks.cli import main as bench_main
from benchmarks.harness import (
    CopySourceGenerator,
    GenerationRequest,
    Generator,
    RunFolder,
    generate,
    image_is_complete,
    save_image_atomic,
    score,
)
from benchmarks.metrics import Backbones, CLIPEncoder, ControlNetHED, HEDAnnotator, paired_cosine
from benchmarks.metrics.random_init import save_random_clip, save_random_dino, save_random_dpt, save_random_segformer
from lit_cologen.data.evalsets import default_dreambench_path
from lit_cologen.utils.dist import env_rank as resolve_rank

DREAMBENCH = default_dreambench_path() or Path("missing-dreambench")


# ------------------------------------------------------------------------------------------------ test doubles


class SeedColourGenerator:
    """Test double: a solid image whose colour is a function of the request's seed; records every call."""

    def __init__(self, fail_after: int | None = None):
        self.calls: list[list[str]] = []
        self.fail_after = fail_after
        self.made = 0

    def generate(self, requests):
        self.calls.append([r.id for r in requests])
        out = []
        for r in requests:
            if self.fail_after is not None and self.made >= self.fail_after:
                raise KeyboardInterrupt("simulated kill")
            rng = np.random.default_rng(r.seed)
            out.append(Image.new("RGB", (r.width, r.height), tuple(int(c) for c in rng.integers(0, 256, 3))))
            self.made += 1
        return out


class GlobalRngGenerator:
    """Test double that samples from torch's global RNG (the harness seeds it per batch)."""

    def generate(self, requests):
        return [Image.fromarray((torch.rand(r.height, r.width, 3) * 255).to(torch.uint8).numpy()) for r in requests]


class OracleGenerator:
    """Test double: returns the ground truth named by ``fields[key]`` (relative to the run folder)."""

    run_root = None

    def __init__(self, key: str = "target"):
        self.key = key

    def generate(self, requests):
        return [Image.open(r.resolve(r.fields[self.key], self.run_root)).convert("RGB") for r in requests]


def make_requests(n: int, protocol: str = "shapes5") -> list[GenerationRequest]:
    return [GenerationRequest(id=f"r{i:03d}", task="edit", prompt=f"p{i}", seed=i, protocol=protocol, width=8, height=8)
            for i in range(n)]


# ------------------------------------------------------------------------------------------------ generation


def test_generator_protocol_and_layout(tmp_path):
    gen = SeedColourGenerator()
    assert isinstance(gen, Generator)
    reqs = make_requests(5)
    rep = generate(tmp_path, reqs, gen, batch_size=2, progress=False)
    assert (rep.generated, rep.skipped, rep.total) == (5, 0, 5)
    assert gen.calls == [["r000", "r001"], ["r002", "r003"], ["r004"]]
    run = RunFolder(tmp_path)
    rows = [json.loads(l) for l in run.manifest_path.read_text().splitlines()]
    assert [r["id"] for r in rows] == [r.id for r in reqs]
    assert rows[0]["image"] == "images/r000.png" and rows[0]["seed"] == 0 and rows[0]["protocol"] == "shapes5"
    assert run.read_manifest() == reqs
    info = json.loads(run.run_json_path.read_text())
    assert info["num_requests"] == 5 and "SeedColourGenerator" in info["generator"]["class"]
    # the seed decides the colour
    assert (Image.open(run.image_path("r003")).getpixel((0, 0))
            == tuple(int(c) for c in np.random.default_rng(3).integers(0, 256, 3)))


def test_generate_resumes_after_a_kill(tmp_path):
    reqs = make_requests(6)
    with pytest.raises(KeyboardInterrupt):
        generate(tmp_path, reqs, SeedColourGenerator(fail_after=3), batch_size=2, progress=False)
    run = RunFolder(tmp_path)
    done = sorted(p.name for p in run.images_dir.glob("*.png"))
    assert done == ["r000.png", "r001.png"]  # the interrupted batch wrote nothing half-way
    # a truncated file left by some other tool is not "complete" and gets regenerated
    data = (run.images_dir / "r000.png").read_bytes()
    (run.images_dir / "r004.png").write_bytes(data[: len(data) // 2])
    assert not image_is_complete(run.images_dir / "r004.png")
    mtime = os.path.getmtime(run.images_dir / "r000.png")
    gen = SeedColourGenerator()
    rep = generate(tmp_path, reqs, gen, batch_size=2, progress=False)
    assert (rep.generated, rep.skipped) == (4, 2)
    assert [i for c in gen.calls for i in c] == ["r002", "r003", "r004", "r005"]
    assert os.path.getmtime(run.images_dir / "r000.png") == mtime
    assert all(image_is_complete(run.image_path(r.id)) for r in reqs)
    assert not [p for p in run.root.rglob("*") if p.name.endswith(".tmp")]


def test_atomic_image_write_leaves_nothing_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "images" / "x.png"

    def broken_save(self, fp, format=None, **kw):
        fp.write(b"\x89PNG partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError):
        save_image_atomic(Image.new("RGB", (4, 4)), target)
    assert not target.exists() and list(target.parent.iterdir()) == []


def test_sharding_and_rank_resolution(tmp_path, monkeypatch):
    reqs = make_requests(7)
    gens = [SeedColourGenerator(), SeedColourGenerator()]
    for rank, g in enumerate(gens):
        rep = generate(tmp_path, reqs, g, batch_size=3, rank=rank, world_size=2, progress=False)
        assert rep.assigned == len(reqs[rank::2])
    ids = [[i for c in g.calls for i in c] for g in gens]
    assert set(ids[0]).isdisjoint(ids[1]) and sorted(ids[0] + ids[1]) == [r.id for r in reqs]
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert resolve_rank() == (2, 4)
    with pytest.raises(ValueError):
        resolve_rank(4, 4)


def test_global_rng_is_seeded_per_request(tmp_path):
    reqs = make_requests(4)
    generate(tmp_path / "a", reqs, GlobalRngGenerator(), batch_size=1, progress=False)
    for rank in range(2):
        generate(tmp_path / "b", reqs, GlobalRngGenerator(), batch_size=1, rank=rank, world_size=2, progress=False)
    for r in reqs:
        a = np.asarray(Image.open(tmp_path / "a" / "images" / f"{r.id}.png"))
        b = np.asarray(Image.open(tmp_path / "b" / "images" / f"{r.id}.png"))
        np.testing.assert_array_equal(a, b)


def test_manifest_mismatch_and_bad_ids(tmp_path):
    generate(tmp_path, make_requests(2), SeedColourGenerator(), progress=False)
    with pytest.raises(ValueError, match="different requests"):
        generate(tmp_path, make_requests(3), SeedColourGenerator(), progress=False)
    generate(tmp_path, make_requests(3), SeedColourGenerator(), progress=False, overwrite=True)
    with pytest.raises(ValueError, match="request id"):
        RunFolder(tmp_path / "x").write_manifest([GenerationRequest("a/b", "edit", "p", 0, "shapes5")])
    with pytest.raises(ValueError, match="duplicate"):
        RunFolder(tmp_path / "x").write_manifest(make_requests(1) * 2)


class OtherColourGenerator(SeedColourGenerator):
    """Another generator (same images, other class): what run.json records must tell them apart."""


def test_a_run_folder_of_another_generator_is_refused(tmp_path):
    import json

    reqs = make_requests(2)
    generate(tmp_path, reqs, SeedColourGenerator(), progress=False, info={"generator_spec": "tests:seed"})
    with pytest.raises(ValueError, match=r"another generator \(generator\.class: '.*SeedColourGenerator' != "
                                         r"'.*OtherColourGenerator'; generator_spec: 'tests:seed' != 'tests:other'.*"
                                         r"--overwrite"):
        generate(tmp_path, reqs, OtherColourGenerator(), progress=False, info={"generator_spec": "tests:other"})
    assert json.loads((tmp_path / "run.json").read_text())["generator_spec"] == "tests:seed"  # nothing rewritten
    rep = generate(tmp_path, reqs, OtherColourGenerator(), progress=False, overwrite=True,
                   info={"generator_spec": "tests:other"})
    assert rep.generated == 2 and json.loads((tmp_path / "run.json").read_text())["generator_spec"] == "tests:other"
    assert generate(tmp_path, reqs, OtherColourGenerator(), progress=False,
                    info={"generator_spec": "tests:other"}).skipped == 2  # the same generator resumes


# ------------------------------------------------------------------------------------------------ eval-set counts


EMU_SUBSET = {"dataset": "emu_edit", "split": "test", "unit": "rows", "expected": 3589, "found": 10, "subset": True}


def test_request_list_validates_eval_set():
    from benchmarks.harness import RequestList, eval_set_is_subset

    reqs = RequestList(make_requests(2), eval_set=EMU_SUBSET)
    assert list(reqs) == make_requests(2) and reqs.eval_set == EMU_SUBSET and isinstance(reqs, list)
    assert RequestList(make_requests(1)).eval_set is None
    with pytest.raises(ValueError, match=r"eval_set is missing keys \['expected', 'found'"):
        RequestList([], eval_set={"dataset": "d", "split": "test", "unit": "rows", "subset": False})
    with pytest.raises(TypeError, match=r"eval_set\['found'\] = '10': expected int"):
        RequestList([], eval_set={**EMU_SUBSET, "found": "10"})
    full = {**EMU_SUBSET, "found": 3589, "subset": False}
    assert not eval_set_is_subset(full) and eval_set_is_subset(EMU_SUBSET)
    assert eval_set_is_subset({**full, "found": 3588})  # undeclared shortfall
    assert not eval_set_is_subset({**full, "expected": None}) and not eval_set_is_subset(None)


def test_run_json_and_results_json_carry_eval_set(tmp_path):
    from benchmarks.harness import RequestList
    from benchmarks.suites.shapes5 import build_requests

    es = {"dataset": "shapes5", "split": "eval", "unit": "scenes", "expected": None, "found": 10, "subset": False}
    reqs = RequestList(list(build_requests(tmp_path, per_task=2, resolution=32)), eval_set=es)
    generate(tmp_path, reqs, OracleGenerator(), progress=False)
    run = RunFolder(tmp_path)
    assert run.read_run_info()["eval_set"] == es
    res = score(tmp_path, Backbones(), progress=False)
    assert res["eval_set"] == es and json.loads(run.results_path.read_text())["eval_set"] == es
    # a resume of the same requests with an updated eval_set records it; a plain list records None
    es2 = {**es, "subset": True}
    generate(tmp_path, RequestList(list(reqs), eval_set=es2), OracleGenerator(), progress=False)
    assert run.read_run_info()["eval_set"] == es2 and score(tmp_path, Backbones(), progress=False)["eval_set"] == es2
    generate(tmp_path / "plain", make_requests(2), SeedColourGenerator(), progress=False)
    assert RunFolder(tmp_path / "plain").read_run_info()["eval_set"] is None
    RunFolder(tmp_path / "plan").write_manifest(reqs)  # --plan-only writes the manifest directly
    assert RunFolder(tmp_path / "plan").read_run_info()["eval_set"] == es


def test_cli_subset_flag_reaches_every_builder(tmp_path, monkeypatch):
    import argparse
    import importlib

    from benchmarks.cli import _requests, add_bench_cli
    from benchmarks.harness import RequestList

    seen: dict[str, dict] = {}

    def fake(name):
        def build(*args, **kwargs):
            seen[name] = kwargs
            return RequestList([], eval_set=None)
        return build

    for mod, fn in [("dreambench", "build_requests"), ("editing", "build_emu_requests"),
                    ("editing", "build_magicbrush_requests"), ("control", "build_requests"),
                    ("shapes5", "build_requests"), ("gedit", "build_requests")]:
        monkeypatch.setattr(importlib.import_module(f"benchmarks.suites.{mod}"), fn, fake(f"{mod}.{fn}"))
    parser = argparse.ArgumentParser()
    gen = add_bench_cli(parser.add_subparsers(dest="command"))["generate"]
    assert "--subset" in gen.format_help()
    for suite, extra in [("dreambench", []), ("emu", []), ("magicbrush", []), ("control", ["--cond", "canny"]),
                         ("shapes5", []), ("gedit", [])]:
        for flag in ([], ["--subset"]):
            args = parser.parse_args(["generate", suite, "--out", str(tmp_path), "--data", str(tmp_path)] + extra + flag)
            _requests(args)
    assert len(seen) == 6 and all(kw["subset"] is True for kw in seen.values())  # the last call of each: --subset
    args = parser.parse_args(["generate", "emu", "--out", str(tmp_path), "--data", str(tmp_path)])
    _requests(args)
    assert seen["editing.build_emu_requests"]["subset"] is False


# ------------------------------------------------------------------------------------------------ backbones


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Tiny random-init CLIP (ViT-B/32 and B/16 slots) and DINO saved in the real layouts."""
    root = tmp_path_factory.mktemp("weights")
    save_random_clip(root / "ViT-B-32.pt", "tiny", seed=0)
    save_random_clip(root / "ViT-B-16.pt", "tiny", seed=1)
    save_random_dino(root / "dino-vits16", "tiny", seed=0)
    return root


# ------------------------------------------------------------------------------------------------ DreamBench


@pytest.mark.skipif(not DREAMBENCH.is_dir(), reason="DreamBench folder not present")
def test_dreambench_end_to_end_on_real_data(tmp_path, weights):
    from benchmarks.suites.dreambench import build_requests, run_dreambench

    reqs = build_requests(DREAMBENCH, subjects=["backpack", "dog"], prompts_per_subject=2, images_per_prompt=1,
                          resolution=64)
    assert [r.id for r in reqs] == ["backpack-p00-s0", "backpack-p01-s0", "dog-p00-s0", "dog-p01-s0"]
    assert reqs[0].prompt == "a backpack in the jungle" and reqs[0].sources[0].endswith("backpack/00.jpg")
    assert reqs[2].fields["subset"] == "live"
    assert len(build_requests(DREAMBENCH)) == 3000  # the full protocol: 750 prompts x 4 seeds

    bb = Backbones(weights_dir=weights)
    res = run_dreambench(DREAMBENCH, CopySourceGenerator(), tmp_path, bb, subjects=["backpack", "dog"],
                         prompts_per_subject=2, images_per_prompt=1, resolution=64, also_all_references=True)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == res
    assert res["protocol"] == "dreambench/omnigen" and res["image_count"] == 4 and res["seeds"] == [0]
    assert set(res["backbones"]) == {"clip_b32", "dino_vits16"}
    assert len(res["backbones"]["clip_b32"]["sha256"]) == 64
    assert set(res["metrics"]) == {"clip_t", "clip_i", "dino"}
    assert res["subsets"]["object"]["clip_i"] and res["subsets"]["subject/dog"]["dino"]
    assert res["counts"]["clip_i"] == 4 and res["protocol_settings"]["images_per_prompt"] == 4

    # independent check of one CLIP-I value: the copied reference (64 px) vs 00.jpg
    enc = CLIPEncoder.from_file(weights / "ViT-B-32.pt")
    out = Image.open(tmp_path / "images" / "dog-p00-s0.png")
    ref = Image.open(DREAMBENCH / "dog" / "00.jpg")
    want = paired_cosine(enc.encode_images([out]), enc.encode_images([ref])).item()
    per_image = {r["id"]: r for r in map(json.loads, (tmp_path / "results_per_image.jsonl").read_text().splitlines())}
    assert per_image["dog-p00-s0"]["clip_i"] == pytest.approx(want, abs=1e-5)
    assert res["metrics"]["clip_i"] > 0.9  # a copy of the reference: the copy-paste ceiling

    allrefs = json.loads((tmp_path / "results_allrefs.json").read_text())
    assert allrefs["protocol"] == "dreambench/omnigen-allrefs" and allrefs["generated_under"] == "dreambench/omnigen"
    assert allrefs["metrics"]["clip_i"] < res["metrics"]["clip_i"]  # other photos of the subject differ more
    assert allrefs["metrics"]["clip_t"] == pytest.approx(res["metrics"]["clip_t"])


@pytest.mark.skipif(not DREAMBENCH.is_dir(), reason="DreamBench folder not present")
def test_cli_generate_score_table(tmp_path, weights, capsys):
    run = tmp_path / "run"
    common = ["--subjects", "backpack", "--prompts-per-subject", "1", "--images-per-prompt", "2", "--resolution", "32"]
    assert bench_main(["generate", "dreambench", "--out", str(run), "--generator", "copy-source", "--no-progress",
                       "--data", str(DREAMBENCH), "--limit", "1"] + common) == 0
    assert len(list((run / "images").glob("*.png"))) == 1
    with pytest.raises(FileNotFoundError, match="1 of 2 images missing"):
        bench_main(["score", "dreambench", str(run), "--weights-dir", str(weights), "--no-progress"])
    assert bench_main(["generate", "dreambench", "--out", str(run), "--generator", "copy-source", "--no-progress",
                       "--data", str(DREAMBENCH)] + common) == 0  # resumes
    assert bench_main(["score", "dreambench", str(run), "--no-progress",
                       "--backbone", f"clip_b32={weights / 'ViT-B-32.pt'}",
                       "--backbone", f"dino_vits16={weights / 'dino-vits16'}"]) == 0
    res = json.loads((run / "results.json").read_text())
    assert res["image_count"] == 2 and res["seeds"] == [0, 1]
    assert res["eval_set"]["subset"] is True  # one subject, one prompt: a selection from the published split
    capsys.readouterr()
    assert bench_main(["table", "4", "--results", f"tiny={run / 'results.json'}"]) == 0
    text = capsys.readouterr().out
    assert "**tiny** (ours, subset, not comparable: random-init backbones)" in text  # the test's own backbones
    row = next(line for line in text.splitlines() if "**tiny**" in line)
    assert "dreambench/omnigen (2 images)" in text and "(+" not in row and "(-" not in row  # no deltas
    plan = tmp_path / "plan"
    assert bench_main(["generate", "dreambench", "--out", str(plan), "--plan-only", "--data", str(DREAMBENCH)] + common) == 0
    assert len(RunFolder(plan).read_manifest()) == 2 and not (plan / "images").exists()


# ------------------------------------------------------------------------------------------------ Shapes-5


def test_shapes5_oracle_scores_one_and_copy_scores_lower(tmp_path):
    from benchmarks.suites.shapes5 import build_requests

    reqs = build_requests(tmp_path / "oracle", per_task=2, resolution=64)
    assert len(reqs) == 10 and {r.task for r in reqs} == {"inpaint", "ground", "control", "subject", "edit"}
    generate(tmp_path / "oracle", reqs, OracleGenerator(), progress=False)
    res = score(tmp_path / "oracle", Backbones(), progress=False)
    m = res["metrics"]
    assert m["concept"] == pytest.approx(1.0) and m["localization"] == pytest.approx(1.0)
    assert m["inpaint/masked_l1"] == 0.0 and m["edit/l1"] == 0.0 and m["ground/iou"] == 1.0
    assert m["control/edge_f1"] == 1.0 and m["control/seg_miou"] == pytest.approx(1.0)
    assert set(res["subsets"]) >= {"inpaint", "ground", "control", "subject", "edit"}
    assert res["metric_directions"]["edit/l1"] == "lower" and res["backbones"] == {}

    reqs2 = build_requests(tmp_path / "copy", per_task=2, resolution=64)
    generate(tmp_path / "copy", reqs2, CopySourceGenerator(), progress=False)
    m2 = score(tmp_path / "copy", Backbones(), progress=False)["metrics"]
    assert m2["ground/iou"] == 0.0 and m2["edit/success"] == 0.0
    assert m2["concept"] < 0.8 and m2["localization"] < 1.0


# ------------------------------------------------------------------------------------------------ editing


def _edit_records(tmp_path, n=3):
    from lit_cologen.data.evalsets import EditEvalRecord

    recs = []
    for i in range(n):
        src = Image.fromarray(np.random.default_rng(i).integers(0, 256, (40, 48, 3), dtype=np.uint8))
        tgt = Image.fromarray(np.random.default_rng(100 + i).integers(0, 256, (40, 48, 3), dtype=np.uint8))
        src.save(tmp_path / f"s{i}.png")
        tgt.save(tmp_path / f"t{i}.png")
        recs.append(EditEvalRecord(key=f"mb-{i}", dataset="magicbrush", instruction=f"edit {i}",
                                   source_ref=tmp_path / f"s{i}.png", target_ref=tmp_path / f"t{i}.png",
                                   input_caption="a photo", output_caption=f"an edited photo {i}",
                                   task="local" if i % 2 else "global"))
    return recs


def test_editing_scorers(tmp_path, weights):
    from benchmarks.suites.editing import requests_from_records

    recs = _edit_records(tmp_path)
    run = tmp_path / "run"
    reqs = requests_from_records(recs, run, "editing/magicbrush")
    assert reqs[0].sources == ["inputs/mb-0-source.png"] and reqs[0].fields["target"] == "inputs/mb-0-target.png"
    # identity edit: output = source -> CLIP_i = DINO = 1, L1 = 0 (Emu Edit definitions)
    generate(run, reqs, CopySourceGenerator(), progress=False)
    bb = Backbones(weights_dir=weights)
    res = score(run, bb, progress=False)
    assert res["protocol"] == "editing/magicbrush"
    assert res["metrics"]["clip_i"] == pytest.approx(1.0, abs=1e-5)
    assert res["metrics"]["dino"] == pytest.approx(1.0, abs=1e-5)
    assert res["metrics"]["l1"] == 0.0
    assert set(res["subsets"]) == {"global", "local"}
    assert "clip_out" in res["metrics"] and res["metrics"]["clip_dir"] is not None
    # MagicBrush's own protocol on the same folder: vs the ground truth
    gt = score(run, bb, protocol="editing/magicbrush-gt", progress=False, write=False)
    s0 = np.asarray(Image.open(tmp_path / "s0.png"), dtype=np.float64) / 255
    t0 = np.asarray(Image.open(tmp_path / "t0.png"), dtype=np.float64) / 255
    per = [np.abs(np.asarray(Image.open(tmp_path / f"s{i}.png"), dtype=np.float64) / 255
                  - np.asarray(Image.open(tmp_path / f"t{i}.png"), dtype=np.float64) / 255).mean() for i in range(3)]
    assert gt["metrics"]["l1"] == pytest.approx(np.mean(per), rel=1e-5)
    assert abs(s0 - t0).mean() == pytest.approx(per[0])
    with pytest.raises(ValueError, match="cannot score"):
        score(run, bb, protocol="dreambench/omnigen", progress=False)


def test_a_metric_without_its_inputs_is_recorded_unavailable_with_the_reason(tmp_path, weights, capsys):
    """The MagicBrush parquet export has no captions: CLIP_out cannot be computed, and results.json says why."""
    from benchmarks.suites.editing import requests_from_records

    recs = _edit_records(tmp_path)
    for r in recs:
        r.input_caption = r.output_caption = None
    run = tmp_path / "run"
    generate(run, requests_from_records(recs, run, "editing/magicbrush"), CopySourceGenerator(), progress=False)
    res = score(run, Backbones(weights_dir=weights), progress=False)
    assert "clip_out" not in res["metrics"] and res["metrics"]["clip_i"] == pytest.approx(1.0, abs=1e-5)
    assert res["unavailable"]["clip_out"].startswith("3 of 3 requests have no target caption")
    assert set(res["unavailable"]) == {"clip_out", "clip_dir"}
    assert bench_main(["score", "magicbrush", str(run), "--weights-dir", str(weights), "--no-progress"]) == 0
    assert "cologen bench score: clip_out not computed: 3 of 3 requests have no target caption" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ control




class MeanColour(torch.nn.Module):
    num_features = 3

    def forward(self, x):
        return x.float().mean(dim=(2, 3)).double()


def test_control_scorer(tmp_path, weights):
    from benchmarks.metrics import canny_edges, load_images01
    from benchmarks.suites.control import requests_from_records

    save_random_dpt(tmp_path / "dpt")
    save_random_segformer(tmp_path / "seg", num_labels=150)
    bb = Backbones(paths={"clip_b16": weights / "ViT-B-16.pt", "dpt_large": tmp_path / "dpt",
                          "seg_ade20k": tmp_path / "seg"})
    torch.manual_seed(0)
    bb.register("hed", HEDAnnotator(ControlNetHED()), {"path": "random-init"})
    bb.register("inception", MeanColour(), {"path": "mean-colour"})

    def img(seed):
        a = np.zeros((48, 48, 3), np.uint8)
        rng = np.random.default_rng(seed)
        x, y = rng.integers(4, 24, 2)
        a[y:y + 20, x:x + 20] = rng.integers(60, 256, 3)
        return Image.fromarray(a)

    recs = []
    for i in range(2):
        im = img(i)
        edges = canny_edges(load_images01([im]))[0, 0].numpy()
        recs.append(ControlRecord("canny", i, f"a square {i}", im, Image.fromarray((edges * 255).astype(np.uint8)).convert("RGB"),
                            Image.fromarray((edges * 255).astype(np.uint8))))
        depth = Image.fromarray(np.tile(np.linspace(0, 255, 48, dtype=np.uint8), (48, 1)))
        recs.append(ControlRecord("depth", i, f"depth {i}", im, depth.convert("RGB"), depth))
        hed = bb.get("hed")(load_images01([im]))[0, 0].numpy()
        hed_im = Image.fromarray((hed * 255).round().astype(np.uint8))
        recs.append(ControlRecord("hed", i, f"hed {i}", im, hed_im.convert("RGB"), hed_im))
        seg = bb.segmenter("seg_ade20k")([im], (48, 48))[0].numpy()
        recs.append(ControlRecord("seg", i, f"seg {i}", im, im, Image.fromarray((seg + 1).astype(np.uint8))))
    run = tmp_path / "run"
    reqs = requests_from_records(recs, run, seg_dataset="ade20k", images_per_prompt=2, resolution=48)
    assert len(reqs) == 16 and {r.seed for r in reqs} == {42, 43}
    generate(run, reqs, OracleGenerator("real"), progress=False)  # outputs = the real images
    res = score(run, bb, batch_size=8, progress=False)
    m = res["metrics"]
    assert m["canny/f1"] == 1.0 and 0 <= m["canny/clip_score"] <= 100
    assert m["hed/ssim"] == pytest.approx(1.0, abs=1e-3)  # 8-bit levels may flip under batched convs
    assert m["seg_ade20k/miou"] == pytest.approx(1.0)  # labels = the segmenter's own output (ADE20K ids + 1)
    assert m["depth/rmse"] >= 0 and -1 <= m["depth/ssim"] <= 1
    assert m["canny/fid"] == pytest.approx(0.0, abs=1e-6)  # groups identical to the real set
    assert "hed/ms_ssim" in res["extra"]["skipped"]  # 48 px is too small for 5-scale MS-SSIM
    assert res["counts"]["canny/prompts"] == 2 and res["counts"]["canny/f1"] == 2
    bare = Backbones(paths={"clip_b16": weights / "ViT-B-16.pt"})
    with pytest.raises(Exception, match="dpt_large"):
        score(run, bare, progress=False, write=False)
    res2 = score(run, bare, progress=False, write=False, options={"skip_missing": True, "fid": False})
    assert "depth/rmse" in res2["extra"]["skipped"] and "canny/f1" in res2["metrics"]


# ------------------------------------------------------------------------------------------------ GEdit


class FixedJudge:
    """Test double judge: 10 when the output differs from the source, else 2 (SC); PQ fixed."""

    def judge(self, source, output, instruction):
        same = np.array_equal(np.asarray(source), np.asarray(output))
        return {"SC": [2.0, 9.0] if same else [10.0, 8.0], "PQ": [4.0, 9.0]}


def test_gedit_with_a_judge(tmp_path):
    from benchmarks.suites.gedit import Judge, parse_scores

    assert parse_scores('blah {"score": [7, 11], "reasoning": "x"}') == [7.0, 10.0]
    assert parse_scores("scores: 3 and 4.5") == [3.0, 4.5]
    with pytest.raises(ValueError):
        parse_scores("no numbers")
    assert isinstance(FixedJudge(), Judge)
    reqs = []
    for i in range(3):
        p = tmp_path / "run" / "inputs" / f"g{i}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16), (i * 40, 0, 0)).save(p)
        reqs.append(GenerationRequest(f"g{i}", "edit", "make it red", 0, "gedit/full", sources=[f"inputs/g{i}.png"],
                                      width=16, height=16, fields={"subset": "color_alter" if i else "style_change"}))
    generate(tmp_path / "run", reqs, CopySourceGenerator(), progress=False)
    with pytest.raises(Exception, match="judge"):
        score(tmp_path / "run", Backbones(), progress=False)
    bb = Backbones()
    bb.register("judge", FixedJudge(), {"path": "fixed-judge"})
    res = score(tmp_path / "run", bb, progress=False)
    assert res["metrics"]["G_SC"] == 2.0 and res["metrics"]["G_PQ"] == 4.0
    assert res["metrics"]["G_O"] == pytest.approx(np.sqrt(8.0))
    assert res["backbones"]["judge"] == {"path": "fixed-judge", "dtype": None, "random_init": False}


def test_resolve_run_finds_the_base_of_a_curriculum_and_of_a_single_step(tmp_path):
    from benchmarks.cologen_generator import resolve_run

    cur = tmp_path / "cur"
    for step, files in (("0_base", ["transformer/config.json"]), ("1_edit", ["adapters.safetensors"])):
        for f in files + ["done.json"]:
            (cur / step / "final" / f).parent.mkdir(parents=True, exist_ok=True)
            (cur / step / "final" / f).write_text("{}")
    assert resolve_run(cur) == (str(cur / "0_base" / "final"), str(cur / "1_edit" / "final"))
    # a single step's final/ holds adapters only: its base is the step's model.pretrained_path, not a random init
    (cur / "1_edit" / "config.yaml").write_text(f"model:\n  pretrained_path: {cur / '0_base' / 'final'}\n")
    assert resolve_run(cur / "1_edit" / "final") == (str(cur / "0_base" / "final"), str(cur / "1_edit" / "final"))
