"""`cologen dev random-weights`: random-init weights in the published layouts, loadable by the real loaders."""

from __future__ import annotations

from pathlib import Path

from lit_cologen.cli import main


def test_random_weights_are_loadable_and_marked(tmp_path):
    from diffusers import FluxPipeline

    from benchmarks.metrics.backbones import BACKBONES, Backbones
    from benchmarks.metrics.random_init import is_random_init

    assert main(["dev", "random-weights", "--out", str(tmp_path / "flux"), "--backbones", str(tmp_path / "bb")]) == 0
    pipe = FluxPipeline.from_pretrained(str(tmp_path / "flux"))  # the stock loader reads the layout
    assert pipe.transformer.config.num_layers == 1 and (tmp_path / "flux" / "random_init.json").is_file()
    bb = Backbones(weights_dir=tmp_path / "bb")
    for key in ("clip_b32", "clip_b16", "dino_vits16", "dpt_large", "seg_ade20k", "seg_cocostuff"):
        path = Path(bb.path(key))
        assert path.name == BACKBONES[key].default_name and is_random_init(path), key
    assert bb.clip("clip_b32").encode_texts(["a cat"]).shape[0] == 1
    assert not is_random_init(tmp_path)  # a folder without the marker
    import pytest

    with pytest.raises(SystemExit, match="not empty"):  # never writes into an existing folder
        main(["dev", "random-weights", "--out", str(tmp_path / "flux")])
