"""`cologen data encode`: image shards -> encoded shards (VAE latents) + a filled text-embedding cache.

    cologen data encode data/shards/edit --out data/encoded/edit-512 --preset flux-dev \\
        --pretrained /models/FLUX.1-dev --resolution 512
    # then train with:  data.train_shards=[data/encoded/edit-512] data.encoded=true

Every input shard becomes an encoded shard of the same name in ``--out`` (format: data/encoded.py): images are
resized + centre-cropped to ``--resolution`` exactly as the loader does, encoded by the preset's codec and stored
as latents (with ``buckets`` (``--buckets auto``, as ``data.buckets``), each sample at the bucket nearest its
target's aspect ratio, exactly as the loader fits it: the latent shape (C, h / f, w / f) tells the bucket, and the
manifest lists the buckets); each formatted prompt (and the empty prompt, for text dropout) is encoded once into
``--out/text_cache``. Finished shards are listed in ``--out/index.json`` and skipped when the command is run
again (resumable); a shard is written to a temporary file and renamed when complete. Bad samples are skipped and
reported (shard + key), like in training.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import webdataset as wds

from lit_cologen.data.buckets import DEFAULT_STEP, Bucket, nearest_bucket, parse_buckets, resolve_buckets
from lit_cologen.data.decode import READ_MEMBERS, SkipSample, decode_raw
from lit_cologen.data.encoded import LATENTS_MEMBER, TEXT_CACHE_DIR, read_manifest, save_latents, write_manifest
from lit_cologen.data.examples import example_from_sample
from lit_cologen.data.shards import INDEX_NAME, ShardInfo, SkipLog, expand_shards, iter_shard, read_index, update_index
from lit_cologen.models.factory import build_codec, build_text_conditioner
from lit_cologen.models.presets import get_preset
from lit_cologen.models.text_cache import TextEmbeddingCache
from lit_cologen.utils.dtypes import dtype_from_name

logger = logging.getLogger(__name__)

#: manifest fields that must agree when encoding into a folder that already holds encoded shards
_MUST_MATCH = ("preset", "resolution", "latent_side", "latent_channels", "text_fingerprint", "buckets")


def _text_dims(preset_name: str, pretrained_path: str | None) -> tuple[int, int]:
    """(joint_attention_dim, pooled_projection_dim) of the transformer that will train on the encoded shards: from
    the weights folder's transformer config when there is one (smaller FLUX-layout folders are allowed), else the
    preset's."""
    preset = get_preset(preset_name)
    if pretrained_path is not None and not preset.builtin_components:
        from diffusers import FluxTransformer2DModel

        from lit_cologen.models.weights import resolve_pretrained_path

        root = resolve_pretrained_path(pretrained_path)
        folder = root / "transformer" if (root / "transformer" / "config.json").is_file() else root
        config = FluxTransformer2DModel.load_config(str(folder))
        return config["joint_attention_dim"], config["pooled_projection_dim"]
    return preset.transformer["joint_attention_dim"], preset.transformer["pooled_projection_dim"]


def _encode_images(codec, images: list[torch.Tensor]) -> list[torch.Tensor]:
    """uint8 (3, H, W) images (sizes may differ: one codec call per size) -> latents (C, H / f, W / f) on the CPU,
    in the codec's dtype, in the input order."""
    out: list[torch.Tensor | None] = [None] * len(images)
    by_size: dict[tuple[int, ...], list[int]] = {}
    for i, im in enumerate(images):
        by_size.setdefault(tuple(im.shape), []).append(i)
    for idx in by_size.values():
        x = torch.stack([images[i] for i in idx]).to(codec.device, torch.float32).div_(127.5).sub_(1.0)
        with torch.no_grad():
            lat = codec.encode(x.to(codec.dtype)).cpu()
        for j, i in enumerate(idx):
            out[i] = lat[j]
    return out  # type: ignore[return-value]


def encode_shards(
    shard_specs: Sequence[str],
    out_dir: str | Path,
    *,
    preset: str,
    resolution: int,
    pretrained_path: str | None = None,
    batch_size: int = 16,
    device: str | None = None,
    dtype: torch.dtype | None = None,
    progress: bool = True,
    buckets: Any = None,
    bucket_step: int = DEFAULT_STEP,
) -> dict[str, Any]:
    """Encode every shard of ``shard_specs`` into ``out_dir``; returns a summary dict.

    ``buckets`` / ``bucket_step``: as ``data.buckets`` / ``data.bucket_step`` (None: square ``resolution``; "auto" or
    [[h, w], ...]: each sample at its bucket); training must then use the same ``data.buckets``.

    Returns:
        {"shards_written", "shards_skipped" (already done), "samples", "prompts", "skipped" (bad input counts),
        "seconds", "manifest"}.
    Raises:
        FileNotFoundError: no shard matches. ValueError: ``out_dir`` holds shards encoded with other settings.
    """
    from tqdm import tqdm

    urls = expand_shards(list(shard_specs))
    if not urls:
        raise FileNotFoundError(f"no shards found for {list(shard_specs)}")
    names = [u.rsplit("/", 1)[-1] for u in urls]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"shards from different folders share file names {dupes[:3]}: encode each folder into its own --out")
    started = time.time()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype is None and not get_preset(preset).builtin_components:
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    bucket_list = resolve_buckets(buckets, resolution, bucket_step)  # ConfigError naming data.buckets[i]
    codec = build_codec(preset, pretrained_path, device=device, dtype=dtype)
    if resolution % (codec.factor * 2):  # before the (large) text encoders are loaded
        raise ValueError(f"--resolution {resolution} is not a multiple of {codec.factor * 2} (codec factor x 2x2 patches)")
    for h, w in bucket_list or []:
        if h % (codec.factor * 2) or w % (codec.factor * 2):
            raise ValueError(f"bucket {h}x{w} is not a multiple of {codec.factor * 2} (codec factor x 2x2 patches)")
    joint, pooled_dim = _text_dims(preset, pretrained_path)
    text = build_text_conditioner(preset, pretrained_path, joint_attention_dim=joint, pooled_projection_dim=pooled_dim,
                                  max_sequence_length=get_preset(preset).text_max_length, device=device, dtype=dtype)
    manifest = {
        "preset": preset, "pretrained_path": None if pretrained_path is None else str(pretrained_path),
        "resolution": int(resolution), "codec_factor": codec.factor, "latent_side": resolution // codec.factor,
        "latent_channels": codec.channels, "latent_dtype": str(codec.dtype).replace("torch.", ""),
        "text_fingerprint": text.fingerprint(), "text_cache": TEXT_CACHE_DIR, "crop": "center",
    }
    if bucket_list is not None:  # square manifests stay as they were (no "buckets" key)
        manifest.update(buckets=[list(b) for b in bucket_list], bucket_step=int(bucket_step), latent_side=None)
    if (out_dir / "encoded.json").exists():
        old = read_manifest(out_dir)
        diff = {k: (old.get(k), manifest.get(k)) for k in _MUST_MATCH if old.get(k) != manifest.get(k)}
        if diff:
            raise ValueError(f"{out_dir} holds shards encoded with other settings {diff} (old, new): use another --out")
    write_manifest(out_dir, manifest)
    cache = TextEmbeddingCache(text, cache_dir=out_dir / TEXT_CACHE_DIR, device="cpu")
    cache([""])  # text dropout trains on the empty prompt

    done = set(read_index(out_dir / INDEX_NAME)["shards"]) if (out_dir / INDEX_NAME).exists() else set()
    skips = SkipLog(slots=1, shared=False)
    written = skipped_shards = samples = 0
    prompts_seen: set[str] = set()
    bar = tqdm(urls, desc="encode", unit="shard", disable=not progress)
    for url, name in zip(bar, names):
        if name in done and (out_dir / name).exists():
            skipped_shards += 1
            continue
        info, n = _encode_one(url, out_dir / name, codec, cache, resolution, batch_size, skips, prompts_seen,
                              bucket_list)
        update_index(out_dir, {name: info}, {"encoded": {"source": [str(s) for s in shard_specs]}})
        written += 1
        samples += n
        bar.set_postfix(samples=samples, prompts=len(prompts_seen))
    return {
        "shards_written": written, "shards_skipped": skipped_shards, "samples": samples,
        "prompts": len(prompts_seen), "skipped": skips.summary(), "seconds": round(time.time() - started, 2),
        "manifest": manifest,
    }


def _encode_one(url: str, final: Path, codec, cache: TextEmbeddingCache, resolution: int, batch_size: int,
                skips: SkipLog, prompts_seen: set[str], buckets: list[Bucket] | None = None) -> tuple[ShardInfo, int]:
    """Encode one shard into ``final`` (temporary file + rename); returns (its index info, samples written).
    ``buckets``: each sample at the bucket nearest its target's aspect ratio (None: ``resolution`` x ``resolution``)."""
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    info = ShardInfo()
    pending: list[tuple[dict[str, bytes], dict[str, Any]]] = []

    def flush(tar: wds.TarWriter) -> None:
        if not pending:
            return
        targets = _encode_images(codec, [e["target"] for _, e in pending])
        sources = _encode_images(codec, [e["source"] for _, e in pending])
        new_prompts = [e["prompt"] for _, e in pending if e["prompt"] not in prompts_seen]
        if new_prompts:
            cache(list(dict.fromkeys(new_prompts)))
            prompts_seen.update(new_prompts)
        for i, (members, example) in enumerate(pending):
            members[LATENTS_MEMBER] = save_latents(targets[i], sources[i])
            tar.write(members)
            info.samples += 1
            info.tasks[example["task"]] = info.tasks.get(example["task"], 0) + 1
        pending.clear()

    try:
        with open(tmp, "wb") as f:
            tar = wds.TarWriter(f, encoder=False, mtime=0)
            for raw in iter_shard(url, skips, select=READ_MEMBERS.__contains__):
                try:
                    sample = decode_raw(raw)
                    size = resolution if buckets is None else nearest_bucket(buckets, *sample.target.size)
                    example = example_from_sample(sample, size, "center")
                except SkipSample as exn:
                    skips.record(exn.kind, raw.shard, raw.key, str(exn))
                    continue
                members = {"__key__": raw.key}
                for m in ("task.txt", "prompt.txt", "cond_type.txt", "meta.json"):
                    if m in raw.members:
                        members[m] = raw.members[m]
                pending.append((members, example))
                if len(pending) >= batch_size:
                    flush(tar)
            flush(tar)
            tar.close()
            f.flush()
            os.fsync(f.fileno())
        info.bytes = tmp.stat().st_size
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
    return info, info.samples


def _cmd_encode(args: argparse.Namespace) -> int:
    dtype = dtype_from_name(args.dtype)  # None stays None: encode_shards picks the default
    buckets = parse_buckets(getattr(args, "buckets", None))  # --buckets auto | HxW,HxW,...
    step = getattr(args, "bucket_step", None) or DEFAULT_STEP
    summary = encode_shards(args.shards, args.out, preset=args.preset, resolution=args.resolution,
                            pretrained_path=args.pretrained, batch_size=args.batch_size, device=args.device, dtype=dtype,
                            buckets=buckets, bucket_step=step)
    print(json.dumps({k: v for k, v in summary.items() if k != "manifest"}, indent=1))
    bucket_args = "" if buckets is None else (
        f" data.buckets={buckets if buckets == 'auto' else json.dumps(buckets).replace(' ', '')}"
        + ("" if step == DEFAULT_STEP else f" data.bucket_step={step}"))
    print(f"encoded shards in {args.out}: train with data.train_shards=[{args.out}] data.encoded=true "
          f"data.resolution={args.resolution}{bucket_args}")
    return 0
