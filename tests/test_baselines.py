"""Baselines (benchmarks/baselines): OmniGen and IP-Adapter (FLUX, SDXL) through the harness, on CPU.

Every model here is a tiny random-init copy of the real architecture, saved by stock diffusers / transformers into
the real folder layouts (``Shitao/OmniGen-v1-diffusers``, FLUX.1 + XLabs ``flux-ip-adapter`` + CLIP vision,
SDXL + ``h94/IP-Adapter``), then loaded by the baseline code from those folders. Tokenizers are built offline.
"""

from __future__ import annotations

import inspect
import json
import string
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.baselines import (
    BaselineWeightsError,
    DiffusersBaseline,
    WeightsMismatchError,
    config_argv,
    generator_kwargs,
    group_consecutive,
    import_factory,
    load_config,
    row_label,
    run_config,
)
from benchmarks.baselines.ip_adapter import FluxIPAdapterBaseline, SDXLIPAdapterBaseline, make_flux, make_sdxl
from benchmarks.baselines.omnigen import OmniGenBaseline, check_omnigen_folder, make, omnigen_prompt
from benchmarks.harness import GenerationRequest, RunFolder, generate
from lit_cologen.data.evalsets import default_dreambench_path
from lit_cologen.models.tokenizer_assets import CLIP_VOCAB_SIZE, write_clip_tokenizer_files

DREAMBENCH = default_dreambench_path() or Path("missing-dreambench")
CONFIGS = Path(__file__).resolve().parents[1] / "experiments" / "baselines"
CPU = {"device": "cpu", "dtype": "float32"}

needs_dreambench = pytest.mark.skipif(not (DREAMBENCH / "backpack" / "00.jpg").is_file(),
                                      reason="DreamBench copy not found")


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def _dreambench_requests(subjects=("backpack",), images=2, resolution=32):
    from benchmarks.suites.dreambench import build_requests

    return build_requests(DREAMBENCH, subjects=list(subjects), prompts_per_subject=1, images_per_prompt=images,
                          resolution=resolution)


# ------------------------------------------------------------------------------------------------------------
# tiny folders
# ------------------------------------------------------------------------------------------------------------


def _tiny_llama_tokenizer():
    """A LlamaTokenizer (OmniGen's tokenizer class) over single characters + byte fallback, built offline."""
    from transformers import LlamaTokenizer

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"<0x{b:02X}>": 3 + b for b in range(256)})
    for ch in ["▁"] + list(string.ascii_letters + string.digits + ".,:;!?'\"-_()<>|/\n"):
        vocab.setdefault(ch, len(vocab))
    return LlamaTokenizer(vocab=vocab, merges=[])


def _tiny_t5_tokenizer():
    from transformers import T5TokenizerFast

    words = "a an the in on of with and backpack cat dog jungle snow beach city red blue".split()
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)] + [("▁" + w, -3.0) for w in words]
    vocab += [(c, -10.0) for c in "abcdefghijklmnopqrstuvwxyz,.!-"]
    return T5TokenizerFast(vocab=vocab, extra_ids=0)


def _vae(blocks, latent_channels, **kw):
    from diffusers import AutoencoderKL

    n = len(blocks)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                         up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=tuple(blocks),
                         layers_per_block=1, latent_channels=latent_channels, norm_num_groups=min(blocks),
                         sample_size=32, **kw).eval()


def _clip_vision(folder: Path, projection_dim=24, hidden_size=16) -> Path:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=hidden_size, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=32,
        patch_size=16, projection_dim=projection_dim)).eval().save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def clip_tokenizer_dir(tmp_path_factory):
    return write_clip_tokenizer_files(tmp_path_factory.mktemp("cliptok") / "tok", model_max_length=77)


@pytest.fixture(scope="module")
def omnigen_folder(tmp_path_factory):
    """``Shitao/OmniGen-v1-diffusers`` layout: tiny OmniGenTransformer2DModel, 4-block VAE (x8), LlamaTokenizer."""
    from diffusers import FlowMatchEulerDiscreteScheduler, OmniGenPipeline, OmniGenTransformer2DModel

    torch.manual_seed(0)
    tok = _tiny_llama_tokenizer()
    head_dim = 8
    transformer = OmniGenTransformer2DModel(
        in_channels=4, patch_size=2, hidden_size=16, num_attention_heads=2, num_key_value_heads=2,
        intermediate_size=32, num_layers=1, pad_token_id=2, vocab_size=len(tok) + 8, max_position_embeddings=4096,
        original_max_position_embeddings=4096, pos_embed_max_size=32, time_step_dim=16,
        rope_scaling={"short_factor": [1.0] * (head_dim // 2), "long_factor": [1.0] * (head_dim // 2)},
    ).eval()
    pipe = OmniGenPipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(),
                           vae=_vae((4, 4, 4, 4), 4), tokenizer=tok)
    root = tmp_path_factory.mktemp("omnigen") / "OmniGen-v1-diffusers"
    pipe.save_pretrained(str(root))
    return root


def _xlabs_state_dict(n_blocks=1, joint=32, inner=32, clip_dim=24, std=1.0):
    """An IP-Adapter state dict in the XLabs ``flux-ip-adapter`` key layout."""
    g = torch.Generator().manual_seed(1)
    sd = {"ip_adapter_proj_model.proj.weight": torch.randn(4 * joint, clip_dim, generator=g) * std,
          "ip_adapter_proj_model.proj.bias": torch.zeros(4 * joint),
          "ip_adapter_proj_model.norm.weight": torch.ones(joint),
          "ip_adapter_proj_model.norm.bias": torch.zeros(joint)}
    for i in range(n_blocks):
        for kv in "kv":
            sd[f"double_blocks.{i}.processor.ip_adapter_double_stream_{kv}_proj.weight"] = \
                torch.randn(inner, joint, generator=g) * std
            sd[f"double_blocks.{i}.processor.ip_adapter_double_stream_{kv}_proj.bias"] = torch.zeros(inner)
    return sd


@pytest.fixture(scope="module")
def flux_ip_folders(tmp_path_factory, clip_tokenizer_dir):
    """(FLUX.1 folder, XLabs adapter folder, CLIP vision folder), all tiny."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("flux_ip")
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=CLIP_VOCAB_SIZE, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
        max_position_embeddings=77, projection_dim=32, eos_token_id=2)).eval()
    tok2 = _tiny_t5_tokenizer()
    t5 = T5EncoderModel(T5Config(vocab_size=len(tok2), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4,
                                 relative_attention_num_buckets=8, relative_attention_max_distance=16,
                                 feed_forward_proj="gated-gelu", dropout_rate=0.0)).eval()
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=1, num_single_layers=1,
                                         attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                         pooled_projection_dim=32, axes_dims_rope=(4, 6, 6))
    vae = _vae((8, 16), 16, scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False)
    FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text_encoder,
                 tokenizer=CLIPTokenizer.from_pretrained(str(clip_tokenizer_dir)), text_encoder_2=t5, tokenizer_2=tok2,
                 transformer=transformer).save_pretrained(str(root / "FLUX.1-dev"))
    (root / "flux-ip-adapter").mkdir()
    save_file(_xlabs_state_dict(), str(root / "flux-ip-adapter" / "ip_adapter.safetensors"))
    _clip_vision(root / "clip-vit-large-patch14")
    return root / "FLUX.1-dev", root / "flux-ip-adapter", root / "clip-vit-large-patch14"


def _h94_plus_state_dict(unet, embed_dims=16, cross=64):
    """An IP-Adapter-Plus file in the original (tencent / h94) key layout, from a random diffusers resampler."""
    from diffusers.models.embeddings import IPAdapterPlusImageProjection

    res = IPAdapterPlusImageProjection(embed_dims=embed_dims, output_dims=cross, hidden_dims=32, depth=4, dim_head=64,
                                       heads=1, num_queries=16)
    ours = res.state_dict()
    names = {"ln0": "0.norm1", "ln1": "0.norm2", "attn.to_q": "0.to_q", "attn.to_out.0": "0.to_out", "ff.0": "1.0",
             "ff.1.net.0.proj": "1.1", "ff.1.net.2": "1.3"}
    sd = {}
    for k, v in ours.items():
        if not k.startswith("layers."):
            sd["image_proj." + k] = v
            continue
        _, i, rest = k.split(".", 2)
        if rest.startswith("attn.to_k."):
            sd[f"image_proj.layers.{i}.0.to_kv.weight"] = torch.cat([v, ours[k.replace("to_k", "to_v")]])
        elif not rest.startswith("attn.to_v."):
            a = next(a for a in names if rest.startswith(a + "."))
            sd[f"image_proj.layers.{i}.{names[a]}{rest[len(a):]}"] = v
    key = 1
    for name in unet.attn_processors:  # IP layers: every cross-attention (attn2) processor, ids 1, 3, 5, ...
        if name.endswith("attn1.processor"):
            continue
        block = name.split(".")
        chans = list(unet.config.block_out_channels)
        hidden = chans[-1] if block[0] == "mid_block" else (
            chans[::-1][int(block[1])] if block[0] == "up_blocks" else chans[int(block[1])])
        sd[f"ip_adapter.{key}.to_k_ip.weight"] = torch.randn(hidden, cross)
        sd[f"ip_adapter.{key}.to_v_ip.weight"] = torch.randn(hidden, cross)
        key += 2
    return {k: v.contiguous() for k, v in sd.items()}


@pytest.fixture(scope="module")
def sdxl_ip_folders(tmp_path_factory, clip_tokenizer_dir):
    """(SDXL folder, h94/IP-Adapter folder with sdxl_models/ip-adapter-plus_sdxl_vit-h.safetensors and
    models/image_encoder/), all tiny."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("sdxl_ip")
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 1), projection_class_embeddings_input_dim=80,
        cross_attention_dim=64, norm_num_groups=4)
    cfg = dict(vocab_size=CLIP_VOCAB_SIZE, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
               num_attention_heads=4, max_position_embeddings=77, projection_dim=32, eos_token_id=2)
    tok = CLIPTokenizer.from_pretrained(str(clip_tokenizer_dir))
    StableDiffusionXLPipeline(
        vae=_vae((8, 16), 4), text_encoder=CLIPTextModel(CLIPTextConfig(**cfg)).eval(),
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**cfg)).eval(), tokenizer=tok, tokenizer_2=tok,
        unet=unet, scheduler=EulerDiscreteScheduler(), image_encoder=None, feature_extractor=None,
    ).save_pretrained(str(root / "sdxl-base"))
    adapter = root / "IP-Adapter"
    _clip_vision(adapter / "models" / "image_encoder")
    (adapter / "sdxl_models").mkdir(parents=True)
    save_file(_h94_plus_state_dict(unet), str(adapter / "sdxl_models" / "ip-adapter-plus_sdxl_vit-h.safetensors"))
    return root / "sdxl-base", adapter


# ------------------------------------------------------------------------------------------------------------
# OmniGen
# ------------------------------------------------------------------------------------------------------------


def _req(task, prompt="a red bag", sources=("s.png",), **kw):
    return GenerationRequest(id=kw.pop("id", "r0"), task=task, prompt=prompt, seed=kw.pop("seed", 0), protocol="x",
                             sources=list(sources), **kw)


def test_omnigen_prompt_conventions():
    img = "<img><|image_1|></img>"
    assert omnigen_prompt(_req("edit", "Make the sky pink.")) == f"{img} Make the sky pink."
    assert omnigen_prompt(_req("control", "a house", cond_type="depth")) == \
        f"Generate a new photo using the following picture and text as conditions: {img}\n a house"
    assert omnigen_prompt(_req("control", "a house", cond_type="depth"),
                          {"control/depth": "Following the depth map {image}, generate: {prompt}"}) == \
        f"Following the depth map {img}, generate: a house"
    assert omnigen_prompt(_req("subject", "a backpack in the jungle", fields={"class_noun": "backpack"})) == \
        f"a backpack in the jungle. The backpack is {img}."
    assert omnigen_prompt(_req("subject", "a thing on a table.")) == f"a thing on a table. {img}"
    assert omnigen_prompt(_req("t2i", "a cat", sources=())) == "a cat"
    with pytest.raises(ValueError, match="inpaint"):
        omnigen_prompt(_req("inpaint"))


def test_group_consecutive():
    assert group_consecutive([1, 1, 2, 2, 2, 1], lambda x: x, max_size=2) == [[1, 1], [2, 2], [2], [1]]


@needs_dreambench
def test_omnigen_dreambench_through_config_and_cli(omnigen_folder, tmp_path, monkeypatch):
    monkeypatch.delenv("OMNIGEN_WEIGHTS", raising=False)
    out = tmp_path / "omnigen-db"
    args = {"num_inference_steps": 2, "max_input_image_size": 32, **CPU}
    extra = ["--data", str(DREAMBENCH), "--subjects", "backpack,cat", "--prompts-per-subject", "1",
             "--images-per-prompt", "2", "--resolution", "32", "--no-progress"]
    argvs = run_config(CONFIGS / "omnigen_dreambench.yaml", out, weights=str(omnigen_folder), generator_args=args,
                       extra=extra)
    assert argvs[0][:2] == ["generate", "dreambench"]
    run = RunFolder(out)
    reqs = run.read_manifest()
    assert len(reqs) == 4 and {r.seed for r in reqs} == {0, 1}
    for r in reqs:
        assert Image.open(run.image_path(r.id)).size == (32, 32)
    info = run.read_run_info()
    gen = info["generator"]
    assert gen["baseline"] == "omnigen" and gen["settings"]["num_inference_steps"] == 2
    assert gen["settings"]["tasks"]["subject"]["guidance_scale"] == 2.5  # from the config ({subject: 2.5})
    assert gen["settings"]["tasks"]["edit"]["guidance_scale"] == 2.0  # other tasks keep OmniGen's defaults
    assert "transformer/config.json" in gen["weights"]["omnigen"]["files"]
    assert info["generator_args"]["config"].endswith("omnigen_dreambench.yaml")

    # resumable: a second run skips every image (nothing rewritten)
    stamps = {r.id: run.image_path(r.id).stat().st_mtime_ns for r in reqs}
    run_config(CONFIGS / "omnigen_dreambench.yaml", out, weights=str(omnigen_folder), generator_args=args,
               extra=extra)
    assert {r.id: run.image_path(r.id).stat().st_mtime_ns for r in reqs} == stamps

    # scored and tabled exactly like ours (tiny random CLIP / DINO in the real layouts)
    from benchmarks.cli import main as bench
    from benchmarks.metrics.random_init import save_random_clip, save_random_dino

    weights = tmp_path / "weights"
    save_random_clip(weights / "ViT-B-32.pt", "tiny", seed=0)
    save_random_dino(weights / "dino-vits16", "tiny", seed=0)
    assert bench(["score", "dreambench", str(out), "--weights-dir", str(weights), "--no-progress"]) == 0
    results = json.loads(run.results_path.read_text())
    assert results["protocol"] == "dreambench/omnigen" and results["image_count"] == 4
    assert results["generator"]["baseline"] == "omnigen"
    label = load_config(CONFIGS / "omnigen_dreambench.yaml")["label"]
    bench(["table", "4", "--results", f"{label}={run.results_path}", "--out", str(tmp_path / "t4.md")])
    table = (tmp_path / "t4.md").read_text()
    # 2 subjects x 1 prompt: a subset; scored with the test's random-init backbones: not comparable, no deltas
    assert "OmniGen [61]" in table and f"**{label}** (ours, subset, not comparable: random-init backbones)" in table


def test_omnigen_edit_and_control_requests(omnigen_folder, tmp_path):
    run = tmp_path / "run"
    (run / "inputs").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (24, 40, 3), dtype=np.uint8)).save(run / "inputs" / "src.png")
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(run / "inputs" / "depth.png")
    reqs = [
        GenerationRequest(id="edit0", task="edit", prompt="Make it pink.", seed=0, protocol="editing/emu",
                          sources=["inputs/src.png"], width=40, height=24),
        GenerationRequest(id="ctl-g0", task="control", prompt="a house", seed=42, protocol="control/controlnetpp",
                          sources=["inputs/depth.png"], cond_type="depth", width=32, height=32),
        GenerationRequest(id="ctl-g1", task="control", prompt="a house", seed=43, protocol="control/controlnetpp",
                          sources=["inputs/depth.png"], cond_type="depth", width=32, height=32),
    ]
    gen = make(weights=str(omnigen_folder), num_inference_steps=1, max_input_image_size=32, **CPU)
    calls = []
    orig = gen.generate_group
    gen.generate_group = lambda group: calls.append([r.id for r in group]) or orig(group)
    rep = generate(run, reqs, gen, batch_size=3, progress=False)
    assert rep.generated == 3
    assert calls == [["edit0"], ["ctl-g0", "ctl-g1"]]  # the two control images share one call
    assert Image.open(run / "images" / "edit0.png").size == (40, 24)  # the source size (crop to x16, resized back)
    a, b = _pixels(run / "images" / "ctl-g0.png"), _pixels(run / "images" / "ctl-g1.png")
    assert not np.array_equal(a, b)  # different seeds

    # seeded per request (latents and the VAE posterior samples of the inputs): the same request alone, in another
    # grouping, gives the same image up to float noise
    gen2 = make(weights=str(omnigen_folder), num_inference_steps=1, max_input_image_size=32, **CPU)
    run2 = tmp_path / "run2"
    (run2 / "inputs").mkdir(parents=True)
    for f in ("src.png", "depth.png"):
        (run2 / "inputs" / f).write_bytes((run / "inputs" / f).read_bytes())
    generate(run2, reqs[2:3], gen2, batch_size=1, progress=False)  # ctl-g1 was second in its group
    assert np.abs(_pixels(run2 / "images" / "ctl-g1.png") - b).max() <= 2


def test_omnigen_input_latents_are_seeded_per_request(omnigen_folder):
    """OmniGen samples the VAE posterior of its input images; ours draws it per request (seed, branch, index)."""
    pipe = make(weights=str(omnigen_folder), max_input_image_size=32, **CPU).pipe
    rng = np.random.default_rng(1)
    a, b = (Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(2))
    # the processor's order, which the seeding relies on: prompt-branch images per request, then image-CFG ones
    data = pipe.multimodal_processor(["x <img><|image_1|></img>", "y <img><|image_1|></img>"], [[a], [b]],
                                     height=32, width=32, use_img_cfg=True)
    pix = data["input_pixel_values"]
    assert len(pix) == 4 and torch.equal(pix[0], pix[2]) and torch.equal(pix[1], pix[3])
    assert not torch.equal(pix[0], pix[1])
    ra, rb = _req("edit", id="a", seed=3), _req("edit", id="b", seed=7)
    pair = OmniGenBaseline._seeded_encoder(pipe, [ra, rb], [1, 1])(pix)
    torch.manual_seed(123)  # the global RNG plays no part
    alone = OmniGenBaseline._seeded_encoder(pipe, [rb], [1])([pix[1], pix[3]])
    assert torch.equal(pair[1], alone[0]) and torch.equal(pair[3], alone[1])
    assert not torch.equal(pair[1], pair[3])  # the two branches draw different samples, as OmniGen's own code


def test_omnigen_missing_and_mismatched_folders(omnigen_folder, flux_ip_folders, tmp_path, monkeypatch):
    with pytest.raises(BaselineWeightsError, match=r"does not exist"):
        make(weights=str(tmp_path / "nowhere"))
    broken = tmp_path / "broken"
    broken.mkdir()
    for sub in ("transformer", "vae", "scheduler"):
        (broken / sub).symlink_to(omnigen_folder / sub)
    (broken / "model_index.json").write_bytes((omnigen_folder / "model_index.json").read_bytes())
    with pytest.raises(BaselineWeightsError) as err:
        check_omnigen_folder(broken)
    assert str(broken) in str(err.value) and "missing subfolder 'tokenizer/'" in str(err.value)

    original = tmp_path / "OmniGen-v1"
    original.mkdir()
    (original / "config.json").write_text("{}")
    (original / "model.safetensors").write_bytes(b"")
    with pytest.raises(WeightsMismatchError, match="original Shitao/OmniGen-v1 layout"):
        make(weights=str(original))
    with pytest.raises(WeightsMismatchError, match="FluxPipeline.*expected OmniGenPipeline"):
        make(weights=str(flux_ip_folders[0]))
    monkeypatch.delenv("OMNIGEN_WEIGHTS", raising=False)
    with pytest.raises(BaselineWeightsError, match="environment variable"):
        make(config=str(CONFIGS / "omnigen_dreambench.yaml"))


# ------------------------------------------------------------------------------------------------------------
# IP-Adapter
# ------------------------------------------------------------------------------------------------------------


@needs_dreambench
def test_flux_ip_adapter_dreambench(flux_ip_folders, tmp_path):
    base, adapter, encoder = flux_ip_folders
    common = dict(weights=str(base), adapter=str(adapter), image_encoder=str(encoder), num_inference_steps=2,
                  max_sequence_length=16, **CPU)
    gen = make_flux(**common)
    reqs = _dreambench_requests(images=2)
    calls = []
    orig = gen.generate_group
    gen.generate_group = lambda group: calls.append(len(group)) or orig(group)
    generate(tmp_path / "a", reqs, gen, batch_size=4, progress=False)
    assert calls == [2]  # both seeds of the prompt in one call (same reference)
    run = RunFolder(tmp_path / "a")
    first = [_pixels(run.image_path(r.id)) for r in reqs]
    assert all(im.shape == (32, 32, 3) for im in first)
    info = run.read_run_info()["generator"]
    assert info["settings"]["scale"] == 1.0 and info["settings"]["true_cfg_scale"] == 4.0
    assert info["settings"]["negative_prompt"] == ""
    assert len(info["weights"]["ip_adapter"]["sha256"]) == 64

    # one request per call gives the same images (one CPU generator per request)
    generate(tmp_path / "b", reqs, make_flux(**common), batch_size=1, progress=False)
    for r, im in zip(reqs, first):
        assert np.abs(_pixels(RunFolder(tmp_path / "b").image_path(r.id)) - im).max() <= 2
    # the adapter is active: scale 0 changes the images
    generate(tmp_path / "c", reqs[:1], make_flux(**common, scale=0.0), batch_size=1, progress=False)
    assert np.abs(_pixels(RunFolder(tmp_path / "c").image_path(reqs[0].id)) - first[0]).max() > 2


def test_flux_ip_adapter_folder_errors(flux_ip_folders, tmp_path):
    from safetensors.torch import save_file

    base, adapter, encoder = flux_ip_folders
    with pytest.raises(BaselineWeightsError) as err:
        make_flux(weights=str(base), adapter=str(tmp_path), image_encoder=str(encoder))
    assert str(tmp_path) in str(err.value) and "ip_adapter.safetensors" in str(err.value)

    def bad(sd, name):
        d = tmp_path / name
        d.mkdir()
        save_file(sd, str(d / "ip_adapter.safetensors"))
        return make_flux(weights=str(base), adapter=str(d), image_encoder=str(encoder))

    with pytest.raises(WeightsMismatchError, match="not in the XLabs key layout.*ip_adapter_proj_model.proj.weight"):
        bad({"image_proj.latents": torch.zeros(1, 4, 8)}, "sd15")
    with pytest.raises(WeightsMismatchError, match="2 double blocks, the transformer has 1"):
        bad(_xlabs_state_dict(n_blocks=2), "two_blocks")
    with pytest.raises(WeightsMismatchError, match="projection_dim 24"):
        bad(_xlabs_state_dict(clip_dim=40), "wide_clip")
    with pytest.raises(WeightsMismatchError, match="joint_attention_dim is 32"):
        bad(_xlabs_state_dict(joint=48), "wide_joint")
    with pytest.raises(BaselineWeightsError, match="IP-Adapter image encoder.*does not exist"):
        make_flux(weights=str(base), adapter=str(adapter), image_encoder=str(tmp_path / "no_clip"))
    with pytest.raises(ValueError, match="negative_prompt"):
        make_flux(weights=str(base), adapter=str(adapter), image_encoder=str(encoder), negative_prompt=None)
    partial = tmp_path / "flux_partial"
    partial.mkdir()
    for item in base.iterdir():
        if item.name != "transformer":
            (partial / item.name).symlink_to(item)
    with pytest.raises(BaselineWeightsError, match=r"flux_partial is incomplete: missing subfolder 'transformer/'"):
        make_flux(weights=str(partial), adapter=str(adapter), image_encoder=str(encoder))


@needs_dreambench
def test_sdxl_ip_adapter_plus_loads_and_generates(sdxl_ip_folders, tmp_path):
    base, adapter = sdxl_ip_folders
    gen = make_sdxl(weights=str(base), adapter=str(adapter), num_inference_steps=2, render_size=48, **CPU)
    reqs = _dreambench_requests(images=2)
    generate(tmp_path / "run", reqs, gen, batch_size=2, progress=False)
    run = RunFolder(tmp_path / "run")
    assert all(Image.open(run.image_path(r.id)).size == (32, 32) for r in reqs)  # rendered at 48, resized
    info = run.read_run_info()["generator"]
    assert info["settings"]["scale"] == 0.6 and info["settings"]["render_size"] == 48
    assert type(gen.pipe.unet.encoder_hid_proj).__name__ == "MultiIPAdapterImageProjection"


def test_sdxl_ip_adapter_folder_errors(sdxl_ip_folders, flux_ip_folders, tmp_path):
    base, adapter = sdxl_ip_folders
    with pytest.raises(BaselineWeightsError) as err:
        make_sdxl(weights=str(base), adapter=str(adapter), image_encoder_folder="models/missing_encoder")
    assert "models/missing_encoder" in str(err.value) and "does not exist" in str(err.value)
    with pytest.raises(BaselineWeightsError, match="lacks sdxl_models/ip-adapter_sdxl.safetensors"):
        make_sdxl(weights=str(base), adapter=str(adapter), weight_name="ip-adapter_sdxl.safetensors")
    with pytest.raises(WeightsMismatchError, match="FluxPipeline.*expected StableDiffusionXLPipeline"):
        make_sdxl(weights=str(flux_ip_folders[0]), adapter=str(adapter))


# ------------------------------------------------------------------------------------------------------------
# configs, factories, table rows
# ------------------------------------------------------------------------------------------------------------

_ENV = ["OMNIGEN_WEIGHTS", "EMU_EDIT_DATA", "MAGICBRUSH_DATA", "MULTIGEN_EVAL_DATA", "ADE20K_EVAL_DATA",
        "COCOSTUFF_EVAL_DATA", "COLOGEN_WEIGHTS", "FLUX_DEV_PATH", "FLUX_IP_ADAPTER", "CLIP_VIT_L14", "SDXL_WEIGHTS",
        "H94_IP_ADAPTER"]


def _init_params(cls) -> set[str]:
    params = set()
    for c in cls.__mro__:
        if "__init__" in c.__dict__ and issubclass(c, DiffusersBaseline):
            params |= {p for p in inspect.signature(c.__init__).parameters if p not in ("self", "kwargs")}
    return params


def test_configs_are_consistent(tmp_path, monkeypatch):
    from benchmarks.cli import SUITES
    from benchmarks.protocols import get_protocol

    for var in _ENV:
        monkeypatch.setenv(var, f"/data/{var.lower()}")
    classes = {"benchmarks.baselines.omnigen:make": OmniGenBaseline,
               "benchmarks.baselines.ip_adapter:make_flux": FluxIPAdapterBaseline,
               "benchmarks.baselines.ip_adapter:make_sdxl": SDXLIPAdapterBaseline}
    files = sorted(CONFIGS.glob("*.yaml"))
    assert {f.stem for f in files} >= {"omnigen_dreambench", "omnigen_emu", "omnigen_magicbrush", "omnigen_control",
                                       "ip_adapter_flux_dreambench", "ip_adapter_sdxl_dreambench"}
    for f in files:
        cfg = load_config(f)
        assert SUITES[cfg["suite"]] == cfg["protocol"], f
        assert cfg["seeds"] == list(get_protocol(cfg["protocol"]).seeds), f
        factory = cfg["generator"]["factory"]
        assert callable(import_factory(factory))
        kwargs = generator_kwargs(f, {})
        unknown = set(kwargs) - _init_params(classes[factory])
        assert not unknown, f"{f.name}: unknown generator settings {unknown}"
        argvs = config_argv(f, tmp_path / f.stem)
        for argv in argvs:
            assert argv[:2] == ["generate", cfg["suite"]] and f"config={f.resolve()}" in argv
            assert not any("$" in a for a in argv), argv
    control = config_argv(CONFIGS / "omnigen_control.yaml", tmp_path / "c", extra=["--limit-items", "2"])
    conds = [a[a.index("--cond") + 1] for a in control]
    assert conds == ["canny", "depth", "hed", "lineart", "seg", "seg"]
    assert control[2][control[2].index("--weights-dir") + 1] == "/data/cologen_weights"
    assert control[4][control[4].index("--seg-dataset") + 1] == "ade20k" and control[0][-2:] == ["--limit-items", "2"]
    assert control[0][control[0].index("--out") + 1] == str(tmp_path / "c" / "canny")


def test_config_checks(tmp_path, monkeypatch):
    monkeypatch.delenv("EMU_EDIT_DATA", raising=False)
    with pytest.raises(ValueError, match=r"\$EMU_EDIT_DATA"):
        config_argv(CONFIGS / "omnigen_emu.yaml", tmp_path)
    text = (CONFIGS / "omnigen_dreambench.yaml").read_text().replace("seeds: [0, 1, 2, 3]", "seeds: [1, 2, 3, 4]")
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(ValueError, match="protocol fixes the seeds"):
        config_argv(tmp_path / "bad.yaml", tmp_path / "out")
    with pytest.raises(ValueError, match="not make_flux"):
        make_flux(config=str(CONFIGS / "omnigen_dreambench.yaml"))
    printed = run_config(CONFIGS / "ip_adapter_flux_dreambench.yaml", tmp_path / "x", weights="/w/flux", dry_run=True)
    assert "weights=/w/flux" in printed[0]


def test_table_rows_for_a_baseline():
    from benchmarks.tables import render

    label = row_label("OmniGen", "dreambench/omnigen")
    res = {"protocol": "dreambench/omnigen", "metrics": {"clip_t": 0.31, "clip_i": 0.80, "dino": 0.70},
           "image_count": 3000, "backbones": {}}
    ours = {"protocol": "dreambench/omnigen", "metrics": {"clip_t": 0.32, "clip_i": 0.83, "dino": 0.75},
            "image_count": 3000, "backbones": {}}
    text = render("4", [(label, res), ("CoLoGen", ours)])
    assert "OmniGen [61]" in text and f"**{label}**" in text and "**CoLoGen**" in text
    assert json.dumps(label) and label == "OmniGen (rerun, dreambench/omnigen)"
