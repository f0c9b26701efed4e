"""Offline tokenizer assets: the CLIP BPE vocabulary that ships inside ``clip-anytorch``.

``clip-anytorch`` carries OpenAI's byte-pair-encoding table (``clip/bpe_simple_vocab_16e6.txt.gz``). From it we
rebuild, with no download, exactly the vocabulary that Hugging Face's ``openai/clip-vit-*`` tokenizers use
(49,408 entries: 256 byte symbols, the same 256 with the ``</w>`` end-of-word suffix, 48,894 merges,
``<|startoftext|>`` = 49406 and ``<|endoftext|>`` = 49407), and wrap it in a ``transformers.CLIPTokenizer`` (the
Rust ``tokenizers`` backend in transformers 5).

Why in memory rather than files in a cache folder: nothing is written at import or build time, so several
processes (DDP ranks, dataloader workers) can build the tokenizer at once with no race on a shared cache
directory and no stale files; parsing the 1.3 MB table takes a fraction of a second and is memoised per process.
``write_clip_tokenizer_files`` still writes ``vocab.json`` + ``merges.txt`` (the layout of a Hugging Face CLIP
tokenizer folder) for code that wants files.

The package is located with ``importlib.util.find_spec`` so the ``clip`` package itself (which imports
``pkg_resources`` and torchvision) is never imported.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import json
from pathlib import Path

__all__ = [
    "CLIP_VOCAB_SIZE",
    "CLIP_BOS_TOKEN",
    "CLIP_EOS_TOKEN",
    "clip_bpe_path",
    "clip_vocab_and_merges",
    "build_clip_tokenizer",
    "write_clip_tokenizer_files",
]

CLIP_VOCAB_SIZE = 49408
CLIP_BOS_TOKEN = "<|startoftext|>"
CLIP_EOS_TOKEN = "<|endoftext|>"
_BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
_NUM_MERGES = 49152 - 256 - 2  # as in clip.simple_tokenizer.SimpleTokenizer


def clip_bpe_path() -> Path:
    """Path of ``bpe_simple_vocab_16e6.txt.gz`` inside the installed ``clip-anytorch`` (the package is not imported).

    Raises:
        FileNotFoundError: clip-anytorch is not installed, or its BPE file is missing.
    """
    spec = importlib.util.find_spec("clip")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the CLIP BPE vocabulary ({_BPE_FILE}) ships with the 'clip-anytorch' package, which is not installed"
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / _BPE_FILE
        if path.is_file():
            return path
    locations = list(spec.submodule_search_locations)
    raise FileNotFoundError(f"{_BPE_FILE} not found in the installed 'clip' package ({locations})")


@functools.lru_cache(maxsize=1)
def _bytes_to_unicode() -> tuple[str, ...]:
    """GPT-2 / CLIP reversible byte -> printable unicode table, in CLIP's vocabulary order (256 symbols)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return tuple(chr(c) for c in cs)


@functools.lru_cache(maxsize=1)
def clip_vocab_and_merges() -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    """CLIP's BPE vocabulary and merge list, rebuilt from clip-anytorch's file (memoised; treat as read-only).

    Returns:
        vocab: token -> id, 49,408 entries, identical to ``openai/clip-vit-large-patch14``'s ``vocab.json``.
        merges: 48,894 merge pairs in rank order (``merges.txt`` without its ``#version`` header).
    """
    lines = gzip.decompress(clip_bpe_path().read_bytes()).decode("utf-8").split("\n")
    merges = tuple(tuple(line.split()) for line in lines[1 : _NUM_MERGES + 1])
    symbols = list(_bytes_to_unicode())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [CLIP_BOS_TOKEN, CLIP_EOS_TOKEN]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != CLIP_VOCAB_SIZE or any(len(m) != 2 for m in merges):
        raise ValueError(f"unexpected CLIP BPE table in {clip_bpe_path()}: {len(vocab)} tokens")
    return vocab, merges  # type: ignore[return-value]


def build_clip_tokenizer(model_max_length: int = 77):
    """A ``transformers.CLIPTokenizer`` over CLIP's vocabulary, built in memory (no files, no download).

    Encoding: lower-cased, ``<|startoftext|> ... <|endoftext|>``, padded with ``<|endoftext|>`` (id 49407), like
    the tokenizer in FLUX's ``tokenizer/`` folder.
    """
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab_and_merges()
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=model_max_length)


def write_clip_tokenizer_files(directory: str | Path, model_max_length: int = 77) -> Path:
    """Write ``vocab.json``, ``merges.txt`` and ``tokenizer_config.json`` (Hugging Face CLIP tokenizer layout).

    Returns the directory; ``CLIPTokenizer.from_pretrained(directory)`` loads it (max length ``model_max_length``).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_vocab_and_merges()
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (directory / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n", encoding="utf-8"
    )
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": model_max_length,
        "bos_token": CLIP_BOS_TOKEN,
        "eos_token": CLIP_EOS_TOKEN,
        "unk_token": CLIP_EOS_TOKEN,
        "pad_token": CLIP_EOS_TOKEN,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return directory
