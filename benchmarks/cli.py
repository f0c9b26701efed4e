"""``cologen bench generate | score | table``: the evaluation harness on the command line.

``add_bench_cli(subparsers)`` registers the three commands on an argparse sub-parser set (the ``cologen bench``
group); ``python -m benchmarks.cli ...`` runs them stand-alone.

Examples::

    # DreamBench, full protocol (750 prompts x 4 images), then score with local weights
    cologen bench generate dreambench --out runs/db --generator mypkg.gen:make --data DREAMBENCH_FOLDER
    cologen bench score dreambench runs/db --weights-dir ~/weights          # ViT-B-32.pt, dino-vits16/ inside
    cologen bench score dreambench/omnigen-allrefs runs/db --weights-dir ~/weights
    cologen bench table 4 --results ours=runs/db/results.json --format latex

    # a baseline written by other code: plan the manifest only, fill images/<id>.png, score the folder
    cologen bench generate dreambench --out runs/omnigen --plan-only
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_bench_cli", "main", "SUITES", "load_generator", "parse_kv"]

#: suite name -> the protocol its requests follow
SUITES: dict[str, str] = {
    "dreambench": "dreambench/omnigen",
    "emu": "editing/emu",
    "magicbrush": "editing/magicbrush",
    "control": "control/controlnetpp",
    "shapes5": "shapes5",
    "gedit": "gedit/full",
}


def default_dreambench_path():
    """``lit_cologen.data.evalsets.default_dreambench_path()`` (imported when called: building the parser stays light)."""
    from lit_cologen.data.evalsets import default_dreambench_path as find

    return find()


def parse_kv(items: list[str] | None, what: str) -> dict[str, Any]:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}`` (values parsed as JSON when they are JSON)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"{what}: expected KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def load_generator(spec: str, kwargs: dict[str, Any] | None = None):
    """A Generator from ``copy-source`` (diagnostic baseline) or ``package.module:factory`` (called with kwargs)."""
    from .harness import CopySourceGenerator, Generator

    if spec == "copy-source":
        return CopySourceGenerator()
    if ":" not in spec:
        raise SystemExit(f"--generator: expected 'copy-source' or 'package.module:factory', got {spec!r}")
    mod, name = spec.split(":", 1)
    obj = getattr(importlib.import_module(mod), name)
    gen = obj(**(kwargs or {})) if inspect.isclass(obj) or not hasattr(obj, "generate") else obj
    if not isinstance(gen, Generator):
        raise SystemExit(f"--generator {spec}: {type(gen).__name__} has no generate(requests) method")
    return gen


def _backbones(args):
    from .metrics.backbones import Backbones

    return Backbones(paths=parse_kv(args.backbone, "--backbone"), weights_dir=args.weights_dir, device=args.device)


# ------------------------------------------------------------------------------------------------------------ generate


def _requests(args) -> list:
    """The suite's requests (a ``RequestList`` carrying ``eval_set``); ``--subset`` is passed to every builder, which
    checks the loaded eval set against its published size (``--limit-items`` / ``--subjects`` /
    ``--prompts-per-subject`` make a subset too: the builders record that)."""
    suite = args.suite
    if suite == "dreambench":
        from .suites.dreambench import build_requests

        subjects: Any = None
        if args.subjects:
            subjects = int(args.subjects) if args.subjects.isdigit() else args.subjects.split(",")
        return build_requests(args.data or default_dreambench_path(),
                              subjects=subjects, prompts_per_subject=args.prompts_per_subject,
                              images_per_prompt=args.images_per_prompt, resolution=args.resolution,
                              subset=args.subset)
    if args.data is None and suite != "shapes5":
        raise SystemExit(f"generate {suite}: --data PATH (the local dataset) is required")
    if suite == "emu":
        from .suites.editing import build_emu_requests

        return build_emu_requests(args.data, args.out, split=args.split or "test", limit=args.limit_items,
                                  subset=args.subset)
    if suite == "magicbrush":
        from .suites.editing import build_magicbrush_requests

        return build_magicbrush_requests(args.data, args.out, limit=args.limit_items, subset=args.subset)
    if suite == "control":
        from .suites.control import AnnotatorDetector, build_requests

        if not args.cond:
            raise SystemExit("generate control: --cond canny|depth|hed|lineart|seg is required")
        detector = None
        if args.cond in ("hed", "lineart"):
            bb = _backbones(args)
            detector = AnnotatorDetector(bb.get(args.cond), args.cond)
        return build_requests(args.data, args.cond, args.out, split=args.split or "validation", limit=args.limit_items,
                              detector=detector, seg_dataset=args.seg_dataset, images_per_prompt=args.images_per_prompt,
                              subset=args.subset)
    if suite == "shapes5":
        from .suites.shapes5 import build_requests

        tasks = args.tasks.split(",") if args.tasks else None
        kw = {"tasks": tasks} if tasks else {}
        return build_requests(args.out, per_task=args.per_task, split=args.split or "eval",
                              resolution=args.resolution or 64, subset=args.subset, **kw)
    if suite == "gedit":
        from .suites.gedit import build_requests

        return build_requests(args.data, args.out, language=args.language, limit=args.limit_items, subset=args.subset)
    raise SystemExit(f"unknown suite {suite!r}; known: {sorted(SUITES)}")


def cmd_generate(args) -> int:
    from .harness import RunFolder, generate

    reqs = _requests(args)
    if args.plan_only:
        RunFolder(args.out).write_manifest(reqs, {"generator": {"class": "external (plan only)"}})
        print(f"wrote {RunFolder(args.out).manifest_path} ({len(reqs)} requests); put images in {RunFolder(args.out).images_dir}")
        return 0
    if not args.generator:
        raise SystemExit("generate: --generator SPEC is required (or --plan-only)")
    gen = load_generator(args.generator, parse_kv(args.generator_arg, "--generator-arg"))
    rep = generate(args.out, reqs, gen, batch_size=args.batch_size, rank=args.rank, world_size=args.world_size,
                   progress=not args.no_progress, overwrite=args.overwrite, limit=args.limit,
                   info={"suite": args.suite, "generator_spec": args.generator,
                         "generator_args": parse_kv(args.generator_arg, "--generator-arg")})
    print(json.dumps(rep.__dict__))
    return 0


# ------------------------------------------------------------------------------------------------------------ score


def cmd_score(args) -> int:
    from .harness import score

    protocol = SUITES.get(args.suite, args.suite)
    res = score(args.run_dir, _backbones(args), protocol=protocol, batch_size=args.batch_size, device=args.device,
                allow_missing=args.allow_missing, progress=not args.no_progress,
                options=parse_kv(args.option, "--option"), write=args.results is None)
    if args.results is not None:
        from .harness import write_json_atomic

        write_json_atomic(args.results, res)
    print(json.dumps({"protocol": res["protocol"], "image_count": res["image_count"], "metrics": res["metrics"],
                      **({"unavailable": res["unavailable"]} if res.get("unavailable") else {})}, indent=2))
    for metric, why in (res.get("unavailable") or {}).items():
        print(f"cologen bench score: {metric} not computed: {why}", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------------------------------ table


def cmd_table(args) -> int:
    from .tables import load_results, render

    pairs = []
    for item in args.results or []:
        label, path = item.split("=", 1) if "=" in item else ("ours", item)
        pairs.append((label, load_results(path)))
    text = render(args.table, pairs, fmt=args.format)
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


# ------------------------------------------------------------------------------------------------------------ parser


def _add_backbone_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backbone", action="append", metavar="KEY=PATH",
                   help="local weights of a backbone (clip_b32, clip_b16, dino_vits16, dpt_large, seg_ade20k, "
                        "seg_cocostuff, inception, hed, lineart, judge); repeatable")
    p.add_argument("--weights-dir", help="folder with backbone weights under their default names (ViT-B-32.pt, ...)")
    p.add_argument("--device", default="cpu", help="device of the backbones (metrics, hed / lineart annotators; default cpu)")


def add_bench_cli(subparsers) -> dict[str, argparse.ArgumentParser]:
    """Register ``generate``, ``score`` and ``table`` on ``subparsers`` (from ``parser.add_subparsers()``).

    Each sub-parser sets ``func`` (call ``args.func(args)``, returns an exit code). Returns the three parsers.
    """
    g = subparsers.add_parser("generate", help="generate a suite's images into a run folder (resumable, sharded)")
    g.add_argument("suite", choices=sorted(SUITES), help="evaluation suite (its requests follow the suite's protocol)")
    g.add_argument("--out", required=True, help="run folder")
    g.add_argument("--data", help="local dataset path (DreamBench folder, parquet files, ...)")
    g.add_argument("--generator", help="'copy-source' or 'package.module:factory' returning a Generator")
    g.add_argument("--generator-arg", action="append", metavar="KEY=VALUE", help="keyword argument of the factory")
    g.add_argument("--plan-only", action="store_true", help="write the manifest only (for external baselines)")
    g.add_argument("--batch-size", type=int, default=4, help="requests per generator call (default 4)")
    g.add_argument("--rank", type=int, default=None, help="shard index (default: torch.distributed / $RANK)")
    g.add_argument("--world-size", type=int, default=None, help="shard count (default: torch.distributed / $WORLD_SIZE)")
    g.add_argument("--limit", type=int, default=None, help="generate at most N images now (resume later)")
    g.add_argument("--limit-items", type=int, default=None, help="use only the first N dataset items (a subset)")
    g.add_argument("--subset", action="store_true",
                   help="the dataset on disk or the selection is intentionally smaller than the published split "
                        "(without it a different count is an error); the table marks the row 'subset'")
    g.add_argument("--overwrite", action="store_true",
                   help="regenerate every image; a run folder of other requests or another generator is replaced")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--subjects", help="dreambench: a count or comma-separated names")
    g.add_argument("--prompts-per-subject", type=int, help="dreambench: the first N prompts of each subject (a subset)")
    g.add_argument("--images-per-prompt", type=int, help="dreambench, control: images per prompt (default: the protocol's)")
    g.add_argument("--resolution", type=int, help="dreambench, shapes5: output side in pixels (default: the protocol's; shapes5 64)")
    g.add_argument("--split", help="dataset split (default: test for emu, validation for control, eval for shapes5)")
    g.add_argument("--cond", choices=["canny", "depth", "hed", "lineart", "seg"], help="control: the condition (required)")
    g.add_argument("--seg-dataset", choices=["ade20k", "cocostuff"], help="control --cond seg: the segmentation eval set")
    g.add_argument("--tasks", help="shapes5: comma-separated tasks")
    g.add_argument("--per-task", type=int, default=20, help="shapes5: held-out samples per task (default 20)")
    g.add_argument("--language", default="en", help="gedit: en | cn")
    _add_backbone_args(g)
    g.set_defaults(func=cmd_generate)

    s = subparsers.add_parser("score", help="score a run folder (ours or a baseline's) under its protocol")
    s.add_argument("suite", help=f"suite ({', '.join(sorted(SUITES))}) or protocol name (e.g. dreambench/omnigen-allrefs)")
    s.add_argument("run_dir", help="run folder written by `cologen bench generate` (or --plan-only + your images)")
    s.add_argument("--batch-size", type=int, default=16, help="images per backbone batch (default 16)")
    s.add_argument("--allow-missing", action="store_true", help="score the images present")
    s.add_argument("--option", action="append", metavar="KEY=VALUE", help="protocol option (e.g. skip_missing=true)")
    s.add_argument("--results", help="write the results here instead of RUN_DIR/results.json")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_backbone_args(s)
    s.set_defaults(func=cmd_score)

    t = subparsers.add_parser("table", help="render a paper table with our rows and deltas")
    t.add_argument("table", help="2 .. 8 (or table4, ...)")
    t.add_argument("--results", action="append", metavar="[LABEL=]PATH", help="results.json; same LABEL = one row")
    t.add_argument("--format", default="md", choices=["md", "latex"], help="markdown (default) or LaTeX")
    t.add_argument("--out", help="write the table to this file (default: stdout)")
    t.set_defaults(func=cmd_table)
    return {"generate": g, "score": s, "table": t}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cologen-bench", description=__doc__.split("\n")[0])
    add_bench_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
