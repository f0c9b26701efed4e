"""TextEmbeddingCache: per-prompt embeddings of a text conditioner, in memory (LRU) and optionally on disk."""

from __future__ import annotations

import hashlib
import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from lit_cologen.models.text_encoders import TextConditioner, as_prompt_list
from lit_cologen.utils.atomic import atomic_path

logger = logging.getLogger(__name__)

DeviceLike = torch.device | str | int | None


class TextEmbeddingCache:
    """Per-prompt cache of a :class:`TextConditioner`'s outputs: an in-memory LRU, optionally backed by a folder.

    ``cache(prompts)`` returns the same ``(prompt_embeds (B, L, D), pooled (B, P))`` as ``text(prompts)``, but only
    the prompts not yet cached are encoded, each on its own (so an embedding never depends on which prompts
    shared its batch: a resumed run gets the uninterrupted run's embeddings). Entries are stored per prompt on CPU; with
    ``cache_dir``, each prompt is also written to ``cache_dir/<fingerprint[:16]>/<sha1(prompt)>.safetensors``
    (tensors ``prompt_embeds`` (L, D), ``pooled`` (P); the prompt in the metadata, checked on read), written
    atomically so several processes can share the folder. The fingerprint subfolder keeps embeddings of
    different encoders apart.

    Args:
        text: the conditioner (may live on another device than the training one), or a zero-argument callable that
            builds it: then the conditioner is built at the first miss only (``loaded`` tells whether it was), so a
            folder filled beforehand (`cologen data encode`) lets training run without the text encoders resident.
        max_items: in-memory LRU capacity (prompts); 0 disables the memory level.
        cache_dir: optional on-disk level.
        device: where returned tensors go (default: ``text.device``; the CPU while a lazy conditioner is unbuilt).
        dtype: dtype of the returned tensors (default: the conditioner's output dtype).
        fingerprint: the conditioner's :meth:`TextConditioner.fingerprint` when known (e.g. from an encoded-shard
            manifest), so that a lazy conditioner need not be built to find the folder.

    Attributes:
        hits, disk_hits, misses: counters (``hits`` counts memory hits only).
    """

    def __init__(
        self,
        text: TextConditioner | Callable[[], TextConditioner],
        *,
        max_items: int = 4096,
        cache_dir: str | os.PathLike | None = None,
        device: DeviceLike = None,
        dtype: torch.dtype | None = None,
        fingerprint: str | None = None,
    ) -> None:
        if isinstance(text, TextConditioner):
            self._text: TextConditioner | None = text
            self._factory: Callable[[], TextConditioner] | None = None
        elif callable(text):
            self._text, self._factory = None, text
        else:
            raise TypeError(f"text must be a TextConditioner or a callable building one, got {type(text).__name__}")
        self.max_items = int(max_items)
        self.device = device
        self.dtype = dtype
        self._memory: OrderedDict[str, tuple[Tensor, Tensor]] = OrderedDict()
        self.hits = self.disk_hits = self.misses = 0
        self._cache_root = None if cache_dir is None else Path(cache_dir)
        self._fingerprint = fingerprint
        self._cache_dir: Path | None = None

    @property
    def cache_dir(self) -> Path | None:
        """``cache_dir/<fingerprint[:16]>`` (created on first use; a lazy conditioner without a given fingerprint is
        built then, on first use, not when the cache is made), or None without an on-disk level."""
        if self._cache_root is not None and self._cache_dir is None:
            self._cache_dir = self._cache_root / (self._fingerprint or self.text.fingerprint())[:16]
            self._cache_dir.mkdir(parents=True, exist_ok=True)
        return self._cache_dir

    @property
    def text(self) -> TextConditioner:
        """The conditioner (built now if it was given as a callable and not built yet)."""
        if self._text is None:
            assert self._factory is not None
            logger.info("text-embedding cache: building the text conditioner (a prompt was not in the cache)")
            self._text = self._factory()
        return self._text

    @property
    def loaded(self) -> bool:
        """Whether the conditioner exists (always, unless it was given as a callable and never needed)."""
        return self._text is not None

    def __len__(self) -> int:
        return len(self._memory)

    def __contains__(self, prompt: str) -> bool:
        path = self._disk_path(prompt)
        return prompt in self._memory or (path is not None and path.is_file())

    def put(self, prompt: str, prompt_embeds: Tensor, pooled: Tensor) -> None:
        """Store precomputed embeddings of one prompt: prompt_embeds (L, D), pooled (P) (memory, and the folder
        when there is one); later calls with ``prompt`` return them without the conditioner."""
        if prompt_embeds.ndim != 2 or pooled.ndim != 1:
            raise ValueError(f"put expects prompt_embeds (L, D) and pooled (P), got {tuple(prompt_embeds.shape)} and "
                             f"{tuple(pooled.shape)}")
        entry = (prompt_embeds.detach().to("cpu").clone(), pooled.detach().to("cpu").clone())
        self._remember(prompt, entry)
        self._write_disk(prompt, entry)

    def clear(self) -> None:
        """Empty the memory level (the folder is left alone)."""
        self._memory.clear()

    @staticmethod
    def key(prompt: str) -> str:
        """sha1 hex digest of the UTF-8 prompt (the on-disk file name)."""
        return hashlib.sha1(prompt.encode("utf-8")).hexdigest()

    def _disk_path(self, prompt: str) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / f"{self.key(prompt)}.safetensors"

    def _remember(self, prompt: str, entry: tuple[Tensor, Tensor]) -> None:
        if self.max_items <= 0:
            return
        self._memory[prompt] = entry
        self._memory.move_to_end(prompt)
        while len(self._memory) > self.max_items:
            self._memory.popitem(last=False)

    def _read_disk(self, prompt: str) -> tuple[Tensor, Tensor] | None:
        path = self._disk_path(prompt)
        if path is None or not path.is_file():
            return None
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                if (f.metadata() or {}).get("prompt") != prompt:
                    return None
                return f.get_tensor("prompt_embeds"), f.get_tensor("pooled")
        except Exception:  # noqa: BLE001 - a truncated / foreign file is a miss, it gets rewritten
            return None

    def _write_disk(self, prompt: str, entry: tuple[Tensor, Tensor]) -> None:
        path = self._disk_path(prompt)
        if path is None:
            return
        from safetensors.torch import save_file

        with atomic_path(path) as tmp:
            save_file({"prompt_embeds": entry[0], "pooled": entry[1]}, str(tmp), metadata={"prompt": prompt})

    def __call__(self, prompts: Sequence[str] | str) -> tuple[Tensor, Tensor]:
        """prompts (B) -> prompt_embeds (B, L, D), pooled (B, P) on ``device``, equal to ``text(prompts)``."""
        prompts = as_prompt_list(prompts)
        entries: dict[str, tuple[Tensor, Tensor]] = {}
        todo: list[str] = []
        for prompt in dict.fromkeys(prompts):  # unique, in order
            if prompt in self._memory:
                self._memory.move_to_end(prompt)
                entries[prompt] = self._memory[prompt]
                self.hits += 1
                continue
            entry = self._read_disk(prompt)
            if entry is not None:
                self.disk_hits += 1
                entries[prompt] = entry
                self._remember(prompt, entry)
            else:
                todo.append(prompt)
        if todo:
            self.misses += len(todo)
            for prompt in todo:
                # one prompt per encoder call: a batched matmul's last bits depend on which rows share the batch
                # (measured: 2.4e-7 on the tiny encoder), so a prompt encoded with others would get another
                # embedding after a resume (cold cache, other batches) than in the uninterrupted run, and a router
                # near a tie could flip. Each prompt is encoded once per run (and once ever with a disk cache).
                with torch.no_grad():
                    embeds, pooled = self.text([prompt])
                entry = (embeds[0].detach().to("cpu").clone(), pooled[0].detach().to("cpu").clone())
                entries[prompt] = entry
                self._remember(prompt, entry)
                self._write_disk(prompt, entry)
        if not prompts:
            embeds, pooled = self.text._empty()
            return embeds.to(device=self.device, dtype=self.dtype), pooled.to(device=self.device, dtype=self.dtype)
        device = self.device if self.device is not None else (self.text.device if self.loaded else torch.device("cpu"))
        embeds = torch.stack([entries[p][0] for p in prompts]).to(device=device, dtype=self.dtype)
        pooled = torch.stack([entries[p][1] for p in prompts]).to(device=device, dtype=self.dtype)
        return embeds, pooled
