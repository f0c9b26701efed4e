"""``cologen dev random-weights``: random-init weights in the published layouts, to dry-run the whole workflow.

    cologen dev random-weights --preset flux-dev-layout --out weights/FLUX.1-random
    cologen dev random-weights --backbones weights/backbones-random

``--preset flux-dev-layout`` writes a FLUX.1-dev-layout folder of tiny random components (stock diffusers /
transformers classes; ``lit_cologen.models.random_weights``): pass it where the real FLUX.1 folder goes
(``model.pretrained_path``, ``cologen data encode --pretrained``, ``cologen sample --base``). ``--backbones`` writes
the scoring backbones under their default names (``--weights-dir``): ``ViT-B-32.pt``, ``ViT-B-16.pt``,
``ViT-L-14.pt`` (tiny CLIP), ``dino-vits16/``, ``dpt-large/``, ``seg-ade20k/`` (150 classes), ``seg-cocostuff/``
(171 classes). The FID Inception, HED, line-art and judge backbones have no random stand-in here: their scores are
skipped (``--option skip_missing=true``). Everything written carries a random-init marker, so results scored with it
are marked "not comparable" in ``cologen bench table``. Nothing is downloaded; the numbers mean nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

#: ``--preset`` choices: the folder layouts this command can write
LAYOUTS = ("flux-dev-layout",)


def _cmd_random_weights(args: argparse.Namespace) -> int:
    if not args.out and not args.backbones:
        raise SystemExit("cologen dev random-weights: give --out (with --preset) and/or --backbones")
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()  # one "Writing model shards" bar per tiny component otherwise
    transformers_logging.disable_progress_bar()
    if args.out:
        from lit_cologen.models.random_weights import save_random_flux_folder

        out = Path(args.out)
        if out.exists() and any(out.iterdir()):
            raise SystemExit(f"cologen dev random-weights: {out} exists and is not empty; choose a new folder")
        save_random_flux_folder(out, seed=args.seed)
        print(f"wrote a random-init FLUX.1-dev-layout folder: {out} (pass it as the FLUX.1 weights folder)")
    if args.backbones:
        from benchmarks.metrics.backbones import BACKBONES
        from benchmarks.metrics.random_init import (
            save_random_clip,
            save_random_dino,
            save_random_dpt,
            save_random_segformer,
        )

        root = Path(args.backbones)
        root.mkdir(parents=True, exist_ok=True)
        for key, preset in (("clip_b32", "tiny"), ("clip_b16", "tiny"), ("clip_l14", "tiny")):
            save_random_clip(root / BACKBONES[key].default_name, preset, seed=args.seed)
        save_random_dino(root / BACKBONES["dino_vits16"].default_name, "tiny", seed=args.seed)
        save_random_dpt(root / BACKBONES["dpt_large"].default_name, seed=args.seed)
        save_random_segformer(root / BACKBONES["seg_ade20k"].default_name, num_labels=150, seed=args.seed)
        save_random_segformer(root / BACKBONES["seg_cocostuff"].default_name, num_labels=171, seed=args.seed)
        print(f"wrote random-init scoring backbones: {root} (pass it as --weights-dir)")
    return 0


def add_dev_cli(sub) -> None:
    """Register ``random-weights`` on the ``cologen dev`` group."""
    p = sub.add_parser("random-weights", help="write random-init FLUX.1-layout weights / scoring backbones (dry runs)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="flux-dev-layout", choices=LAYOUTS,
                   help="the folder layout to write with --out (default flux-dev-layout)")
    p.add_argument("--out", default=None, help="new folder for the random-init FLUX.1-layout weights")
    p.add_argument("--backbones", default=None, help="folder for the random-init scoring backbones (a --weights-dir)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the weights (default 0)")
    p.set_defaults(func=_cmd_random_weights)
