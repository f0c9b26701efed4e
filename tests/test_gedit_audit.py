"""GEdit judged scores can be audited: judge id / revision, raw answers per image, parse failures and refusals.

Truth: a scripted judge (test input implementing the ``Judge`` protocol) answers with known raw texts: JSON scores,
bare numbers, an unparsable sentence, a model refusal, and a content-filter refusal raised as ``JudgeRefusal``. The
expected means are computed by hand over the images whose two answers gave scores; the failures must be counted,
kept verbatim in ``judge_raw.jsonl`` and left out of the means (never scored as 0).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import pytest
from PIL import Image

from benchmarks.harness import CopySourceGenerator, GenerationRequest, generate, score
from benchmarks.metrics import Backbones
from benchmarks.metrics.weights import hash_folder
from benchmarks.suites.gedit import Judge, JudgeRefusal, judge_identity, read_answer

GOOD_SC = '{"score": [8, 6], "reasoning": "the cup is red now"}'
GOOD_PQ = '{"score": [9, 7], "reasoning": "natural"}'
REFUSAL = "I'm sorry, but I can't assist with that request."
UNPARSABLE = "The edit looks fine to me."
FILTERED = "content_filter: the response was filtered due to the prompt triggering the content management policy"

#: request id -> (SC answer, PQ answer); None: the judge raises JudgeRefusal(FILTERED)
SCRIPT = {
    "g0": (GOOD_SC, GOOD_PQ),                  # SC 6, PQ 7
    "g1": (UNPARSABLE, GOOD_PQ),               # parse failure
    "g2": (GOOD_SC, REFUSAL),                  # refusal (the model's)
    "g3": None,                                # refusal (the service's content filter)
    "g4": ("Scores: 4, 5", "6 and 6"),         # bare numbers: SC 4, PQ 6
}


class ScriptedJudge:
    """Answers each request (found by its instruction) with the scripted raw texts."""

    model_id = "acme/judge-vl-7b"
    revision = "0123456789abcdef0123456789abcdef01234567"

    def __init__(self, script):
        self.script = script
        self.calls = 0

    def judge(self, source, output, instruction):
        self.calls += 1
        answers = self.script[instruction]
        if answers is None:
            raise JudgeRefusal(FILTERED)
        return {"SC": answers[0], "PQ": answers[1]}


def _run(tmp_path: Path, script: dict) -> Path:
    run = tmp_path / "run"
    reqs = []
    for i, key in enumerate(script):
        p = run / "inputs" / f"{key}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16), (i * 40, 0, 0)).save(p)
        reqs.append(GenerationRequest(key, "edit", key, 0, "gedit/full", sources=[f"inputs/{key}.png"], width=16,
                                      height=16, fields={"subset": "color_alter" if i % 2 else "style_change"}))
    generate(run, reqs, CopySourceGenerator(), progress=False)
    return run


@pytest.fixture()
def scored(tmp_path):
    run = _run(tmp_path, SCRIPT)
    judge = ScriptedJudge(SCRIPT)
    assert isinstance(judge, Judge)
    bb = Backbones()
    bb.register("judge", judge, {"path": "<scripted>"})
    res = score(run, bb, progress=False)
    return run, res, judge


def test_failures_and_refusals_are_counted_and_left_out_of_the_means(scored):
    run, res, judge = scored
    assert judge.calls == 5  # one call per image, nothing re-asked
    counts = res["judge_counts"]
    assert {k: counts[k] for k in ("images", "judged", "excluded", "parse_failures", "refusals")} == \
        {"images": 5, "judged": 2, "excluded": 3, "parse_failures": 1, "refusals": 2}
    assert counts["answers"] == {"SC": {"scored": 3, "parse_failure": 1, "refusal": 1},
                                 "PQ": {"scored": 3, "parse_failure": 0, "refusal": 2}}
    m = res["metrics"]
    assert m["G_SC"] == pytest.approx((6 + 4) / 2) and m["G_PQ"] == pytest.approx((7 + 6) / 2)
    assert m["G_O"] == pytest.approx((math.sqrt(6 * 7) + math.sqrt(4 * 6)) / 2)
    assert res["counts"]["G_SC"] == res["counts"]["G_O"] == 2  # the same two images in every mean
    on_disk = json.loads((run / "results.json").read_text())
    assert on_disk["judge_counts"] == counts and "excluded" in counts["policy"]


def test_raw_answers_are_kept_per_image(scored):
    run, res, _ = scored
    rows = [json.loads(line) for line in (run / "judge_raw.jsonl").read_text().splitlines()]
    by_id = {r["id"]: r for r in rows}
    assert list(by_id) == list(SCRIPT) and res["judge"]["raw_outputs"] == "judge_raw.jsonl"
    assert by_id["g0"]["status"] == "scored" and by_id["g0"]["SC"] == {"raw": GOOD_SC, "scores": [8.0, 6.0],
                                                                       "status": "scored"}
    assert by_id["g1"]["status"] == "parse_failure" and by_id["g1"]["SC"] == {"raw": UNPARSABLE, "scores": None,
                                                                              "status": "parse_failure"}
    assert by_id["g1"]["PQ"]["status"] == "scored"  # the good answer is kept, the image still excluded
    assert by_id["g2"]["status"] == "refusal" and by_id["g2"]["PQ"]["raw"] == REFUSAL
    assert by_id["g3"]["status"] == "refusal" and by_id["g3"]["SC"]["raw"] == by_id["g3"]["PQ"]["raw"] == FILTERED
    assert by_id["g4"]["SC"]["scores"] == [4.0, 5.0] and by_id["g4"]["instruction"] == "g4"
    per_image = {r["id"]: r for r in map(json.loads, (run / "results_per_image.jsonl").read_text().splitlines())}
    assert per_image["g1"] == {"id": "g1", "judge_status": "parse_failure"}  # no value, not a 0
    assert per_image["g0"]["judge_status"] == "scored" and per_image["g0"]["G_SC"] == 6.0


def test_judge_id_and_revision_are_recorded(scored):
    _, res, _ = scored
    judge = res["judge"]
    assert judge["class"] == "ScriptedJudge"
    assert (judge["model_id"], judge["model_id_source"]) == ("acme/judge-vl-7b", "judge_attribute")
    assert (judge["revision"], judge["revision_source"]) == (ScriptedJudge.revision, "judge_attribute")
    assert judge["path"] == "<scripted>" and judge["prompts_sha256"] is None  # not our prompts: not claimed


def test_a_run_where_nothing_could_be_judged_has_no_means_and_says_why(tmp_path):
    script = {"g0": (UNPARSABLE, UNPARSABLE), "g1": None}
    bb = Backbones()
    bb.register("judge", ScriptedJudge(script), {"path": "<scripted>", "model_id": "acme/j", "revision": "r1"})
    res = score(_run(tmp_path, script), bb, progress=False)
    assert res["metrics"] == {}
    assert "1 parse failure(s), 1 refusal(s)" in res["unavailable"]["G_O"]
    assert (res["judge"]["model_id"], res["judge"]["revision"]) == ("acme/j", "r1")
    assert res["judge"]["revision_source"] == "registered_info"


def test_a_judge_that_reads_its_own_scores_is_recorded_without_raw_text(tmp_path):
    class ScoresJudge:
        def judge(self, source, output, instruction):
            return {"SC": [7.0, 9.0], "PQ": [5.0, 12.0]}

    bb = Backbones()
    bb.register("judge", ScoresJudge(), {"path": "<scores>"})
    run = _run(tmp_path, {"g0": None})
    res = score(run, bb, progress=False)
    row = json.loads((run / "judge_raw.jsonl").read_text())
    assert row["SC"] == {"raw": None, "scores": [7.0, 9.0], "status": "scored"} and row["PQ"]["scores"] == [5.0, 10.0]
    assert res["metrics"]["G_SC"] == 7.0 and res["metrics"]["G_PQ"] == 5.0
    assert (res["judge"]["model_id"], res["judge"]["revision"]) == ("unknown", "unknown")


def test_read_answer_tells_refusals_from_parse_failures():
    assert read_answer('{"score": [7, 11]}').scores == [7.0, 10.0]
    assert read_answer("I cannot rate image 2 of 2").status == "refusal"  # not the numbers 2, 2
    assert read_answer("Sorry for the wait: {\"score\": [3, 4]}").scores == [3.0, 4.0]  # JSON scores win
    assert read_answer("").status == "parse_failure"
    assert read_answer(FILTERED).status == "refusal"


def test_judge_identity_of_a_hub_cache_snapshot_a_local_dir_download_and_a_plain_folder(tmp_path):
    commit = "a" * 40
    snap = tmp_path / "hub" / "models--Qwen--Qwen2.5-VL-7B-Instruct" / "snapshots" / commit
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    assert judge_identity(snap) == {"model_id": "Qwen/Qwen2.5-VL-7B-Instruct", "model_id_source": "hf_cache_snapshot",
                                    "revision": commit, "revision_source": "hf_cache_snapshot"}

    local = tmp_path / "local"
    (local / ".cache" / "huggingface" / "download").mkdir(parents=True)
    (local / "config.json").write_text(json.dumps({"_name_or_path": "Qwen/Qwen2.5-VL-7B-Instruct"}))
    meta = local / ".cache" / "huggingface" / "download" / "config.json.metadata"
    meta.write_text(f"{'b' * 40}\netag\n{time.time() + 5}\n")
    assert judge_identity(local) == {"model_id": "Qwen/Qwen2.5-VL-7B-Instruct",
                                     "model_id_source": "config_name_or_path", "revision": "b" * 40,
                                     "revision_source": "hf_local_dir_metadata"}
    os.utime(local / "config.json", (time.time() + 60, time.time() + 60))  # edited after the download
    assert judge_identity(local)["revision"] == "unknown"
    assert judge_identity(local, hash_folder(local))["revision_source"] == "content_hash"

    plain = tmp_path / "plain"
    plain.mkdir()
    assert judge_identity(plain, hash_folder(plain)) == {"model_id": "unknown", "model_id_source": "unknown",
                                                         "revision": "unknown", "revision_source": "unknown"}
    (plain / "config.json").write_text(json.dumps({"_name_or_path": str(plain)}))  # a path, not a Hub id
    (plain / "model.safetensors").write_bytes(b"weights-1")
    first = judge_identity(plain, hash_folder(plain))
    assert first["model_id"] == "unknown" and first["revision"].startswith("content-sha256:")
    (plain / "model.safetensors").write_bytes(b"weights-2")
    assert judge_identity(plain, hash_folder(plain))["revision"] != first["revision"]
