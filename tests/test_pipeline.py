"""CoLoGenPipeline (issue: inference pipeline + source K/V cache): CPU, tiny preset, random weights, a few steps."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_run import write_two_expert_adapters

from lit_cologen.models.config import PRWConfig
from lit_cologen.models.transformer import CoLoGenTransformer
from lit_cologen.pipeline import INPAINT_FILL, CoLoGenPipeline, CoLoGenPipelineOutput, infer_preset, to_image_tensor
from lit_cologen.pipeline.cli import add_sample_cli

RES = 32  # the tiny preset's resolution: 8 x 8 tokens
STEPS = 3


def _image(seed: int = 0, size: tuple[int, int] = (RES, RES), mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(arr, mode="RGB").convert(mode)


def _mask(size: tuple[int, int] = (RES, RES)) -> Image.Image:
    m = np.zeros((size[1], size[0]), dtype=np.uint8)
    m[size[1] // 4: size[1] // 2, size[0] // 4: 3 * size[0] // 4] = 255
    return Image.fromarray(m, mode="L")


@pytest.fixture(scope="module")
def adapters_dir(tmp_path_factory):
    """A training-run-like export: 2 experts (rank 4) with non-zero weights and routers."""
    return write_two_expert_adapters(tmp_path_factory.mktemp("export") / "final")


@pytest.fixture(scope="module")
def pipe(adapters_dir):
    p = CoLoGenPipeline.from_preset("tiny", adapters=adapters_dir)
    p.set_progress_bar_config(disable=True)
    return p


def _pt(pipe, task="edit", seed=0, **kw):
    kw.setdefault("prompt", "make the circle green")
    return pipe(task, kw.pop("source", _image()), seed=seed, num_inference_steps=STEPS, output_type="pt", **kw).images


# ------------------------------------------------------------------------------------------------ tasks end to end


def test_adapters_loaded_from_a_training_export(pipe, adapters_dir):
    assert pipe.transformer.num_experts == 2
    assert not pipe.transformer.training
    assert not any(p.requires_grad for p in pipe.transformer.parameters())
    nonzero = [float(a.experts.lora_B_k[1].abs().sum()) for a in pipe.transformer.adapters()]
    assert all(v > 0 for v in nonzero)


@pytest.mark.parametrize(
    "method,args,kwargs,expected_prompt",
    [
        ("inpaint", (_image(), _mask(), "a red circle"), {}, "fill in the masked region: a red circle"),
        ("ground", (_image(), "draw a yellow box around the blue star"), {}, "draw a yellow box around the blue star"),
        ("control", (_image(), "depth", "a red circle"), {}, "depth map to image: a red circle"),
        ("control", (_image(), "canny", "a red circle"), {"compute_canny": True}, "canny edge map to image: a red circle"),
        ("customize", (_image(), "the subject at the top left"), {},
         "generate the subject from the reference: the subject at the top left"),
        ("edit", (_image(), "make the circle green"), {}, "make the circle green"),
    ],
)
def test_each_task_runs_end_to_end(pipe, method, args, kwargs, expected_prompt):
    out = getattr(pipe, method)(*args, num_inference_steps=STEPS, seed=0, **kwargs)
    assert isinstance(out, CoLoGenPipelineOutput)
    assert len(out.images) == 1 and isinstance(out.images[0], Image.Image)
    assert out.images[0].size == (RES, RES) and out.images[0].mode == "RGB"
    assert out.prompts == [expected_prompt]
    assert out.sources.shape == (1, 3, RES, RES)


def test_output_types_and_batches(pipe):
    images = [_image(1), _image(2)]
    np_out = pipe.edit(images, "make it red", num_inference_steps=2, seed=0, output_type="np").images
    assert isinstance(np_out, np.ndarray) and np_out.shape == (2, RES, RES, 3) and np_out.dtype == np.float32
    pt_out = pipe.edit(images, ["make it red", "make it blue"], num_inference_steps=2, seed=0, output_type="pt").images
    assert pt_out.shape == (2, 3, RES, RES) and 0 <= float(pt_out.min()) and float(pt_out.max()) <= 1
    lat = pipe.edit(_image(), "x", num_inference_steps=2, seed=0, output_type="latent").images
    assert lat.shape == (1, pipe.codec.channels, RES // pipe.codec.factor, RES // pipe.codec.factor)
    many = pipe.edit(_image(), "x", num_inference_steps=2, seed=0, num_images_per_prompt=3).images
    assert len(many) == 3
    # one image broadcast over several prompts; images of another size are rounded / resized
    wide = pipe.ground(_image(3, size=(50, 30)), ["a", "b"], num_inference_steps=2, seed=0).images
    assert [im.size for im in wide] == [(52, 32), (52, 32)]  # nearest multiples of 4 (12.5 -> 13, 7.5 -> 8)
    sized = pipe.edit(_image(), "x", height=16, width=24, num_inference_steps=2, seed=0).images[0]
    assert sized.size == (24, 16)


def test_image_modes_are_converted(pipe):
    rgba = _image(mode="RGBA")
    grey = _image(mode="L")
    for im in (rgba, grey, np.asarray(_image()), to_image_tensor(_image())):
        assert pipe.edit(im, "x", num_inference_steps=1, seed=0).images[0].size == (RES, RES)
    transparent = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert torch.equal(to_image_tensor(transparent), torch.ones(3, 4, 4))  # composited over white


def test_inpaint_source_and_keep_unmasked(pipe):
    image, mask = _image(5), _mask()
    out = pipe.inpaint(image, mask, "a red circle", num_inference_steps=STEPS, seed=0, output_type="pt",
                       keep_unmasked=True)
    m = torch.from_numpy(np.asarray(mask) > 127)
    src = to_image_tensor(image)
    fill = torch.tensor(INPAINT_FILL, dtype=torch.float32) / 255.0
    assert torch.allclose(out.sources[0][:, m], fill[:, None].expand(3, int(m.sum())))
    assert torch.equal(out.sources[0][:, ~m], src[:, ~m])
    assert torch.equal(out.images[0][:, ~m], src[:, ~m])  # unmasked pixels pasted back exactly
    plain = pipe.inpaint(image, mask, "a red circle", num_inference_steps=STEPS, seed=0, output_type="pt").images
    assert torch.equal(plain[0][:, m], out.images[0][:, m])


def test_compute_canny_gives_an_edge_map(pipe):
    photo = Image.new("RGB", (RES, RES), (0, 0, 0))
    photo.paste((255, 255, 255), (8, 8, 24, 24))
    out = pipe.control(photo, "canny", "a square", compute_canny=True, num_inference_steps=1, seed=0)
    edges = out.sources[0]
    assert set(torch.unique(edges).tolist()) <= {0.0, 1.0} and 0 < float(edges.mean()) < 0.5


# ------------------------------------------------------------------------------------------------ cache, seeds, save


def test_cached_equals_uncached(pipe):
    for task, kw in (("edit", {}), ("subject", {"prompt": "the subject"}), ("inpaint", {"mask": _mask()})):
        cached = _pt(pipe, task, use_source_cache=True, **kw)
        uncached = _pt(pipe, task, use_source_cache=False, **kw)
        assert float((cached - uncached).abs().max()) <= 1e-5, task


def test_cached_equals_uncached_with_true_cfg(pipe):
    kw = dict(true_cfg_scale=3.0, negative_prompt="blurry")
    diff = (_pt(pipe, use_source_cache=True, **kw) - _pt(pipe, use_source_cache=False, **kw)).abs().max()
    assert float(diff) <= 1e-5
    assert not torch.equal(_pt(pipe, **kw), _pt(pipe))  # the negative pass changes the result


def test_seeds_reproducible_and_distinct(pipe):
    a, b, c = _pt(pipe, seed=0), _pt(pipe, seed=0), _pt(pipe, seed=1)
    assert torch.equal(a, b)
    assert float((a - c).abs().max()) > 1e-3
    # seed int -> image i gets seed + i; a list of generators gives the same images; batch-independent
    batch = pipe.edit([_image(), _image()], "make the circle green", seed=0, num_inference_steps=STEPS,
                      output_type="pt").images
    gens = [torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)]
    by_gen = pipe.edit([_image(), _image()], "make the circle green", generator=gens, num_inference_steps=STEPS,
                       output_type="pt").images
    assert torch.equal(batch, by_gen)
    assert float((batch[0] - a[0]).abs().max()) <= 1e-5 and float((batch[1] - c[0]).abs().max()) <= 1e-5


def test_save_and_reload_round_trip(pipe, tmp_path):
    folder = pipe.save_pretrained(tmp_path / "pipe")
    for name in ("model_index.json", "adapters.safetensors", "transformer/config.json", "text_encoder/config.json",
                 "scheduler/scheduler_config.json"):
        assert (folder / name).is_file(), name
    assert infer_preset(folder) == "tiny"
    again = CoLoGenPipeline.from_pretrained(folder)
    again.set_progress_bar_config(disable=True)
    assert again.transformer.num_experts == 2
    assert torch.equal(_pt(pipe, seed=7), _pt(again, seed=7))
    # the light variant: no base copy, rebuilt from the preset's seed
    light = pipe.save_pretrained(tmp_path / "light", save_base=False)
    assert not (light / "transformer").exists()
    assert torch.equal(_pt(pipe, seed=7), _pt(CoLoGenPipeline.from_pretrained(light), seed=7))


def test_load_adapters_into_a_plain_pipeline(adapters_dir, pipe):
    plain = CoLoGenPipeline.from_preset("tiny")
    plain.set_progress_bar_config(disable=True)
    assert plain.transformer.num_experts == 0
    before = _pt(plain, seed=3)
    plain.load_adapters(adapters_dir)
    assert plain.transformer.num_experts == 2
    after = _pt(plain, seed=3)
    assert torch.equal(after, _pt(pipe, seed=3)) and not torch.equal(before, after)


# ------------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda p: p("paint", _image(), "x"), "unknown task 'paint'"),
        (lambda p: p.control(_image(), "sketch", "x"), "unknown condition type 'sketch'"),
        (lambda p: p.edit(_image().convert("CMYK"), "x"), "unsupported PIL image mode 'CMYK'"),
        (lambda p: p.edit(_image(), "x", height=30, width=32), "height=30 is not a positive multiple of 4"),
        (lambda p: p.edit([_image(size=(32, 32)), _image(size=(48, 32))], "x"), "different sizes"),
        (lambda p: p.inpaint(_image(), _mask(size=(16, 16)), "x"), "mask 0 is 16x16 but its image is 32x32"),
        (lambda p: p("inpaint", _image(), "x"), "needs a mask"),
        (lambda p: p.edit([_image(), _image(), _image()], ["a", "b"]), "got 3 source images for a batch of 3|2 prompts"),
        (lambda p: p.edit(_image(), "x", output_type="gif"), "unknown output_type"),
        (lambda p: p.edit(_image(), "x", seed=[0, 1]), "got 2 seeds for a batch of 1"),
        (lambda p: p.edit(np.zeros((8, 8, 3), dtype=np.float32) + 2, "x"), r"must be in \[0, 1\]"),
        (lambda p: p.control(_image(), "depth", "x", compute_canny=True), "compute_canny"),
    ],
)
def test_bad_input_errors_name_the_problem(pipe, call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call(pipe)


def test_missing_weights_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        CoLoGenPipeline.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="missing model_index.json"):
        CoLoGenPipeline.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        CoLoGenPipeline.from_preset("tiny", pretrained_path=tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="adapter file not found"):
        CoLoGenPipeline.from_preset("tiny", adapters=tmp_path)
    with pytest.raises(FileNotFoundError, match="pretrained_path"):
        CoLoGenPipeline.from_preset("flux-dev")


# ------------------------------------------------------------------------------------------------ CLI


def _cli(argv):
    parser = argparse.ArgumentParser(prog="cologen")
    add_sample_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_writes_an_image(tmp_path, adapters_dir, capsys):
    src, mask, out = tmp_path / "in.png", tmp_path / "m.png", tmp_path / "out" / "out.png"
    _image().save(src)
    _mask().save(mask)
    rc = _cli(["sample", "--task", "edit", "--image", str(src), "--instruction", "make the circle green",
               "--out", str(out), "--adapters", str(adapters_dir), "--preset", "tiny", "--seed", "0", "--steps", "2",
               "--device", "cpu", "--no-progress"])
    assert rc == 0 and out.is_file()
    assert Image.open(out).size == (RES, RES)
    rc = _cli(["sample", "--task", "inpaint", "--image", str(src), "--mask", str(mask), "--prompt", "a red circle",
               "--out", str(tmp_path / "inp.png"), "--steps", "1", "--device", "cpu", "--no-progress", "--save-source"])
    assert rc == 0 and (tmp_path / "inp.png").is_file() and (tmp_path / "inp_source.png").is_file()


def test_cli_reports_bad_input(tmp_path, capsys):
    src = tmp_path / "in.png"
    _image().save(src)
    common = ["--out", str(tmp_path / "o.png"), "--steps", "1", "--device", "cpu", "--no-progress"]
    assert _cli(["sample", "--task", "edit", "--image", str(src), "--instruction", "x", "--base",
                 str(tmp_path / "missing"), *common]) == 2
    assert "missing" in capsys.readouterr().err
    assert _cli(["sample", "--task", "control", "--image", str(src), "--cond-type", "sketch", *common]) == 2
    assert "unknown condition type 'sketch'" in capsys.readouterr().err
    assert _cli(["sample", "--task", "teleport", "--image", str(src), *common]) == 2
    assert "unknown task" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


# ------------------------------------------------------------------------------------------------ FLUX.1 layout


@pytest.fixture(scope="module")
def flux_folder(tmp_path_factory):
    """A stock FluxPipeline folder of tiny random components (VAE factor 2, CLIP + T5 of width 32), flux-dev-like
    (guidance embedding), written by diffusers itself."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel, T5TokenizerFast

    from lit_cologen.models.tokenizer_assets import CLIP_VOCAB_SIZE, write_clip_tokenizer_files

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("flux")
    tokenizer = CLIPTokenizer.from_pretrained(str(write_clip_tokenizer_files(root / "_clip_tok", model_max_length=77)))
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=CLIP_VOCAB_SIZE, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
        max_position_embeddings=77, projection_dim=32, eos_token_id=2)).eval()
    words = "a red blue green circle star make the it".split()
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)] + [("▁" + w, -3.0) for w in words]
    vocab += [(c, -10.0) for c in "abcdefghijklmnopqrstuvwxyz"]
    tokenizer_2 = T5TokenizerFast(vocab=vocab, extra_ids=4)
    text_encoder_2 = T5EncoderModel(T5Config(
        vocab_size=len(tokenizer_2), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=16, dropout_rate=0.0)).eval()
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1, latent_channels=16,
        norm_num_groups=4, sample_size=32, scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False,
        use_post_quant_conv=False).eval()
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=True, axes_dims_rope=(4, 6, 6))
    FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                 text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, transformer=transformer,
                 ).save_pretrained(str(root / "FLUX.1-tiny"))
    return root / "FLUX.1-tiny"


def test_flux_layout_folder_loads_saves_and_reloads(flux_folder, tmp_path):
    base = CoLoGenTransformer.from_preset("flux-dev", PRWConfig(num_experts=1, rank=4), pretrained_path=str(flux_folder))
    with torch.no_grad():
        for adapter in base.adapters():
            adapter.experts.lora_B_k[0].normal_(0, 0.5)
    base.save_adapters(tmp_path / "run")
    pipe = CoLoGenPipeline.from_pretrained(flux_folder, adapters=tmp_path / "run", torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.preset == "flux-dev" and pipe.transformer.num_experts == 1 and pipe.codec.factor == 2
    first = _pt(pipe, seed=1)
    assert first.shape == (1, 3, RES, RES)
    assert float((first - _pt(pipe, seed=1, use_source_cache=False)).abs().max()) <= 1e-5

    saved = pipe.save_pretrained(tmp_path / "cologen-flux")
    for sub in ("transformer", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "scheduler"):
        assert (saved / sub).is_dir(), sub
    assert (saved / "adapters.safetensors").is_file()
    again = CoLoGenPipeline.from_pretrained(saved, torch_dtype=torch.float32)
    again.set_progress_bar_config(disable=True)
    assert torch.equal(first, _pt(again, seed=1))
    light = pipe.save_pretrained(tmp_path / "cologen-flux-light", save_base=False)
    assert not (light / "transformer").exists() and not (light / "text_encoder_2").exists()
    assert torch.equal(first, _pt(CoLoGenPipeline.from_pretrained(light, torch_dtype=torch.float32), seed=1))


def test_default_guidance_is_the_presets_sampling_guidance(pipe):
    """No guidance given: the preset's value (tiny: 1.0, the value it trains with; flux-dev: FLUX's distilled 3.5)."""
    from lit_cologen.models.presets import get_preset

    assert get_preset("tiny").sampling_guidance == 1.0 and get_preset("flux-dev").sampling_guidance == 3.5
    assert pipe.default_guidance == 1.0
    img = Image.new("RGB", (32, 32), (200, 30, 30))
    kw = dict(num_inference_steps=2, seed=0, output_type="np")
    default = pipe("edit", img, "make it blue", **kw).images
    assert np.array_equal(default, pipe("edit", img, "make it blue", guidance_scale=1.0, **kw).images)
    assert not np.array_equal(default, pipe("edit", img, "make it blue", guidance_scale=3.5, **kw).images)
