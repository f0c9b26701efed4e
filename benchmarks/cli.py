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
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from .api import REQUEST_KEYWORDS, SUITES, build_requests, load_backbones, load_generator, score_run, write_plan

__all__ = ["add_bench_cli", "main", "SUITES", "load_generator", "parse_kv", "generate_keywords", "score_keywords"]


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


def _backbone_keywords(ns: dict[str, Any]) -> dict[str, Any]:
    """The backbone options given in ``ns`` (parsed arguments) as :func:`benchmarks.api.load_backbones` keywords."""
    out = {k: ns[k] for k in ("weights_dir", "device") if k in ns}
    if "backbone" in ns:
        out["backbone_paths"] = parse_kv(ns["backbone"], "--backbone")
    return out


def _request_keywords(ns: dict[str, Any]) -> dict[str, Any]:
    """The request options given in ``ns`` (parsed ``generate`` arguments) as :func:`benchmarks.api.build_requests`
    keywords; the others (--generator, --batch-size, --limit, ...) are left out."""
    out = {k: ns[k] for k in REQUEST_KEYWORDS if k in ns and k not in ("backbone_paths", "weights_dir", "device")}
    return {**out, **_backbone_keywords(ns)}


def _score_keywords(ns: dict[str, Any]) -> dict[str, Any]:
    """The scoring options given in ``ns`` (parsed ``score`` arguments) as :func:`benchmarks.api.score_run` keywords."""
    out = {k: ns[k] for k in ("batch_size", "allow_missing") if k in ns}
    if "option" in ns:
        out["options"] = parse_kv(ns["option"], "--option")
    return {**out, **_backbone_keywords(ns)}


def _requests(args) -> list:
    """The suite's requests for parsed ``generate`` arguments (:func:`benchmarks.api.build_requests`)."""
    return build_requests(args.suite, args.out, **_request_keywords(vars(args)))


def _backbones(args):
    return load_backbones(**_backbone_keywords(vars(args)))


# ------------------------------------------------------------------------------------------------------------ generate


def cmd_generate(args) -> int:
    from .api import generate

    reqs = _requests(args)
    if args.plan_only:
        run = write_plan(args.out, reqs)
        print(f"wrote {run.manifest_path} ({len(reqs)} requests); put images in {run.images_dir}")
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
    res = score_run(args.run_dir, args.suite, progress=not args.no_progress, write=args.results is None,
                    **_score_keywords(vars(args)))
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


def _adder(p: argparse.ArgumentParser, defaults: bool):
    """``p.add_argument``; without ``defaults`` an option left out is absent from the parsed namespace."""
    def add(*flags, **kwargs):
        if not defaults:
            kwargs["default"] = argparse.SUPPRESS
        return p.add_argument(*flags, **kwargs)
    return add


def _add_backbone_args(p: argparse.ArgumentParser, defaults: bool = True) -> None:
    add = _adder(p, defaults)
    add("--backbone", action="append", metavar="KEY=PATH",
        help="local weights of a backbone (clip_b32, clip_b16, dino_vits16, dpt_large, seg_ade20k, "
             "seg_cocostuff, inception, hed, lineart, judge); repeatable")
    add("--weights-dir", help="folder with backbone weights under their default names (ViT-B-32.pt, ...)")
    add("--device", default="cpu", help="device of the backbones (metrics, hed / lineart annotators; default cpu)")


def _add_generate_options(g: argparse.ArgumentParser, defaults: bool = True) -> None:
    """The options of ``generate`` (everything after SUITE and --out)."""
    add = _adder(g, defaults)
    add("--data", help="local dataset path (DreamBench folder, parquet files, ...)")
    add("--generator", help="'copy-source' or 'package.module:factory' returning a Generator")
    add("--generator-arg", action="append", metavar="KEY=VALUE", help="keyword argument of the factory")
    add("--plan-only", action="store_true", help="write the manifest only (for external baselines)")
    add("--batch-size", type=int, default=4, help="requests per generator call (default 4)")
    add("--rank", type=int, default=None, help="shard index (default: torch.distributed / $RANK)")
    add("--world-size", type=int, default=None, help="shard count (default: torch.distributed / $WORLD_SIZE)")
    add("--limit", type=int, default=None, help="generate at most N images now (resume later)")
    add("--limit-items", type=int, default=None, help="use only the first N dataset items (a subset)")
    add("--subset", action="store_true",
        help="the dataset on disk or the selection is intentionally smaller than the published split "
             "(without it a different count is an error); the table marks the row 'subset'")
    add("--overwrite", action="store_true",
        help="regenerate every image; a run folder of other requests or another generator is replaced")
    add("--no-progress", action="store_true", help="no progress bar")
    add("--subjects", help="dreambench: a count or comma-separated names")
    add("--prompts-per-subject", type=int, help="dreambench: the first N prompts of each subject (a subset)")
    add("--images-per-prompt", type=int, help="dreambench, control: images per prompt (default: the protocol's)")
    add("--resolution", type=int, help="dreambench, shapes5: output side in pixels (default: the protocol's; shapes5 64)")
    add("--split", help="dataset split (default: test for emu, validation for control, eval for shapes5)")
    add("--cond", choices=["canny", "depth", "hed", "lineart", "seg"], help="control: the condition (required)")
    add("--seg-dataset", choices=["ade20k", "cocostuff"], help="control --cond seg: the segmentation eval set")
    add("--tasks", help="shapes5: comma-separated tasks")
    add("--per-task", type=int, default=20, help="shapes5: held-out samples per task (default 20)")
    add("--language", default="en", help="gedit: en | cn")
    _add_backbone_args(g, defaults)


def _add_score_options(s: argparse.ArgumentParser, defaults: bool = True) -> None:
    """The options of ``score`` (everything after SUITE and RUN_DIR)."""
    add = _adder(s, defaults)
    add("--batch-size", type=int, default=16, help="images per backbone batch (default 16)")
    add("--allow-missing", action="store_true", help="score the images present")
    add("--option", action="append", metavar="KEY=VALUE", help="protocol option (e.g. skip_missing=true)")
    add("--results", help="write the results here instead of RUN_DIR/results.json")
    add("--no-progress", action="store_true", help="no progress bar")
    _add_backbone_args(s, defaults)


def _given_options(add_options, argv: Sequence[str], command: str) -> dict[str, Any]:
    """The options ``argv`` gives (defaults left out), parsed with the command's own argument definitions."""
    p = argparse.ArgumentParser(prog=f"cologen bench {command}", add_help=False)
    add_options(p, defaults=False)
    return vars(p.parse_args([str(a) for a in argv]))


def generate_keywords(argv: Sequence[str]) -> dict[str, Any]:
    """``cologen bench generate`` options (e.g. ``["--data", "PATH", "--split", "val"]``) -> the keyword arguments of
    :func:`benchmarks.api.build_requests` they set (only the options given; the ones that do not choose requests,
    such as --generator or --batch-size, are accepted and left out)."""
    return _request_keywords(_given_options(_add_generate_options, argv, "generate"))


def score_keywords(argv: Sequence[str]) -> dict[str, Any]:
    """``cologen bench score`` options (e.g. ``["--weights-dir", "W", "--option", "k=v"]``) -> the keyword arguments
    of :func:`benchmarks.api.score_run` they set (only the options given; --results / --no-progress left out)."""
    return _score_keywords(_given_options(_add_score_options, argv, "score"))


def add_bench_cli(subparsers) -> dict[str, argparse.ArgumentParser]:
    """Register ``generate``, ``score`` and ``table`` on ``subparsers`` (from ``parser.add_subparsers()``).

    Each sub-parser sets ``func`` (call ``args.func(args)``, returns an exit code). Returns the three parsers.
    """
    g = subparsers.add_parser("generate", help="generate a suite's images into a run folder (resumable, sharded)")
    g.add_argument("suite", choices=sorted(SUITES), help="evaluation suite (its requests follow the suite's protocol)")
    g.add_argument("--out", required=True, help="run folder")
    _add_generate_options(g)
    g.set_defaults(func=cmd_generate)

    s = subparsers.add_parser("score", help="score a run folder (ours or a baseline's) under its protocol")
    s.add_argument("suite", help=f"suite ({', '.join(sorted(SUITES))}) or protocol name (e.g. dreambench/omnigen-allrefs)")
    s.add_argument("run_dir", help="run folder written by `cologen bench generate` (or --plan-only + your images)")
    _add_score_options(s)
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
