"""`cologen app`: the interactive Gradio app, one tab per task, on this machine's browser.

    cologen app --preset tiny --base runs/base/final --adapters runs/step4/final
    cologen app --pipeline saved_pipeline/                # a folder written by CoLoGenPipeline.save_pretrained
    cologen app --port 7861 --host 0.0.0.0               # open to the network (default: 127.0.0.1 only)

Weights are found as in ``cologen sample`` (the same loader: ``--pipeline DIR``, or ``--base DIR`` with
``--preset`` inferred from it unless given, plus ``--adapters``; without any, the tiny preset's seeded random
model, a smoke test). The page has a tab per task: Inpaint (upload, paint the region to regenerate), Ground,
Control (condition type; for canny the edges computed from the photo are shown), Subject and Edit, each with seed,
steps, guidance and output size; a progress bar follows the denoising steps, and a table shows which PRW expert
each block chose for the image. It listens on 127.0.0.1 and opens no public link (``--share`` asks for one).
Uploads over ``--max-upload-mb`` or ``--max-image-pixels`` are refused with a message.
"""

from __future__ import annotations

import argparse

from lit_cologen.app import defaults
from lit_cologen.errors import UserError
from lit_cologen.pipeline.cli import add_weight_args


def add_app_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``app`` sub-command on ``subparsers``; returns its parser."""
    p = subparsers.add_parser(
        "app", help="interactive Gradio app: one tab per task, routing per block (localhost only by default)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_weight_args(p)
    p.add_argument("--host", default=defaults.HOST,
                   help=f"address to listen on (default {defaults.HOST}: this machine only)")
    p.add_argument("--port", type=int, default=None, help="port (default: the first free one from 7860)")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")
    p.add_argument("--max-upload-mb", type=float, default=defaults.MAX_UPLOAD_MB,
                   help=f"refuse uploaded files over this size in MB (default {defaults.MAX_UPLOAD_MB})")
    p.add_argument("--max-image-pixels", type=int, default=defaults.MAX_IMAGE_PIXELS,
                   help=f"refuse uploaded images with more pixels, width x height (default {defaults.MAX_IMAGE_PIXELS})")
    p.set_defaults(func=run_app)
    return p


def build_app(args: argparse.Namespace):
    """The ``gr.Blocks`` page for the weights ``args`` name, and the runner behind it: ``(demo, runner)`` (the
    upload limits are ``runner.limits``).

    Raises:
        UserError: weights that cannot be found or loaded, bad limits (one line, from the loader's message).
    """
    from lit_cologen.app.runner import TaskRunner
    from lit_cologen.app.ui import build_ui
    from lit_cologen.app.uploads import UploadLimits
    from lit_cologen.pipeline.cli import build_pipeline

    if args.max_upload_mb <= 0 or args.max_image_pixels <= 0:
        raise UserError(f"--max-upload-mb and --max-image-pixels must be > 0, got {args.max_upload_mb} and "
                        f"{args.max_image_pixels}")
    limits = UploadLimits(max_bytes=int(args.max_upload_mb * 1024 * 1024), max_pixels=int(args.max_image_pixels))
    try:
        pipe = build_pipeline(args)
    except (ValueError, TypeError, FileNotFoundError, KeyError) as err:  # includes UserError subclasses
        raise UserError(f"app: {err.args[0] if isinstance(err, KeyError) and err.args else err}") from err
    pipe.set_progress_bar_config(disable=True)
    runner = TaskRunner(pipe, limits)
    return build_ui(runner), runner


def run_app(args: argparse.Namespace) -> int:
    """Entry point of ``cologen app``: load the weights, build the page, serve it until interrupted."""
    from lit_cologen.app.server import launch_app

    demo, runner = build_app(args)
    launch_app(demo, host=args.host, port=args.port, share=args.share, max_file_size=runner.limits.max_bytes)
    return 0
