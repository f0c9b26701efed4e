"""Text conditioners: prompts -> (prompt_embeds (B, L, joint_attention_dim), pooled (B, pooled_projection_dim)).

:class:`TextConditioner` -- attributes ``joint_attention_dim``, ``pooled_projection_dim``, ``max_length`` (L).

- :class:`BuiltinTextEncoder` (tiny / small presets): CLIP's BPE tokenizer rebuilt offline from the vocabulary
  shipped in clip-anytorch, and a tiny ``CLIPTextModel`` whose weights are a pure function of a seed.
- :class:`FluxTextEncoders` (flux-dev / flux-schnell): FLUX's CLIP-L (pooled vector) + T5-XXL (sequence), the
  semantics of ``FluxPipeline.encode_prompt`` reproduced (a parity test checks it against stock diffusers).

Nothing here downloads: folders are local. Weights are read with safetensors only.
"""

from __future__ import annotations

import abc
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lit_cologen.models.frozen import FrozenComponent
from lit_cologen.models.tokenizer_assets import CLIP_BOS_TOKEN, CLIP_EOS_TOKEN, CLIP_VOCAB_SIZE, build_clip_tokenizer
from lit_cologen.models.weights import check_flux_folder, resolve_pretrained_path

logger = logging.getLogger(__name__)

DeviceLike = torch.device | str | int | None




class TextConditioner(FrozenComponent, abc.ABC):
    """Prompts -> (sequence embeddings, pooled embedding) for the MMDiT.

    Attributes:
        joint_attention_dim: D, width of the sequence embeddings (the transformer's ``joint_attention_dim``).
        pooled_projection_dim: P, width of the pooled vector (the transformer's ``pooled_projection_dim``).
        max_length: L, every prompt is padded / truncated to L tokens.
    """

    joint_attention_dim: int
    pooled_projection_dim: int
    max_length: int

    @abc.abstractmethod
    def forward(self, prompts: Sequence[str] | str) -> tuple[Tensor, Tensor]:
        """prompts (B strings) -> prompt_embeds (B, L, D), pooled (B, P), on ``self.device``."""

    @abc.abstractmethod
    def fingerprint(self) -> str:
        """A hex string that changes when the embeddings this conditioner produces would change (cache key)."""

    def encode(
        self, prompts: Sequence[str] | str, *, device: DeviceLike = None, dtype: torch.dtype | None = None
    ) -> tuple[Tensor, Tensor]:
        """``forward`` without autograd, results moved to ``device`` / ``dtype`` (e.g. the training device)."""
        with torch.no_grad():
            embeds, pooled = self(prompts)
        return embeds.to(device=device, dtype=dtype), pooled.to(device=device, dtype=dtype)

    def _empty(self) -> tuple[Tensor, Tensor]:
        return (
            torch.zeros(0, self.max_length, self.joint_attention_dim, device=self.device, dtype=self.dtype),
            torch.zeros(0, self.pooled_projection_dim, device=self.device, dtype=self.dtype),
        )


def as_prompt_list(prompts: Sequence[str] | str) -> list[str]:
    if isinstance(prompts, str):
        return [prompts]
    prompts = list(prompts)
    if not all(isinstance(p, str) for p in prompts):
        raise TypeError("prompts must be a string or a sequence of strings")
    return prompts


def _tokenize(tokenizer: Any, prompts: list[str], max_length: int) -> tuple[Tensor, list[int]]:
    """Pad / truncate to ``max_length`` as diffusers does; returns ids (B, max_length) and the truncated rows."""
    ids = tokenizer(
        prompts,
        padding="max_length",
        max_length=max_length,
        truncation=True,
        return_overflowing_tokens=False,
        return_length=False,
        return_tensors="pt",
    ).input_ids
    lengths = [len(x) for x in tokenizer(prompts, padding=False, truncation=False, verbose=False).input_ids]
    return ids, [i for i, n in enumerate(lengths) if n > max_length]


def _derived_seed(seed: int, name: str) -> int:
    """A 63-bit seed for parameter ``name``: independent of parameter order, construction order and global RNG."""
    return int.from_bytes(hashlib.sha1(f"{seed}:{name}".encode()).digest()[:8], "little") & ((1 << 63) - 1)


class BuiltinTextEncoder(TextConditioner):
    """A small frozen text encoder that needs no downloaded weights (tiny / small presets).

    * Tokenizer: ``transformers.CLIPTokenizer`` over CLIP's real BPE vocabulary (49,408 tokens), rebuilt in memory
      from the table that ships inside clip-anytorch (see :mod:`lit_cologen.models.tokenizer_assets`); ids equal
      those of OpenAI's CLIP tokenizer. Prompts are padded with ``<|endoftext|>`` / truncated to ``max_length``.
    * Encoder: ``transformers.CLIPTextModel`` (causal, ``width`` wide, ``layers`` deep) whose every weight is a
      pure function of ``seed`` and the parameter's name (see :meth:`reset_parameters`), so two processes build
      identical encoders with no file. Init keeps words readable: token embeddings N(0, 1), position embeddings
      N(0, 1), Q/K/V/fc1 variance-preserving N(0, 1/fan_in), and the residual branches (attention out-projection,
      fc2) scaled by ``residual_scale`` so each output state stays dominated by its own token + position while
      the causal attention mixes in its left context (word order).
    * Outputs: ``prompt_embeds = last_hidden_state @ W_seq`` (B, L, joint_attention_dim) and ``pooled =
      summary @ W_pool`` (B, pooled_projection_dim); ``W_seq``, ``W_pool`` are fixed seeded linears (N(0, 1/width),
      no bias), giving features of unit order. ``summary`` depends on ``pooling``:

      - ``"mean"`` (default): mean of the final states over the prompt's tokens, ``<|startoftext|>`` through the
        first ``<|endoftext|>`` (padding excluded). With random frozen weights this is far more informative
        than CLIP's pooler: on Shapes-5-like captions a linear probe reads the first object's colour and shape
        from it perfectly (background colour ~90 %), against 60-80 % from the end-token state, which is
        dominated by the end token's own embedding and position.
      - ``"eos"``: CLIP's ``pooler_output`` (the final state at the first ``<|endoftext|>``), as FLUX uses.

    Args:
        joint_attention_dim: D of the sequence output.
        pooled_projection_dim: P of the pooled output.
        max_length: L, tokens per prompt including ``<|startoftext|>`` / ``<|endoftext|>``.
        width, layers, heads: CLIPTextModel hidden size, depth, attention heads (MLP is 4 x width).
        seed: weight seed.
        residual_scale: multiplier on the init of the residual-branch output projections.
        pooling: ``"mean"`` or ``"eos"`` (see above).
        tokenizer: an already-built CLIP tokenizer (default: built from clip-anytorch's vocabulary).
    """

    CONFIG_NAME = "config.json"
    WEIGHTS_NAME = "model.safetensors"
    TOKENIZER_SUBFOLDER = "tokenizer"
    FORMAT = "lit_cologen.BuiltinTextEncoder"
    FORMAT_VERSION = 1

    def __init__(
        self,
        joint_attention_dim: int,
        pooled_projection_dim: int,
        max_length: int = 32,
        width: int = 64,
        layers: int = 2,
        heads: int = 4,
        seed: int = 0,
        residual_scale: float = 0.5,
        pooling: str = "mean",
        *,
        tokenizer: Any | None = None,
    ) -> None:
        super().__init__()
        from transformers import CLIPTextConfig, CLIPTextModel

        if max_length < 3:
            raise ValueError(f"max_length must be >= 3 (start, one token, end), got {max_length}")
        if pooling not in ("mean", "eos"):
            raise ValueError(f"pooling must be 'mean' or 'eos', got {pooling!r}")
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.joint_attention_dim = int(joint_attention_dim)
        self.pooled_projection_dim = int(pooled_projection_dim)
        self.max_length = int(max_length)
        self.config = {
            "joint_attention_dim": self.joint_attention_dim,
            "pooled_projection_dim": self.pooled_projection_dim,
            "max_length": self.max_length,
            "width": int(width),
            "layers": int(layers),
            "heads": int(heads),
            "seed": int(seed),
            "residual_scale": float(residual_scale),
            "pooling": pooling,
        }
        # a tokenizer passed in is used as is (max_length is always passed explicitly when tokenising)
        self.tokenizer = tokenizer if tokenizer is not None else build_clip_tokenizer(self.max_length)
        bos_id = self.tokenizer.convert_tokens_to_ids(CLIP_BOS_TOKEN)
        eos_id = self.tokenizer.convert_tokens_to_ids(CLIP_EOS_TOKEN)
        clip_config = CLIPTextConfig(
            vocab_size=CLIP_VOCAB_SIZE,
            hidden_size=int(width),
            intermediate_size=4 * int(width),
            projection_dim=int(width),
            num_hidden_layers=int(layers),
            num_attention_heads=int(heads),
            max_position_embeddings=self.max_length,
            hidden_act="quick_gelu",
            attention_dropout=0.0,
            bos_token_id=bos_id,
            eos_token_id=eos_id,  # pooled = state at the first <|endoftext|> (padding uses it too)
            pad_token_id=eos_id,
        )
        self.text_model = CLIPTextModel(clip_config)
        self.seq_proj = nn.Linear(int(width), self.joint_attention_dim, bias=False)
        self.pooled_proj = nn.Linear(int(width), self.pooled_projection_dim, bias=False)
        self.reset_parameters()
        self.freeze()
        self._warned_truncation = False

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Re-initialise every weight from ``seed``: each parameter from its own generator seeded by
        sha1(seed, name), drawn on CPU in float32, so the result does not depend on transformers' init code, the
        global RNG, the device or parameter order."""
        seed = self.config["seed"]
        residual_scale = self.config["residual_scale"]
        for name, param in self.named_parameters():
            gen = torch.Generator().manual_seed(_derived_seed(seed, name))
            leaf = name.rsplit(".", 1)[-1]
            if "layer_norm" in name or "layernorm" in name:
                value = torch.ones(param.shape) if leaf == "weight" else torch.zeros(param.shape)
            elif leaf == "bias":
                value = torch.zeros(param.shape)
            elif name.endswith("token_embedding.weight") or name.endswith("position_embedding.weight"):
                value = torch.randn(param.shape, generator=gen)
            elif param.ndim == 2:
                std = param.shape[1] ** -0.5
                if name.endswith("out_proj.weight") or name.endswith("fc2.weight"):
                    std *= residual_scale
                value = torch.randn(param.shape, generator=gen) * std
            else:  # pragma: no cover - CLIPTextModel has no other parameter kind
                raise RuntimeError(f"no init rule for parameter {name} {tuple(param.shape)}")
            param.copy_(value.to(param.dtype))

    def forward(self, prompts: Sequence[str] | str) -> tuple[Tensor, Tensor]:
        """prompts (B strings) -> prompt_embeds (B, max_length, joint_attention_dim), pooled (B,
        pooled_projection_dim), in ``self.dtype`` on ``self.device``."""
        prompts = as_prompt_list(prompts)
        if not prompts:
            return self._empty()
        ids, truncated = _tokenize(self.tokenizer, prompts, self.max_length)
        if truncated and not self._warned_truncation:
            self._warned_truncation = True
            logger.warning(
                "BuiltinTextEncoder: %d prompt(s) longer than max_length=%d tokens were truncated, e.g. %r "
                "(logged once per encoder)", len(truncated), self.max_length, prompts[truncated[0]]
            )
        ids = ids.to(self.device)
        out = self.text_model(input_ids=ids)
        hidden = out.last_hidden_state  # (B, L, width)
        if self.config["pooling"] == "eos":
            summary = out.pooler_output  # (B, width)
        else:
            eos_pos = (ids == self.text_model.config.eos_token_id).int().argmax(dim=1)  # (B,) first end token
            mask = torch.arange(ids.shape[1], device=ids.device)[None, :] <= eos_pos[:, None]  # (B, L)
            mask = mask.to(hidden.dtype)[..., None]
            summary = (hidden * mask).sum(dim=1) / mask.sum(dim=1)
        return self.seq_proj(hidden), self.pooled_proj(summary)

    def fingerprint(self) -> str:
        """sha1 over the config and every weight's bytes (a few M parameters: milliseconds)."""
        h = hashlib.sha1(json.dumps(self.config, sort_keys=True).encode())
        for name, tensor in sorted(self.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return h.hexdigest()

    # -- persistence ------------------------------------------------------------------------------------------

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``config.json``, ``model.safetensors`` (float32) and ``tokenizer/`` into ``directory``."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {"format": self.FORMAT, "format_version": self.FORMAT_VERSION, **self.config}
        (directory / self.CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(directory / self.WEIGHTS_NAME), metadata={"format": self.FORMAT})
        self.tokenizer.save_pretrained(str(directory / self.TOKENIZER_SUBFOLDER))
        return directory

    @classmethod
    def is_saved_in(cls, directory: str | os.PathLike) -> bool:
        """True if ``directory`` holds a :meth:`save_pretrained` output."""
        config_path = Path(directory) / cls.CONFIG_NAME
        if not config_path.is_file():
            return False
        try:
            return json.loads(config_path.read_text(encoding="utf-8")).get("format") == cls.FORMAT
        except (ValueError, OSError):
            return False

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> "BuiltinTextEncoder":
        """Load a :meth:`save_pretrained` folder (weights from safetensors, strict; tokenizer from ``tokenizer/``
        when present, else rebuilt from clip-anytorch)."""
        from safetensors.torch import load_file
        from transformers import CLIPTokenizer

        directory = Path(directory)
        missing = [n for n in (cls.CONFIG_NAME, cls.WEIGHTS_NAME) if not (directory / n).is_file()]
        if not directory.is_dir():
            raise FileNotFoundError(f"BuiltinTextEncoder folder {directory} does not exist")
        if missing:
            raise FileNotFoundError(f"BuiltinTextEncoder folder {directory}: missing {', '.join(missing)}")
        config = json.loads((directory / cls.CONFIG_NAME).read_text(encoding="utf-8"))
        if config.pop("format", None) != cls.FORMAT:
            raise ValueError(f"{directory / cls.CONFIG_NAME} is not a {cls.FORMAT} config")
        version = config.pop("format_version", None)
        if version != cls.FORMAT_VERSION:
            raise ValueError(f"{directory}: unsupported format_version {version} (expected {cls.FORMAT_VERSION})")
        tok_dir = directory / cls.TOKENIZER_SUBFOLDER
        tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir)) if tok_dir.is_dir() else None
        encoder = cls(**config, tokenizer=tokenizer)
        state = load_file(str(directory / cls.WEIGHTS_NAME))
        encoder.load_state_dict(state, strict=True)
        return encoder

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config.items())


class FluxTextEncoders(TextConditioner):
    """FLUX.1's text conditioning: CLIP-L pooled vector + T5-XXL sequence, as ``FluxPipeline.encode_prompt``.

    * pooled (B, 768): ``tokenizer`` pads / truncates to ``tokenizer.model_max_length`` (77), ``text_encoder``
      (``CLIPTextModel``) runs on the ids (no attention mask), its ``pooler_output`` is cast to the CLIP dtype.
    * prompt_embeds (B, max_sequence_length, 4096): ``tokenizer_2`` (T5) pads / truncates to
      ``max_sequence_length`` (512 for dev, 256 for schnell), ``text_encoder_2`` (``T5EncoderModel``) runs on the
      ids (no attention mask), its last hidden state is cast to the T5 dtype.

    Both outputs are returned on ``self.device``. ``prompts_2`` (optional) feeds T5 with different text, like
    ``encode_prompt(prompt_2=...)``. Truncation is logged once per instance.
    """

    def __init__(
        self,
        text_encoder: nn.Module,
        tokenizer: Any,
        text_encoder_2: nn.Module,
        tokenizer_2: Any,
        *,
        max_sequence_length: int = 512,
    ) -> None:
        super().__init__()
        self.text_encoder = text_encoder
        self.text_encoder_2 = text_encoder_2
        self.tokenizer = tokenizer
        self.tokenizer_2 = tokenizer_2
        self.tokenizer_max_length = int(getattr(tokenizer, "model_max_length", 77) or 77)
        if self.tokenizer_max_length > 10_000:  # tokenizer saved without a max length (transformers' sentinel)
            self.tokenizer_max_length = 77
        self.max_length = int(max_sequence_length)
        self.joint_attention_dim = int(text_encoder_2.config.d_model)
        self.pooled_projection_dim = int(text_encoder.config.hidden_size)
        p = next(text_encoder_2.parameters())
        self._anchor = self._anchor.to(device=p.device, dtype=p.dtype)
        self._warned_truncation: set[str] = set()
        self.freeze()

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        *,
        max_sequence_length: int = 512,
        dtype: torch.dtype | None = None,
    ) -> "FluxTextEncoders":
        """Load from a FLUX.1-layout folder (``text_encoder``, ``tokenizer``, ``text_encoder_2``, ``tokenizer_2``)
        or a cached HF id. Safetensors only.

        Raises:
            FileNotFoundError: naming the folder and each missing subfolder / file.
        """
        from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel, T5TokenizerFast

        root = resolve_pretrained_path(path)
        check_flux_folder(root, parts=("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2"))
        kwargs: dict[str, Any] = {"use_safetensors": True}
        if dtype is not None:
            kwargs["dtype"] = dtype
        text_encoder = CLIPTextModel.from_pretrained(str(root), subfolder="text_encoder", **kwargs)
        text_encoder_2 = T5EncoderModel.from_pretrained(str(root), subfolder="text_encoder_2", **kwargs)
        tokenizer = CLIPTokenizer.from_pretrained(str(root), subfolder="tokenizer")
        tokenizer_2 = T5TokenizerFast.from_pretrained(str(root), subfolder="tokenizer_2")
        return cls(text_encoder, tokenizer, text_encoder_2, tokenizer_2, max_sequence_length=max_sequence_length)

    def _warn_truncated(self, which: str, prompts: list[str], rows: list[int], limit: int) -> None:
        if rows and which not in self._warned_truncation:
            self._warned_truncation.add(which)
            logger.warning(
                "FluxTextEncoders: %d prompt(s) longer than %d %s tokens were truncated, e.g. %r (logged once)",
                len(rows), limit, which, prompts[rows[0]],
            )

    def pooled_embeds(self, prompts: Sequence[str] | str) -> Tensor:
        """prompts (B) -> CLIP pooled output (B, hidden_size) in the CLIP dtype, on ``self.device``."""
        prompts = as_prompt_list(prompts)
        ids, truncated = _tokenize(self.tokenizer, prompts, self.tokenizer_max_length)
        self._warn_truncated("CLIP", prompts, truncated, self.tokenizer_max_length)
        device = next(self.text_encoder.parameters()).device
        out = self.text_encoder(ids.to(device), output_hidden_states=False)
        return out.pooler_output.to(dtype=self.text_encoder.dtype, device=self.device)

    def sequence_embeds(self, prompts: Sequence[str] | str) -> Tensor:
        """prompts (B) -> T5 last hidden state (B, max_sequence_length, d_model) in the T5 dtype."""
        prompts = as_prompt_list(prompts)
        ids, truncated = _tokenize(self.tokenizer_2, prompts, self.max_length)
        self._warn_truncated("T5", prompts, truncated, self.max_length)
        device = next(self.text_encoder_2.parameters()).device
        out = self.text_encoder_2(ids.to(device), output_hidden_states=False)[0]
        return out.to(dtype=self.text_encoder_2.dtype, device=self.device)

    def forward(
        self, prompts: Sequence[str] | str, prompts_2: Sequence[str] | str | None = None
    ) -> tuple[Tensor, Tensor]:
        """prompts (B) -> prompt_embeds (B, max_sequence_length, 4096), pooled (B, 768) (FLUX.1 sizes)."""
        prompts = as_prompt_list(prompts)
        if not prompts:
            return self._empty()
        prompts_2 = prompts if prompts_2 is None else as_prompt_list(prompts_2)
        if len(prompts_2) != len(prompts):
            raise ValueError(f"prompts_2 has {len(prompts_2)} entries for {len(prompts)} prompts")
        pooled = self.pooled_embeds(prompts)
        return self.sequence_embeds(prompts_2), pooled

    def fingerprint(self) -> str:
        """sha1 over both model configs, both tokenizers' identity and lengths (weights are not hashed: T5-XXL is
        ~9 GB; the configs' ``_name_or_path`` tells folders apart)."""
        parts = {
            "clip": self.text_encoder.config.to_dict(),
            "t5": self.text_encoder_2.config.to_dict(),
            "tokenizer": [type(self.tokenizer).__name__, len(self.tokenizer), self.tokenizer_max_length],
            "tokenizer_2": [type(self.tokenizer_2).__name__, len(self.tokenizer_2), self.max_length],
            "dtype": [str(self.text_encoder.dtype), str(self.text_encoder_2.dtype)],
        }
        for cfg in (parts["clip"], parts["t5"]):
            for key in ("transformers_version", "dtype", "torch_dtype"):
                cfg.pop(key, None)
        return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
