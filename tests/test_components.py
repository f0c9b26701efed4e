"""Tests for the frozen components (models/codecs.py, text_encoders.py, factory.py, text_cache.py): codecs, text
conditioners, the factory, the embedding cache.

Everything is built here with random weights and saved to tmp_path; nothing is downloaded. FLUX parity is checked
against stock diffusers (``FluxPipeline.encode_prompt`` and the VAE formulas of the FLUX pipelines).
"""

from __future__ import annotations

import importlib.util
import math
import re
import shutil

import pytest
import torch

from lit_cologen.models.codecs import FluxVAECodec, PixelShuffleCodec
from lit_cologen.models.factory import build_components
from lit_cologen.models.random_weights import tiny_flux_vae
from lit_cologen.models.text_cache import TextEmbeddingCache
from lit_cologen.models.text_encoders import BuiltinTextEncoder, FluxTextEncoders
from lit_cologen.models.tokenizer_assets import (
    CLIP_VOCAB_SIZE,
    build_clip_tokenizer,
    clip_bpe_path,
    write_clip_tokenizer_files,
)
from lit_cologen.models.weights import check_flux_folder

CAPTIONS = [
    "a large red circle at the top left and a blue star at the center, on a green striped background",
    "a large blue circle at the top left and a red star at the center, on a green striped background",
    "a large red circle at the top left and a blue star at the center, on a green checker background",
    "a small red circle at the top left and a blue star at the center, on a green striped background",
    "a blue star at the center and a large red circle at the top left, on a green striped background",
    "a yellow cross at the bottom right, on a purple solid background",
]


def _assert_frozen(module: torch.nn.Module) -> None:
    assert not any(p.requires_grad for p in module.parameters())
    module.train()
    assert not module.training and not any(m.training for m in module.modules())


# ------------------------------------------------------------------------------------------------------------
# Codecs
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [1, 2, 4])
def test_pixel_shuffle_codec_is_lossless(factor):
    codec = PixelShuffleCodec(factor)
    assert codec.channels == 3 * factor * factor and codec.factor == factor
    x = torch.rand(2, 3, 16, 24, generator=torch.Generator().manual_seed(0)) * 2 - 1
    z = codec.encode(x)
    assert z.shape == (2, 3 * factor * factor, 16 // factor, 24 // factor)
    assert torch.equal(codec.decode(z), x)
    assert codec.latent_shape(16, 24) == z.shape[1:]
    _assert_frozen(codec)
    assert codec.state_dict() == {}  # no weights


def test_pixel_shuffle_codec_rejects_bad_shapes():
    codec = PixelShuffleCodec(4)
    with pytest.raises(ValueError, match="multiple"):
        codec.encode(torch.zeros(1, 3, 18, 16))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        codec.encode(torch.zeros(1, 4, 16, 16))
    with pytest.raises(ValueError, match="48"):
        codec.decode(torch.zeros(1, 12, 4, 4))


def test_flux_vae_codec_matches_diffusers_formulas(tmp_path):
    torch.manual_seed(0)
    vae = tiny_flux_vae((8, 16, 16))
    vae.save_pretrained(tmp_path / "vae")
    codec = FluxVAECodec.from_pretrained(tmp_path)
    assert codec.factor == 4  # 2 ** (len(block_out_channels) - 1), read from the config
    assert codec.channels == 16
    assert (codec.scaling_factor, codec.shift_factor) == (0.3611, 0.1159)
    _assert_frozen(codec)

    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        latents = codec.encode(x)
        assert latents.shape == (2, 16, 8, 8)
        # FluxImg2ImgPipeline.prepare_latents: (z - shift) * scale, z from the posterior (mode here)
        z = vae.encode(x).latent_dist.mode()
        torch.testing.assert_close(latents, (z - 0.1159) * 0.3611, rtol=0, atol=0)
        # FluxPipeline.__call__: vae.decode(latents / scale + shift)
        images = codec.decode(latents)
        assert images.shape == x.shape
        torch.testing.assert_close(images, vae.decode(latents / 0.3611 + 0.1159).sample, rtol=0, atol=0)
        # sampling the posterior with a generator: same draw as diffusers' DiagonalGaussianDistribution.sample
        sampled = codec.encode(x, sample=True, generator=torch.Generator().manual_seed(3))
        ref = vae.encode(x).latent_dist.sample(generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(sampled, (ref - 0.1159) * 0.3611, rtol=0, atol=0)
        assert not torch.equal(sampled, latents)


def test_flux_vae_codec_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing subfolder 'vae/'"):
        FluxVAECodec.from_pretrained(tmp_path)
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"'vae/' lacks \*\.safetensors"):
        FluxVAECodec.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        FluxVAECodec.from_pretrained(tmp_path / "nowhere")


# ------------------------------------------------------------------------------------------------------------
# Offline CLIP tokenizer
# ------------------------------------------------------------------------------------------------------------


def _openai_simple_tokenizer():
    """clip-anytorch's own SimpleTokenizer, loaded by path (its package __init__ pulls torchvision)."""
    path = clip_bpe_path().parent / "simple_tokenizer.py"
    spec = importlib.util.spec_from_file_location("_clip_simple_tokenizer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SimpleTokenizer()


def test_clip_tokenizer_matches_openai_simple_tokenizer(tmp_path):
    tok = build_clip_tokenizer(77)
    assert len(tok) == CLIP_VOCAB_SIZE
    simple = _openai_simple_tokenizer()
    texts = CAPTIONS + ["Make the CIRCLE green!", "remove   the square, then add a small star at the top-right."]
    from_files = write_clip_tokenizer_files(tmp_path / "tok", model_max_length=77)
    from transformers import CLIPTokenizer

    tok_files = CLIPTokenizer.from_pretrained(str(from_files))
    assert tok_files.model_max_length == 77
    for text in texts:
        ids = tok(text).input_ids
        assert ids[0] == 49406 and ids[-1] == 49407
        assert ids[1:-1] == simple.encode(text)
        assert tok_files(text).input_ids == ids


# ------------------------------------------------------------------------------------------------------------
# Builtin text encoder
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def builtin():
    return BuiltinTextEncoder(joint_attention_dim=24, pooled_projection_dim=20, max_length=32, seed=0)


def test_builtin_shapes_and_frozen(builtin):
    embeds, pooled = builtin(CAPTIONS)
    assert embeds.shape == (len(CAPTIONS), 32, 24) and pooled.shape == (len(CAPTIONS), 20)
    assert embeds.dtype == torch.float32 and torch.isfinite(embeds).all() and torch.isfinite(pooled).all()
    # features of unit order (what the transformer's context embedder expects)
    assert 0.3 < embeds.std().item() < 3 and 0.3 < pooled.std().item() < 3
    assert (builtin.joint_attention_dim, builtin.pooled_projection_dim, builtin.max_length) == (24, 20, 32)
    _assert_frozen(builtin)
    e1, p1 = builtin("a red circle")  # a single string is a batch of one
    assert e1.shape == (1, 32, 24) and p1.shape == (1, 20)
    e0, p0 = builtin([])
    assert e0.shape == (0, 32, 24) and p0.shape == (0, 20)
    empty_e, empty_p = builtin([""])  # the dropped caption of classifier-free training
    assert empty_e.shape == (1, 32, 24) and torch.isfinite(empty_p).all()


def test_builtin_identical_and_distinct_captions(builtin):
    embeds, pooled = builtin(CAPTIONS + CAPTIONS[:1])
    # identical captions -> identical embeddings (same batch, and alone vs in a batch)
    # (equal up to float summation order: CPU GEMM kernels may block rows of a batch differently)
    torch.testing.assert_close(embeds[0], embeds[-1], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(pooled[0], pooled[-1], rtol=1e-6, atol=1e-6)
    alone_e, alone_p = builtin([CAPTIONS[3]])
    torch.testing.assert_close(alone_e[0], embeds[3], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(alone_p[0], pooled[3], rtol=1e-5, atol=1e-5)
    # distinct captions -> distinct embeddings, including a one-word change and a word-order swap (0 vs 4)
    n = len(CAPTIONS)
    scale_e = embeds[:n].flatten(1).norm(dim=1).mean()
    scale_p = pooled[:n].norm(dim=1).mean()
    for i in range(n):
        for j in range(i + 1, n):
            assert (embeds[i] - embeds[j]).norm() > 0.05 * scale_e, (i, j)
            assert (pooled[i] - pooled[j]).norm() > 0.02 * scale_p, (i, j)
    # the changed word shows up strongly at its own position: "red" vs "blue" at token 4
    ids = builtin.tokenizer(CAPTIONS[:2]).input_ids
    pos = next(k for k, (a, b) in enumerate(zip(*ids)) if a != b)
    diff = (embeds[0] - embeds[1]).norm(dim=-1)
    assert diff[:pos].max() == 0  # causal: earlier tokens unaffected
    assert diff[pos] > 0.5 * embeds[0, pos].norm()


def test_builtin_word_identity_and_position_are_recoverable(builtin):
    """Word identity: a token's output state is nearest to states of the same word (nearest-centroid probe)."""
    tok = builtin.tokenizer
    ids = tok(CAPTIONS, padding="max_length", max_length=32, truncation=True, return_tensors="pt").input_ids
    embeds, _ = builtin(CAPTIONS)
    words = {tok.convert_tokens_to_ids(w + "</w>") for w in ("red", "blue", "green", "circle", "star")}
    states, labels = [], []
    for b in range(len(CAPTIONS)):
        for k in range(32):
            if int(ids[b, k]) in words:
                states.append(embeds[b, k])
                labels.append(int(ids[b, k]))
    states, labels = torch.stack(states), torch.tensor(labels)
    for i in range(len(labels)):  # leave-one-out nearest centroid
        others = torch.arange(len(labels)) != i
        cents = {
            w: states[others & (labels == w)].mean(0)
            for w in labels.unique().tolist()
            if (others & (labels == w)).any()
        }
        best = min(cents, key=lambda w: (states[i] - cents[w]).norm())
        assert best == int(labels[i])


def test_builtin_padding_and_truncation(builtin):
    tok = builtin.tokenizer
    long_a = " ".join(["a red circle at the top left"] * 10) + " and a blue star"
    long_b = " ".join(["a red circle at the top left"] * 10) + " and a green cross"
    assert len(tok(long_a).input_ids) > 32
    ids = tok([long_a, "a star"], padding="max_length", max_length=32, truncation=True).input_ids
    assert ids[0][-1] == 49407 and len(ids[0]) == 32  # truncated, still ends with <|endoftext|>
    star = tok.convert_tokens_to_ids("star</w>")
    assert ids[1][:4] == [49406, 320, star, 49407] and set(ids[1][3:]) == {49407}  # padded with <|endoftext|>
    embeds, pooled = builtin([long_a, long_b, "a star"])
    assert embeds.shape == (3, 32, 24)
    torch.testing.assert_close(embeds[0], embeds[1], rtol=0, atol=0)  # differ only past the truncation point
    torch.testing.assert_close(pooled[0], pooled[1], rtol=0, atol=0)


def test_builtin_is_a_function_of_the_seed(builtin):
    torch.manual_seed(1234)  # global RNG state must not matter
    again = BuiltinTextEncoder(24, 20, max_length=32, seed=0, tokenizer=builtin.tokenizer)
    for (name, a), (_, b) in zip(builtin.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name
    assert again.fingerprint() == builtin.fingerprint()
    other = BuiltinTextEncoder(24, 20, max_length=32, seed=1, tokenizer=builtin.tokenizer)
    assert not torch.equal(other.seq_proj.weight, builtin.seq_proj.weight)
    assert other.fingerprint() != builtin.fingerprint()


def test_builtin_eos_pooling_is_clip_pooler(builtin):
    enc = BuiltinTextEncoder(24, 20, max_length=32, seed=0, pooling="eos", tokenizer=builtin.tokenizer)
    tokens = builtin.tokenizer(CAPTIONS, padding="max_length", max_length=32, truncation=True, return_tensors="pt")
    ids = tokens.input_ids
    _, pooled = enc(CAPTIONS)
    torch.testing.assert_close(pooled, enc.pooled_proj(enc.text_model(input_ids=ids).pooler_output))
    with pytest.raises(ValueError, match="pooling"):
        BuiltinTextEncoder(24, 20, pooling="max", tokenizer=builtin.tokenizer)


def test_builtin_save_and_load(builtin, tmp_path):
    builtin.save_pretrained(tmp_path / "te")
    assert BuiltinTextEncoder.is_saved_in(tmp_path / "te")
    assert (tmp_path / "te" / "model.safetensors").is_file()
    loaded = BuiltinTextEncoder.from_pretrained(tmp_path / "te")
    assert loaded.config == builtin.config
    for (a, b) in zip(builtin(CAPTIONS), loaded(CAPTIONS)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert loaded.fingerprint() == builtin.fingerprint()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        (tmp_path / "te" / "model.safetensors").unlink()
        BuiltinTextEncoder.from_pretrained(tmp_path / "te")


def test_builtin_dtype(builtin):
    enc = BuiltinTextEncoder(24, 20, max_length=32, seed=0, tokenizer=builtin.tokenizer).to(torch.float64)
    embeds, pooled = enc(CAPTIONS[:2])
    assert embeds.dtype == pooled.dtype == torch.float64 and enc.dtype == torch.float64
    ref_e, ref_p = builtin(CAPTIONS[:2])
    torch.testing.assert_close(embeds.float(), ref_e, rtol=1e-4, atol=1e-4)
    e, p = builtin.encode(CAPTIONS[:1], dtype=torch.bfloat16)
    assert e.dtype == p.dtype == torch.bfloat16


# ------------------------------------------------------------------------------------------------------------
# FLUX text encoders: parity with FluxPipeline.encode_prompt
# ------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def flux_folder(tmp_path_factory):
    """A FLUX.1-layout folder of tiny random components, saved by stock diffusers, and the pipeline itself."""
    from lit_cologen.models.random_weights import save_random_flux_folder

    root = tmp_path_factory.mktemp("flux")
    pipe = save_random_flux_folder(root / "FLUX.1-tiny", seed=0)
    return root / "FLUX.1-tiny", pipe


def test_flux_text_encoders_match_encode_prompt(flux_folder):
    path, pipe = flux_folder
    text = FluxTextEncoders.from_pretrained(path, max_sequence_length=16)
    assert (text.joint_attention_dim, text.pooled_projection_dim, text.max_length) == (32, 32, 16)
    assert text.tokenizer_max_length == 77
    _assert_frozen(text)
    prompts = CAPTIONS[:3] + ["a red circle " * 12 + "and a blue star"]  # the last one is truncated by T5
    with torch.no_grad():
        ref_embeds, ref_pooled, _ = pipe.encode_prompt(prompts, device="cpu", max_sequence_length=16)
        embeds, pooled = text(prompts)
    assert embeds.shape == (4, 16, 32) and pooled.shape == (4, 32)
    torch.testing.assert_close(embeds, ref_embeds, rtol=0, atol=0)
    torch.testing.assert_close(pooled, ref_pooled, rtol=0, atol=0)
    # a separate T5 prompt (encode_prompt's prompt_2)
    with torch.no_grad():
        ref2, refp2, _ = pipe.encode_prompt(prompts[:2], prompt_2=prompts[2:4], device="cpu", max_sequence_length=16)
        e2, p2 = text(prompts[:2], prompts_2=prompts[2:4])
    torch.testing.assert_close(e2, ref2, rtol=0, atol=0)
    torch.testing.assert_close(p2, refp2, rtol=0, atol=0)


def test_flux_text_encoders_default_length_matches(flux_folder):
    path, pipe = flux_folder
    text = FluxTextEncoders.from_pretrained(path)  # default 512, like encode_prompt
    with torch.no_grad():
        ref_embeds, ref_pooled, _ = pipe.encode_prompt(CAPTIONS[:1], device="cpu")
        embeds, pooled = text(CAPTIONS[:1])
    assert embeds.shape == (1, 512, 32)
    torch.testing.assert_close(embeds, ref_embeds, rtol=0, atol=0)
    torch.testing.assert_close(pooled, ref_pooled, rtol=0, atol=0)


def test_build_components_flux(flux_folder):
    path, pipe = flux_folder
    codec, text = build_components(
        "flux-schnell", path, joint_attention_dim=32, pooled_projection_dim=32, max_sequence_length=8
    )
    assert isinstance(codec, FluxVAECodec) and isinstance(text, FluxTextEncoders)
    assert codec.factor == pipe.vae_scale_factor == 2 and codec.channels == 16
    assert text.max_length == 8
    _, text = build_components("flux-schnell", path)
    assert text.max_length == 256  # schnell default
    with pytest.raises(ValueError, match="joint_attention_dim=32.*expects 4096"):
        build_components("flux-dev", path, joint_attention_dim=4096, pooled_projection_dim=32)
    codec, text = build_components("flux-dev", path, dtype=torch.bfloat16, text_dtype=torch.float32)
    assert codec.dtype == torch.bfloat16 and text.dtype == torch.float32
    assert text.text_encoder.dtype == text.text_encoder_2.dtype == torch.float32


@pytest.mark.parametrize(
    ("remove", "expected"),
    [
        ("tokenizer_2", r"missing subfolder 'tokenizer_2/'"),
        ("text_encoder", r"missing subfolder 'text_encoder/'"),
        ("vae/diffusion_pytorch_model.safetensors", r"subfolder 'vae/' lacks \*\.safetensors"),
        ("tokenizer/tokenizer.json", r"subfolder 'tokenizer/' lacks tokenizer.json or vocab.json"),
    ],
)
def test_flux_folder_missing_parts_are_named(flux_folder, tmp_path, remove, expected):
    path, _ = flux_folder
    broken = tmp_path / "broken"
    shutil.copytree(path, broken)
    target = broken / remove
    if target.is_dir():
        shutil.rmtree(target)
    else:
        for f in target.parent.glob("vocab.json"):  # a CLIP tokenizer folder may hold both forms
            f.unlink()
        target.unlink()
    with pytest.raises(FileNotFoundError) as info:
        build_components("flux-dev", broken)
    message = str(info.value)
    assert str(broken) in message
    assert re.search(expected, message), message
    with pytest.raises(FileNotFoundError):
        check_flux_folder(broken)


def test_flux_preset_needs_a_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="pretrained_path"):
        build_components("flux-dev", None)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "absent")):
        build_components("flux-dev", tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="not a Hugging Face id in the local cache"):
        build_components("flux-dev", "nobody-here/FLUX.1-nothing")


# ------------------------------------------------------------------------------------------------------------
# Factory for the built-in presets
# ------------------------------------------------------------------------------------------------------------


def test_build_components_builtin(tmp_path, builtin):
    codec, text = build_components("tiny", None, joint_attention_dim=24, pooled_projection_dim=20)
    assert isinstance(codec, PixelShuffleCodec) and codec.factor == 2 and codec.channels == 12
    assert isinstance(text, BuiltinTextEncoder) and text.max_length == 48
    codec, text = build_components(
        "small", None, joint_attention_dim=24, pooled_projection_dim=20, codec_factor=4, max_sequence_length=32,
        text_encoder_kwargs={"width": 64, "layers": 2, "heads": 4, "seed": 0}, dtype=torch.float64,
        codec_device="cpu",
    )
    assert codec.channels == 48 and text.dtype == torch.float64 and text.max_length == 32
    with pytest.raises(ValueError, match="joint_attention_dim"):
        build_components("tiny", None)
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        build_components("huge", None, joint_attention_dim=24, pooled_projection_dim=20)
    # a pipeline folder holding a saved built-in encoder: loaded from there
    builtin.save_pretrained(tmp_path / "pipe" / "text_encoder")
    _, text = build_components("tiny", tmp_path / "pipe", joint_attention_dim=24, pooled_projection_dim=20)
    assert text.max_length == 32 and text.fingerprint() == builtin.fingerprint()
    with pytest.raises(ValueError, match="pooled_projection_dim=20"):
        build_components("tiny", tmp_path / "pipe", joint_attention_dim=24, pooled_projection_dim=16)


# ------------------------------------------------------------------------------------------------------------
# Embedding cache
# ------------------------------------------------------------------------------------------------------------


def test_text_embedding_cache_memory(builtin):
    cache = TextEmbeddingCache(builtin, max_items=3)
    e, p = cache(CAPTIONS[:2] + CAPTIONS[:1])  # duplicates are encoded once
    assert (cache.hits, cache.misses) == (0, 2) and len(cache) == 2
    ref_e, ref_p = builtin(CAPTIONS[:2] + CAPTIONS[:1])
    torch.testing.assert_close(e, ref_e, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(p, ref_p, rtol=1e-5, atol=1e-5)
    e2, p2 = cache(CAPTIONS[:2])
    assert (cache.hits, cache.misses) == (2, 2)
    assert torch.equal(e2, e[:2]) and torch.equal(p2, p[:2])
    cache(CAPTIONS[2:4])  # 4 distinct prompts > max_items: the least recently used (CAPTIONS[0]) goes
    assert len(cache) == 3 and CAPTIONS[0] not in cache and CAPTIONS[1] in cache
    cache(CAPTIONS[:1])
    assert cache.misses == 5
    e3, p3 = cache([])
    assert e3.shape == (0, 32, 24) and p3.shape == (0, 20)
    e4, _ = TextEmbeddingCache(builtin, dtype=torch.bfloat16)(CAPTIONS[:1])
    assert e4.dtype == torch.bfloat16


def test_text_embedding_cache_does_not_depend_on_the_batch_a_prompt_first_came_in(builtin):
    """A prompt's cached embedding is bit-identical whichever prompts shared its first batch (a resumed run's cold
    cache sees other batches than the uninterrupted run), and equals the prompt encoded on its own."""
    together, alone = TextEmbeddingCache(builtin), TextEmbeddingCache(builtin)
    e_all, p_all = together(CAPTIONS)
    for i, caption in enumerate(CAPTIONS):
        e1, p1 = alone([caption])
        assert torch.equal(e1[0], e_all[i]) and torch.equal(p1[0], p_all[i])
        ref_e, ref_p = builtin([caption])
        assert torch.equal(e1, ref_e) and torch.equal(p1, ref_p)


def test_text_embedding_cache_disk(builtin, tmp_path):
    first = TextEmbeddingCache(builtin, cache_dir=tmp_path)
    e, p = first(CAPTIONS)
    files = list(tmp_path.rglob("*.safetensors"))
    assert len(files) == len(CAPTIONS)
    assert {f.stem for f in files} == {TextEmbeddingCache.key(c) for c in CAPTIONS}
    second = TextEmbeddingCache(builtin, cache_dir=tmp_path)  # a fresh process would see the same folder
    e2, p2 = second(CAPTIONS)
    assert (second.disk_hits, second.misses, second.hits) == (len(CAPTIONS), 0, 0)
    assert torch.equal(e, e2) and torch.equal(p, p2)
    second(CAPTIONS[:1])
    assert second.hits == 1
    # another encoder gets its own fingerprint subfolder: no stale hits
    other = BuiltinTextEncoder(24, 20, max_length=32, seed=5, tokenizer=builtin.tokenizer)
    third = TextEmbeddingCache(other, cache_dir=tmp_path)
    e3, _ = third(CAPTIONS[:1])
    assert third.misses == 1 and third.disk_hits == 0 and not torch.equal(e3[0], e[0])
    # a corrupt file is a miss and gets rewritten
    (second.cache_dir / f"{TextEmbeddingCache.key(CAPTIONS[1])}.safetensors").write_bytes(b"junk")
    fourth = TextEmbeddingCache(builtin, cache_dir=tmp_path)
    e4, _ = fourth(CAPTIONS[1:2])
    assert fourth.misses == 1
    torch.testing.assert_close(e4[0], e[1], rtol=1e-5, atol=1e-5)


def test_encode_shards_with_a_flux_layout_folder(flux_folder, tmp_path):
    """`cologen data encode` through the FLUX VAE + CLIP/T5 of a (tiny) FLUX.1-layout folder."""
    from lit_cologen.data.decode import decode_raw
    from lit_cologen.data.encoded import load_latents, read_manifest
    from lit_cologen.data.examples import example_from_sample
    from lit_cologen.data.shards import SkipLog, iter_shard, write_shapes5_shards
    from lit_cologen.training.encode import encode_shards

    path, pipe = flux_folder
    write_shapes5_shards(tmp_path / "img", n_per_task=2, resolution=32, tasks=("edit",))
    summary = encode_shards([str(tmp_path / "img")], tmp_path / "lat", preset="flux-dev", pretrained_path=str(path),
                            resolution=32, device="cpu", progress=False)
    assert summary["samples"] == 2
    manifest = read_manifest(tmp_path / "lat")
    assert manifest["latent_channels"] == 16 and manifest["latent_side"] == 16  # the tiny VAE's factor is 2
    codec = FluxVAECodec.from_pretrained(path)
    skips = SkipLog(slots=1, shared=False)
    raw = next(iter_shard(str(sorted((tmp_path / "img").glob("*.tar"))[0]), skips))
    enc = next(iter_shard(str(sorted((tmp_path / "lat").glob("*.tar"))[0]), skips))
    target = example_from_sample(decode_raw(raw), 32, "center")["target"]
    want = codec.encode(target[None].float() / 127.5 - 1.0)[0]
    torch.testing.assert_close(load_latents(enc.members["latents.safetensors"])["target"], want, rtol=1e-5, atol=1e-5)
    text = FluxTextEncoders.from_pretrained(path)
    cache = TextEmbeddingCache(lambda: pytest.fail("the text encoders must not be needed"),
                               cache_dir=tmp_path / "lat" / "text_cache", fingerprint=manifest["text_fingerprint"])
    prompt = example_from_sample(decode_raw(raw), 32, "center")["prompt"]
    embeds, pooled = cache([prompt, ""])
    ref_embeds, ref_pooled = text([prompt, ""])
    torch.testing.assert_close(embeds, ref_embeds)
    torch.testing.assert_close(pooled, ref_pooled)


def test_training_a_flux_layout_step_on_encoded_shards(flux_folder, tmp_path):
    """The FLUX path of a training step (weights from a FLUX.1-layout folder) on encoded shards: the VAE and the
    CLIP / T5 encoders are never built."""
    import lightning as L

    from lit_cologen.data.shards import write_shapes5_shards
    from lit_cologen.training.config import load_step_config
    from lit_cologen.training.encode import encode_shards
    from lit_cologen.training.run import run_step

    path, _ = flux_folder
    write_shapes5_shards(tmp_path / "img", n_per_task=4, resolution=32, tasks=("edit",))
    encode_shards([str(tmp_path / "img")], tmp_path / "lat", preset="flux-schnell", pretrained_path=str(path),
                  resolution=32, device="cpu", progress=False)

    class Probe(L.Callback):
        def on_train_end(self, trainer, pl_module):
            self.loaded = dict(pl_module.frozen_components_loaded)
            self.loss = float(trainer.callback_metrics["train/loss"])

    probe = Probe()
    cfg = load_step_config(None, [
        "name=flux", f"output_dir={tmp_path / 'run'}", "model.preset=flux-schnell", f"model.pretrained_path={path}",
        "model.prw.rank=4", "data.source=shards", f"data.train_shards=[{tmp_path / 'lat'}]", "data.encoded=true",
        "data.tasks=[edit]", "data.resolution=32", "data.batch_size=2", "train.global_batch=2", "train.max_steps=2",
        "train.precision=32-true", "train.accelerator=cpu", "train.checkpoint_every=1", "train.log_every=1",
        "optim.warmup_steps=0", "loss.guidance=0.0",
    ])
    final = run_step(cfg, extra_callbacks=[probe], enable_progress=False)
    assert (final / "adapters.safetensors").is_file()
    assert probe.loaded == {"codec": False, "text": False} and math.isfinite(probe.loss)
