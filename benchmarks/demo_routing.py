"""Which expert the staged model's routers choose at inference, per task: the mechanism the curriculum should build.

For the first ``per_task`` held-out Shapes-5 scenes of every task, one pipeline call per scene runs the staged model
(the weights the evaluation uses) under :class:`~lit_cologen.pipeline.routing.RoutingCapture`, and each routed
block's choice is counted. Sample routing (D8) picks one expert per image and block from the source branch, which
sees no noise and no text (D3, D4), so one denoising step gives the same choices as the evaluation's eight.

Experts are named after the curriculum step that added them (``0_inpaint`` -> expert 0 ``inpaint``). The summary
``own_expert_share`` is, per task, the share of its block decisions that go to the expert its own step trained:
1.0 for a router that sends each task to its own expert, about 1 / N for one that ignores the task.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Optional


def expert_names(staged_dir: Path) -> list[str]:
    """The curriculum's expert steps in order (``0_inpaint`` ... ``4_edit`` -> ``inpaint`` ... ``edit``)."""
    steps = sorted((p for p in Path(staged_dir).iterdir() if p.is_dir() and p.name.split("_", 1)[0].isdigit()),
                   key=lambda p: int(p.name.split("_", 1)[0]))
    return [p.name.split("_", 1)[1] for p in steps]


def inference_routing(staged_dir: Path, base: Optional[Path], preset: str = "tiny", device: Optional[str] = None,
                      per_task: int = 8, resolution: int = 32) -> dict[str, Any]:
    """``{"blocks": [...], "experts": [...], "per_task": n, "counts": {task: {block: {expert: n}}},
    "own_expert_share": {task: share}}`` for the staged run in ``staged_dir`` (see the module docstring)."""
    from benchmarks.cologen_generator import make
    from lit_cologen.data import shapes
    from lit_cologen.data.schema import TASKS
    from lit_cologen.pipeline.routing import RoutingCapture, block_names, routing_rows

    gen = make(run=str(staged_dir), base=None if base is None else str(base), preset=preset, device=device, steps=1)
    pipe = gen.pipe
    blocks = block_names(pipe.transformer)
    experts = expert_names(staged_dir)
    counts: dict[str, dict[str, Counter]] = {}
    for task in TASKS:
        per_block = {b: Counter() for b in blocks}
        for index in range(per_task):
            s = shapes.make_sample(task, index, "eval", resolution, 0)
            with RoutingCapture(pipe.transformer) as capture:
                pipe(task, s.source, s.prompt, mask=s.mask, cond_type=s.cond_type, num_inference_steps=1,
                     seed=index, output_type="pt", show_progress=False)
            for block, expert, _weight in routing_rows(capture.decisions, blocks, image=0):
                name = experts[expert] if expert < len(experts) else str(expert)
                per_block[block][name] += 1
        counts[task] = {b: dict(c) for b, c in per_block.items()}
    own = {}
    for task, per_block in counts.items():
        total = sum(sum(c.values()) for c in per_block.values())
        own[task] = sum(c.get(task, 0) for c in per_block.values()) / total if total else float("nan")
    return {"blocks": blocks, "experts": experts, "per_task": per_task, "counts": counts, "own_expert_share": own}


def routing_lines(routing: Optional[dict[str, Any]]) -> list[str]:
    """The report section: per task and block the experts chosen (``edit 6/8, control 2/8``), and the own-expert
    share."""
    if not routing or not routing.get("blocks"):
        return []
    blocks, n = routing["blocks"], routing["per_task"]
    lines = ["## Routing at inference (staged)", "",
             f"The expert each routed block chooses for the first {n} held-out scenes of each task; experts are named "
             "after the curriculum step that trained them. Own expert: the share of the task's block decisions that "
             f"go to its own step's expert (1.0: routed by task; about 1/{len(routing['experts'])}: the task is "
             "ignored).", "",
             "| task | " + " | ".join(blocks) + " | own expert |", "|---|" + "---|" * (len(blocks) + 1)]
    for task, per_block in routing["counts"].items():
        cells = [", ".join(f"{e} {k}/{n}" for e, k in sorted(per_block[b].items(), key=lambda x: -x[1]))
                 for b in blocks]
        lines.append(f"| {task} | " + " | ".join(cells) + f" | {routing['own_expert_share'][task]:.2f} |")
    return lines + [""]
