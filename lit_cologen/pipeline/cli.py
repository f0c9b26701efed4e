"""`cologen sample`: run one CoLoGen task on one image from the command line.

    cologen sample --task edit --image in.png --instruction "make the circle green" --out out.png \\
        [--adapters runs/step4/final] [--base DIR] [--preset tiny] [--seed 0] [--steps 28] [--guidance G]
    cologen sample --task inpaint --image in.png --mask m.png --prompt "a red circle ..." --out out.png
    cologen sample --task control --image photo.png --cond-type canny --compute-canny --prompt "..." --out out.png
    cologen sample --pipeline saved_pipeline/ --task subject --image ref.png --prompt "..." --out out.png

Weights: ``--pipeline DIR`` (a folder written by ``CoLoGenPipeline.save_pretrained``) or ``--base DIR`` (a FLUX.1
folder, or a tiny / small base pre-training export with ``transformer/``; the preset is inferred from it unless
``--preset`` is given) plus ``--adapters`` (a training run's export: ``adapters.safetensors`` or its folder, or a
curriculum output folder: its last finished step's adapters and its base step, as ``bench generate``'s ``run=``).
Without either, the tiny preset's seeded random base is used (a smoke test; a note on stderr says so). Sampling far
above the preset's training resolution (the input's size by default) prints a note: pass ``--height/--width``.
With ``--num-images N`` > 1 the outputs are ``OUT_STEM_0.png`` ... ``OUT_STEM_{N-1}.png``; ``--save-source`` also
writes the source the model saw (masked image, computed canny) next to the output.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lit_cologen.utils.dtypes import DTYPE_NAMES, dtype_from_name
from lit_cologen.utils.hub import looks_like_hub_id


def add_weight_args(p: argparse.ArgumentParser) -> None:
    """The flags that say which model to load (read by :func:`build_pipeline`): --pipeline, --base, --adapters,
    --preset, --device, --dtype. Shared by ``cologen sample`` and ``cologen app``."""
    p.add_argument("--pipeline", default=None, help="a folder written by CoLoGenPipeline.save_pretrained")
    p.add_argument("--base", default=None, help="frozen weights folder (FLUX.1 layout, or a base export with transformer/)")
    p.add_argument("--adapters", default=None, help="adapters.safetensors or a training run's export folder")
    p.add_argument("--preset", default=None, help="tiny | small | flux-dev | flux-schnell (default: from --base, else tiny)")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    p.add_argument("--dtype", default=None, choices=sorted(DTYPE_NAMES),
                   help="transformer dtype (default: fp32 tiny/small, bf16 FLUX)")


def add_sample_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``sample`` sub-command on ``subparsers``; returns its parser."""
    p = subparsers.add_parser(
        "sample", help="run one task (inpaint, ground, control, subject, edit) on an image",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--task", required=True, help="inpaint | ground | control | subject (customize) | edit")
    p.add_argument("--image", required=True, help="source image: image / condition map / photo / subject reference")
    p.add_argument("--instruction", default=None, help="instruction (ground, edit)")
    p.add_argument("--prompt", default=None, help="caption (inpaint, control, subject); same as --instruction")
    p.add_argument("--out", required=True, help="output PNG path")
    p.add_argument("--mask", default=None, help="inpaint mask (white = regenerate), same size as --image")
    p.add_argument("--cond-type", default=None, help="control condition: canny | depth | hed | lineart | seg")
    p.add_argument("--compute-canny", action="store_true", help="control/canny: --image is a photo, compute its edges")
    p.add_argument("--keep-unmasked", action="store_true", help="inpaint: paste the unmasked input pixels back")
    add_weight_args(p)
    p.add_argument("--seed", type=int, default=0, help="random seed of the initial noise (default 0)")
    p.add_argument("--steps", type=int, default=28, help="Euler steps (default 28)")
    p.add_argument("--guidance", type=float, default=None,
                   help="embedded guidance (flux-dev, tiny; default: the preset's, 3.5 for flux-dev, 1.0 for tiny)")
    p.add_argument("--true-cfg", type=float, default=1.0, help="true CFG scale (> 1 runs a negative pass)")
    p.add_argument("--negative-prompt", default=None, help="negative prompt for --true-cfg (default empty)")
    p.add_argument("--height", type=int, default=None,
                   help="output height in pixels, a multiple of the token size (default: --image's, rounded)")
    p.add_argument("--width", type=int, default=None,
                   help="output width in pixels, a multiple of the token size (default: --image's, rounded)")
    p.add_argument("--num-images", type=int, default=1, help="images to generate (N > 1: OUT_STEM_0.png ...; default 1)")
    p.add_argument("--no-cache", action="store_true", help="recompute the source tokens at every step")
    p.add_argument("--save-source", action="store_true", help="also write the source the model saw (OUT_STEM_source.png)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_sample)
    return p


def _output_paths(out: Path, n: int) -> list[Path]:
    if n == 1:
        return [out]
    return [out.with_name(f"{out.stem}_{i}{out.suffix or '.png'}") for i in range(n)]


def build_pipeline(args: argparse.Namespace):
    """The pipeline the arguments name (see the module docstring)."""
    import torch

    from lit_cologen.pipeline import CoLoGenPipeline, infer_preset

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype_from_name(args.dtype) if args.dtype else None
    if args.pipeline:
        if args.base or args.preset:
            raise ValueError("--pipeline already names the weights and preset; do not combine it with --base/--preset")
        return CoLoGenPipeline.from_pretrained(args.pipeline, adapters=args.adapters, torch_dtype=dtype, device=device)
    if args.adapters and Path(args.adapters).is_dir() and not (Path(args.adapters) / "adapters.safetensors").is_file():
        # a curriculum output folder (or a step's final/ of a base export): its last step's adapters and its base
        from lit_cologen.training.run_folder import resolve_run

        run_base, args.adapters = resolve_run(args.adapters)
        args.base = args.base or run_base
    if not (args.pipeline or args.base or args.adapters):
        print("cologen sample: note: no --base / --adapters / --pipeline given: sampling the tiny preset's seeded "
              "random-init model (a smoke test, not a trained model)", file=sys.stderr)
    if args.base and not Path(args.base).exists() and not looks_like_hub_id(args.base):
        raise FileNotFoundError(f"--base: weights folder {args.base} does not exist")
    if args.base and not args.preset and (Path(args.base) / "model_index.json").is_file():
        # a saved CoLoGen pipeline or a stock FLUX.1 folder: its index names what it is
        return CoLoGenPipeline.from_pretrained(args.base, adapters=args.adapters, torch_dtype=dtype, device=device)
    preset = args.preset or (infer_preset(args.base) if args.base and Path(args.base).is_dir() else "tiny")
    return CoLoGenPipeline.from_preset(preset, args.base, args.adapters, torch_dtype=dtype, device=device)


def _warn_if_far_above_training_size(args: argparse.Namespace, pipe) -> None:
    """A note on stderr when the output (``--height/--width``, else the input's size) has more than 4x the pixels of
    the preset's training resolution: sampling cost grows with the token count squared, and a model trained at 32 px
    does not know what to do with 1000 px."""
    from PIL import Image

    from lit_cologen.models.presets import get_preset

    with Image.open(args.image) as im:
        w, h = im.size
    w, h = args.width or w, args.height or h
    res = get_preset(pipe.preset).resolution
    if w * h > 4 * res * res:
        print(f"cologen sample: note: sampling at {w}x{h}, {w * h / (res * res):.0f}x the pixels of the "
              f"{pipe.preset} preset's training resolution {res}x{res}; pass --height/--width (e.g. {res}) to "
              "sample at the size it was trained for", file=sys.stderr)


def run_sample(args: argparse.Namespace) -> int:
    """Entry point of ``cologen sample``; returns the exit status (2 for bad input, with the reason on stderr)."""
    if args.instruction is not None and args.prompt is not None and args.instruction != args.prompt:
        print("cologen sample: error: pass --instruction or --prompt, not both", file=sys.stderr)
        return 2
    text = args.instruction if args.instruction is not None else args.prompt
    try:
        from lit_cologen.pipeline import CoLoGenPipeline

        task = CoLoGenPipeline.check_task(args.task)
        if text is None:
            if task in ("ground", "edit"):
                raise ValueError(f"task {task!r} needs --instruction")
            text = ""
        if args.num_images < 1:
            raise ValueError(f"--num-images must be >= 1, got {args.num_images}")
        if args.mask is not None and not Path(args.mask).is_file():
            raise FileNotFoundError(f"--mask: file {args.mask} does not exist")
        if not Path(args.image).is_file():
            raise FileNotFoundError(f"--image: file {args.image} does not exist")
        pipe = build_pipeline(args)
        _warn_if_far_above_training_size(args, pipe)
        out = pipe(
            task, args.image, text, mask=args.mask, cond_type=args.cond_type, compute_canny=args.compute_canny,
            keep_unmasked=args.keep_unmasked, height=args.height, width=args.width, num_inference_steps=args.steps,
            guidance_scale=args.guidance, true_cfg_scale=args.true_cfg, negative_prompt=args.negative_prompt,
            num_images_per_prompt=args.num_images, seed=args.seed, use_source_cache=not args.no_cache,
            show_progress=not args.no_progress, output_type="pil",
        )
    except (ValueError, TypeError, FileNotFoundError, KeyError) as err:  # includes UserError subclasses
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"cologen sample: error: {msg}", file=sys.stderr)
        return 2
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    for path, image in zip(_output_paths(out_path, len(out.images)), out.images):
        image.save(path)
        print(f"wrote {path}")
    if args.save_source:
        from lit_cologen.pipeline.images import tensor_to_pil

        src_path = out_path.with_name(f"{out_path.stem}_source.png")
        tensor_to_pil(out.sources[0]).save(src_path)
        print(f"wrote {src_path}")
    print(f"model text: {out.prompts[0]!r}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m lit_cologen.pipeline.cli ...`` (same arguments as ``cologen sample``)."""
    parser = argparse.ArgumentParser(prog="cologen")
    sub = parser.add_subparsers(dest="command", required=True)
    add_sample_cli(sub)
    args = parser.parse_args(["sample", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
