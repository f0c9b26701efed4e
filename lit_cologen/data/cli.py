"""`cologen data ...`: Shapes-5 shards, shard indexes, and the builders for the paper's datasets.

    cologen data shapes5 --out data/shards/shapes5 --n-per-task 1000 --resolution 64
    cologen data build magicbrush --root RAW/MagicBrush --out data/shards/edit --opt max_side=512
    cologen data index data/shards/edit
    cologen data encode data/shards/edit --out data/encoded/edit-512 --preset flux-dev --pretrained FLUX --resolution 512
"""

from __future__ import annotations

import argparse
import json
import time

from lit_cologen.data.shards import ShardWriter, add_data_cli as _add_shard_commands, update_index


def _parse_option(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--opt expects KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _cmd_build(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from lit_cologen.data.builders import build

    options = dict(args.opt or [])
    started, written = time.time(), 0
    with ShardWriter(args.out, prefix=args.prefix or args.name, maxcount=args.maxcount) as writer:
        for sample in tqdm(build(args.name, args.root, **options), desc=f"build {args.name}", unit="sample"):
            writer.write(sample)
            written += 1
    shards = dict(writer.shards)  # complete only after the writer closed its last shard
    update_index(args.out, shards, {args.prefix or args.name: {"builder": args.name, "root": str(args.root), "options": options}})
    print(f"{written} samples in {len(shards)} shard(s) -> {args.out} ({time.time() - started:.1f} s)")
    return 0


def add_data_cli(sub) -> None:
    """Register `shapes5`, `index` (shards.py), `encode` (training/encode.py) and `build` (the dataset builders)."""
    _add_shard_commands(sub)
    from lit_cologen.training.encode import add_encode_cli

    add_encode_cli(sub)
    from lit_cologen.data.builders import BUILDERS

    p = sub.add_parser("build", help="convert a local copy of one of the paper's datasets into shards")
    p.add_argument("name", choices=sorted(BUILDERS), help="builder (see data/BUILDERS.md)")
    p.add_argument("--root", required=True, help="the dataset's local folder (or file)")
    p.add_argument("--out", required=True, help="output folder for the shards + index.json")
    p.add_argument("--prefix", default=None, help="shard file prefix (default: the builder name)")
    p.add_argument("--maxcount", type=int, default=1000, help="samples per shard at most")
    p.add_argument("--opt", action="append", type=_parse_option, metavar="KEY=VALUE",
                   help="builder option, e.g. max_side=512, on_error=skip, hed_detector=PATH (repeatable)")
    p.set_defaults(func=_cmd_build)
