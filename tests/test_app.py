"""`cologen app` (issue: interactive Gradio app): every task through ``gradio_client`` against the real server.

The app runs in-process on 127.0.0.1 (a free port) over a tiny random-init base saved to a folder and a 2-expert
adapter export with random routers, built as ``cologen app --preset tiny --base B --adapters A`` would build it.
Truth per task: an image of the size the runner computes comes back, with a routing table naming every PRW block
(the base's module names) and an expert index in range. Refusals: uploads over the byte or pixel limit, an empty
mask, a missing instruction, weights that do not exist; defaults: 127.0.0.1, no share link.
"""

from __future__ import annotations

import inspect
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image
from tiny_run import write_two_expert_adapters

from lit_cologen.app.cli import build_app
from lit_cologen.app.server import launch_app
from lit_cologen.app.uploads import UploadLimits, mask_from_layers, open_upload
from lit_cologen.cli import build_parser, main
from lit_cologen.errors import UserError
from lit_cologen.models.factory import build_base_transformer
from lit_cologen.pipeline.routing import block_names

REPO = Path(__file__).resolve().parents[1]
SIZE = (48, 32)  # (W, H) of the test images: not square, so the output size keeps the aspect
LONG_SIDE = 32  # the tiny preset's resolution
MAX_PIXELS = 64 * 64  # the test app's pixel limit (an 80 x 80 upload is refused)
MAX_MB = 0.05  # the test app's file limit, ~51 KB (a 200 x 200 noise PNG, ~120 KB, is refused)
STEPS = 3

# Gradio 6.31's queue statistics use pandas options that pandas 3 deprecates (its code, not ours)
pytestmark = [pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")]


def write_weights(root: Path) -> tuple[Path, Path]:
    """A tiny base export (``transformer/``, seed 1) and an adapter export with 2 experts, random routers and
    non-zero experts under ``root``; returns ``(base, adapters)``."""
    base = root / "base"
    build_base_transformer("tiny", seed=1).save_pretrained(base / "transformer")
    adapters = write_two_expert_adapters(root / "adapters")
    return base, adapters


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(base: Path, adapters: Path, *extra: str):
    """``cologen app --preset tiny --base B --adapters A --device cpu EXTRA`` built from the real parser and
    launched without blocking on a free port; returns ``(demo, local_url, runner)`` (stop with ``demo.close()``)."""
    args = build_parser().parse_args(["app", "--preset", "tiny", "--base", str(base), "--adapters", str(adapters),
                                      "--device", "cpu", *extra])
    demo, runner = build_app(args)
    _app, url, _share = launch_app(demo, host=args.host, port=free_port(), share=args.share,
                                   max_file_size=runner.limits.max_bytes, block=False, quiet=True)
    return demo, url, runner


def noise_png(path: Path, size: tuple[int, int] = SIZE, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("app")
    base, adapters = write_weights(root)
    demo, url, runner = start_app(base, adapters, "--max-image-pixels", str(MAX_PIXELS), "--max-upload-mb",
                                  str(MAX_MB))
    yield demo, url, root, runner
    demo.close()


@pytest.fixture(scope="module")
def client(served):
    return Client(served[1], verbose=False)


@pytest.fixture(scope="module")
def runner(served):
    return served[3]


@pytest.fixture(scope="module")
def image(served):
    return noise_png(served[2] / "image.png")


def _inputs(task: str, image: Path, root: Path) -> list:
    """The task's API inputs before the shared settings."""
    if task == "inpaint":
        layer = np.zeros((SIZE[1], SIZE[0], 4), dtype=np.uint8)
        layer[8:20, 10:30] = (255, 0, 255, 255)  # a painted rectangle: the region to regenerate
        Image.fromarray(layer, mode="RGBA").save(root / "layer.png")
        editor = {"background": handle_file(str(image)), "layers": [handle_file(str(root / "layer.png"))],
                  "composite": None}
        return [editor, "a red circle at the center", False]
    if task == "control":
        return [handle_file(str(image)), "canny", True, "a red circle"]
    text = {"ground": "draw a yellow box around the blue star", "subject": "the subject at the bottom right",
            "edit": "make the circle green"}[task]
    return [handle_file(str(image)), text]


@pytest.mark.parametrize("task", ["inpaint", "ground", "control", "subject", "edit"])
def test_every_task_returns_an_image_and_its_routing(task, client, served, runner, image):
    out_path, table, model_text = client.predict(*_inputs(task, image, served[2]), 0, STEPS, 3.5, LONG_SIDE,
                                                 api_name=f"/{task}")
    height, width = runner.output_size(SIZE, LONG_SIDE)
    assert (height, width) == (20, 32)  # long side 32, aspect 3:2, multiples of 4 px
    with Image.open(out_path) as out:
        assert out.size == (width, height) and out.mode == "RGB"
    assert table["headers"] == ["block", "expert", "weight"]
    names = block_names(runner.pipe.transformer)
    assert names == ["transformer_blocks.0", "transformer_blocks.1", "single_transformer_blocks.0",
                     "single_transformer_blocks.1"]
    assert [row[0] for row in table["data"]] == names
    for _name, expert, weight in table["data"]:
        assert expert in range(runner.num_experts) and 0 < weight <= 1
    assert model_text  # the templated text the model saw
    assert not runner.pipe.transformer._forward_hooks  # the routing hook is removed after the call


def test_routing_is_the_models_choice_for_the_image(client, runner, image, tmp_path):
    """Sample routing pools the source tokens: a new seed keeps the table, another source can change it; the rows
    are those of a direct pipeline call."""
    from lit_cologen.pipeline.routing import RoutingCapture, routing_rows

    first = client.predict(handle_file(str(image)), "make the circle green", 0, STEPS, 3.5, LONG_SIDE,
                           api_name="/edit")[1]["data"]
    reseeded = client.predict(handle_file(str(image)), "make the circle green", 7, STEPS, 3.5, LONG_SIDE,
                              api_name="/edit")[1]["data"]
    assert first == reseeded
    height, width = runner.output_size(SIZE, LONG_SIDE)
    with RoutingCapture(runner.pipe.transformer) as capture:
        runner.pipe("edit", Image.open(image).convert("RGB"), "make the circle green", height=height, width=width,
                    num_inference_steps=1, seed=0, guidance_scale=3.5, show_progress=False)
    assert routing_rows(capture.decisions, runner.block_names) == first


def test_canny_preview_is_the_edge_map_the_model_sees(client, runner, image):
    path = client.predict(handle_file(str(image)), "canny", True, LONG_SIDE, api_name="/canny_preview")
    with Image.open(path) as im:
        preview = np.asarray(im.convert("RGB"))
    expected = np.asarray(runner.canny_preview(Image.open(image), LONG_SIDE))
    assert preview.shape == (20, 32, 3)
    assert set(np.unique(preview)) <= {0, 255}
    np.testing.assert_array_equal(preview, expected)
    assert client.predict(handle_file(str(image)), "depth", True, LONG_SIDE, api_name="/canny_preview") is None


def test_an_image_over_the_pixel_limit_is_refused_with_the_reason(client, served):
    big = noise_png(served[2] / "big.png", (80, 80))
    with pytest.raises(Exception, match=r"80x80 = 6400 pixels, over the app's limit of 4096"):
        client.predict(handle_file(str(big)), "make the circle green", api_name="/edit")


def test_a_file_over_the_byte_limit_is_refused_by_the_server(client, served):
    huge = noise_png(served[2] / "huge.png", (200, 200))
    assert huge.stat().st_size > MAX_MB * 1024 * 1024
    with pytest.raises(ValueError, match="exceeds the maximum file size"):  # the client reads the server's limit
        client.predict(handle_file(str(huge)), "make the circle green", api_name="/edit")
    res = httpx.post(f"{served[1]}gradio_api/upload", files={"files": ("huge.png", huge.read_bytes(), "image/png")})
    assert res.status_code == 413 and "maximum allowed size" in res.text


@pytest.mark.parametrize("task, inputs, match", [
    ("edit", lambda img: [handle_file(str(img)), "  "], "edit: type an instruction first"),
    ("ground", lambda img: [None, "draw a box"], "ground image: upload an image first"),
    ("inpaint", lambda img: [{"background": handle_file(str(img)), "layers": [], "composite": None}, "x", False],
     r"inpaint: draw the region to regenerate"),
])
def test_bad_input_gives_a_one_line_error(client, image, task, inputs, match):
    with pytest.raises(Exception, match=match) as info:
        client.predict(*inputs(image), api_name=f"/{task}")
    assert "\n" not in str(info.value)


def test_uploads_are_read_as_images_only(tmp_path):
    limits = UploadLimits(max_bytes=1000, max_pixels=100)
    fake = tmp_path / "weights.png"
    fake.write_bytes(b"\x80\x04\x95 pickle, not an image")
    with pytest.raises(UserError, match="not a readable image"):
        open_upload(fake, limits)
    with pytest.raises(UserError, match=r"the file is \d+ KB, over the app's limit of 1 KB"):
        open_upload(noise_png(tmp_path / "n.png", (40, 40)), limits)
    with pytest.raises(UserError, match="upload an image first"):
        open_upload(None, limits)
    ok = open_upload(noise_png(tmp_path / "ok.png", (10, 10)), UploadLimits(max_pixels=100))
    assert ok.size == (10, 10)


def test_the_drawn_layers_become_the_binary_mask():
    a = np.zeros((4, 6, 4), dtype=np.uint8)
    a[1, 2] = (255, 0, 255, 40)  # faint paint still counts
    b = np.zeros((8, 12, 4), dtype=np.uint8)  # another size: resized (nearest) to the image
    b[6:, 10:] = (0, 0, 0, 255)
    mask = np.asarray(mask_from_layers([Image.fromarray(a, "RGBA"), Image.fromarray(b, "RGBA")], (6, 4)))
    expected = np.zeros((4, 6), dtype=np.uint8)
    expected[1, 2] = expected[3, 5] = 255
    np.testing.assert_array_equal(mask, expected)
    with pytest.raises(UserError, match="the mask is empty"):
        mask_from_layers([Image.new("RGBA", (6, 4))], (6, 4))


def test_defaults_listen_on_localhost_without_a_share_link(served):
    demo, url = served[:2]
    assert url.startswith("http://127.0.0.1:")
    assert demo.server_name == "127.0.0.1" and demo.share is False and demo.share_url is None
    args = build_parser().parse_args(["app"])
    assert args.host == "127.0.0.1" and args.share is False
    params = inspect.signature(launch_app).parameters
    assert params["host"].default == "127.0.0.1" and params["share"].default is False


def test_missing_weights_are_one_line_errors(tmp_path, capsys):
    assert main(["app", "--preset", "tiny", "--base", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cologen: error: app: ") and "does not exist" in err and "\n" not in err


def test_app_help():
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-m", "lit_cologen.cli", "app", "--help"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    for flag in ("--preset", "--base", "--adapters", "--host", "--port", "--share", "--max-upload-mb"):
        assert flag in res.stdout
    assert "127.0.0.1" in res.stdout


def test_progress_follows_the_denoising_steps(client, runner, image):
    """The page's progress bar: the client sees gr.Progress updates (step, total) fed by the pipeline's step callback
    (Gradio sends them at its own pace, so not necessarily every step); the runner reports every step."""
    import asyncio

    job = client.submit(handle_file(str(image)), "make the circle green", 0, 4, 3.5, LONG_SIDE, api_name="/edit")

    async def progress() -> list[tuple]:
        seen = []
        async for update in job:
            seen += [(u.desc, u.index, u.length) for u in getattr(update, "progress_data", None) or []]
        return seen

    seen = asyncio.run(progress())
    job.result(timeout=120)
    steps = [(index, length) for desc, index, length in seen if desc == "denoising"]
    assert steps and all(length == 4 and 1 <= index <= 4 for index, length in steps), seen
    assert [index for index, _ in steps] == sorted(index for index, _ in steps)
    calls = []
    runner.run("edit", Image.open(image), "make the circle green", steps=3, long_side=LONG_SIDE,
               progress=lambda step, total: calls.append((step, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
