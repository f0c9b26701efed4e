"""The demo report's routing at inference: which expert each block picks per task, counted through the pipeline."""

from __future__ import annotations

import json

from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tiny_run import write_two_expert_adapters

from benchmarks.demo_routing import expert_names, inference_routing, routing_lines
from lit_cologen.data.schema import TASKS


def _staged_run(tmp_path, zero_routers: bool):
    """A two-step staged run folder (inpaint, ground) whose last step holds a two-expert adapter export."""
    run = tmp_path / "staged"
    (run / "0_inpaint" / "final").mkdir(parents=True)
    (run / "0_inpaint" / "final" / "done.json").write_text("{}")
    final = write_two_expert_adapters(run / "1_ground" / "final")
    (final / "done.json").write_text("{}")
    if zero_routers:  # every logit 0: top-1 takes the first expert (argmax ties go to index 0)
        path = final / "adapters.safetensors"
        meta = safe_open(str(path), "pt").metadata()
        tensors = {k: (v.zero_() if ".router." in k else v) for k, v in load_file(path).items()}
        save_file(tensors, str(path), metadata=meta)
    return run


def test_expert_names_follow_the_step_folders(tmp_path):
    assert expert_names(_staged_run(tmp_path, zero_routers=False)) == ["inpaint", "ground"]


def test_zero_routers_send_every_task_to_the_first_expert(tmp_path):
    r = inference_routing(_staged_run(tmp_path, zero_routers=True), None, per_task=2)
    assert r["experts"] == ["inpaint", "ground"] and len(r["blocks"]) == 4  # tiny: 2 double + 2 single blocks
    for task in TASKS:
        assert all(c == {"inpaint": 2} for c in r["counts"][task].values()), task
    assert r["own_expert_share"]["inpaint"] == 1.0 and r["own_expert_share"]["ground"] == 0.0
    text = "\n".join(routing_lines(r))
    assert "| ground | inpaint 2/2 | inpaint 2/2 | inpaint 2/2 | inpaint 2/2 | 0.00 |" in text
    json.dumps(r)  # goes into summary.json as it is


def test_random_routers_count_every_decision_once(tmp_path):
    r = inference_routing(_staged_run(tmp_path, zero_routers=False), None, per_task=3)
    for task in TASKS:
        assert all(sum(c.values()) == 3 for c in r["counts"][task].values())
    assert routing_lines(None) == [] and routing_lines({"blocks": []}) == []
