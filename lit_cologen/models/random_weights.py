"""Random-init weights in the published FLUX.1 folder layout, for dry runs and tests without a 30 GB download.

``save_random_flux_folder(out)`` writes what ``FluxPipeline.save_pretrained`` writes for FLUX.1-dev
(``model_index.json``, ``transformer/``, ``vae/``, ``text_encoder/`` (CLIP), ``text_encoder_2/`` (T5),
``tokenizer/``, ``tokenizer_2/``, ``scheduler/``), with stock diffusers / transformers classes at tiny sizes, so
every loading path of the suite (``--pretrained``, ``--base``, ``cologen data encode``) runs on it exactly as on the
real folder. A ``random_init.json`` marker in the folder says it is not FLUX.1's weights.
"""

from __future__ import annotations

import json
from pathlib import Path

from .tokenizer_assets import CLIP_VOCAB_SIZE, write_clip_tokenizer_files

#: The marker file a random-init weights folder carries (the random-init scorer backbones carry it too).
RANDOM_INIT_MARKER = "random_init.json"

#: Words of the tiny T5 tokenizer's vocabulary (the Shapes-5 captions and instructions tokenize into them).
T5_WORDS: tuple[str, ...] = tuple((
    "a large small red blue green yellow purple circle star square cross at the top left right center bottom "
    "and on striped checker solid background , make remove"
).split())


def tiny_t5_tokenizer():
    """A ``T5TokenizerFast`` over ``T5_WORDS`` plus single characters (no download)."""
    from transformers import T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [("▁" + w, -3.0 - 0.01 * i) for i, w in enumerate(T5_WORDS)]
    vocab += [(c, -10.0) for c in "abcdefghijklmnopqrstuvwxyz,.!-"]
    return T5TokenizerFast(vocab=vocab, extra_ids=4)


def tiny_flux_vae(block_out_channels: tuple[int, ...] = (8, 16, 16)):
    """A tiny ``AutoencoderKL`` with FLUX.1's latent interface: 16 latent channels, its scaling / shift factors."""
    from diffusers import AutoencoderKL

    n = len(block_out_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=tuple(block_out_channels), layers_per_block=1,
        latent_channels=16, norm_num_groups=4, sample_size=32, scaling_factor=0.3611, shift_factor=0.1159,
        use_quant_conv=False, use_post_quant_conv=False,
    ).eval()


def build_random_flux_pipeline(seed: int = 0):
    """A ``FluxPipeline`` of tiny random components (CLIP + T5 text encoders, VAE, one double and one single block)."""
    import tempfile

    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel

    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = CLIPTokenizer.from_pretrained(str(write_clip_tokenizer_files(Path(tmp), model_max_length=77)))
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=CLIP_VOCAB_SIZE, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, projection_dim=32,
        eos_token_id=2,  # as in FLUX.1's text_encoder/config.json (legacy: pool at argmax id)
    )).eval()
    tokenizer_2 = tiny_t5_tokenizer()
    text_encoder_2 = T5EncoderModel(T5Config(
        vocab_size=len(tokenizer_2), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=16, feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
    )).eval()
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=(4, 6, 6),
    )
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=tiny_flux_vae((8, 16)), text_encoder=text_encoder,
        tokenizer=tokenizer, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, transformer=transformer,
    )


def save_random_flux_folder(out: str | Path, seed: int = 0):
    """Write a random-init FLUX.1-dev-layout folder to ``out`` (see the module docstring); returns the pipeline."""
    out = Path(out)
    pipe = build_random_flux_pipeline(seed)
    pipe.save_pretrained(str(out))
    (out / RANDOM_INIT_MARKER).write_text(json.dumps(
        {"random_init": True, "layout": "FLUX.1-dev", "seed": seed,
         "made_by": "lit_cologen.models.random_weights.save_random_flux_folder"}, indent=2))
    return pipe


__all__ = ["RANDOM_INIT_MARKER", "T5_WORDS", "build_random_flux_pipeline", "save_random_flux_folder",
           "tiny_flux_vae", "tiny_t5_tokenizer"]
