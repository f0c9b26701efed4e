"""Commands that cannot do what was asked refuse, in one line, instead of doing something else."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from tiny_run import tiny_overrides

from lit_cologen.config import ConfigError
from lit_cologen.training.config import load_step_config
from lit_cologen.training.run import run_curriculum, run_step

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}
TINY = REPO / "experiments/presets/tiny.yaml"


def cologen(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lit_cologen.cli", *args], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def finished_step(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("step") / "run"
    run_step(load_step_config(TINY, tiny_overrides(out, steps=2)), enable_progress=False)
    return out


def test_a_changed_config_on_a_run_folder_is_refused_and_nothing_is_overwritten(finished_step):
    saved = (finished_step / "config.yaml").read_text()
    cfg = load_step_config(TINY, tiny_overrides(finished_step, steps=2, **{"optim.lr": 0.05, "model.prw.rank": 16}))
    with pytest.raises(ConfigError, match=r"another configuration \(2 key\(s\) differ.*model\.prw\.rank: 4 != 16.*"
                                          r"optim\.lr: 0\.001 != 0\.05"):
        run_step(cfg, enable_progress=False)
    assert (finished_step / "config.yaml").read_text() == saved
    longer = load_step_config(TINY, tiny_overrides(finished_step, steps=3))
    with pytest.raises(ConfigError, match="--extend"):
        run_step(longer, enable_progress=False)
    # the logging cadence does not change what the step learns: still the same run (skipped, finished)
    same = load_step_config(TINY, tiny_overrides(finished_step, steps=2, **{"train.log_every": 5}))
    assert run_step(same, enable_progress=False) == finished_step / "final"


def test_extend_trains_a_finished_step_further(tmp_path):
    out = tmp_path / "run"
    run_step(load_step_config(TINY, tiny_overrides(out, steps=2)), enable_progress=False)
    final = run_step(load_step_config(TINY, tiny_overrides(out, steps=4)), enable_progress=False, extend=True)
    import json

    assert json.loads((final / "done.json").read_text())["global_step"] == 4
    assert OmegaConf.load(out / "config.yaml").train.max_steps == 4
    with pytest.raises(ConfigError, match="not larger"):
        run_step(load_step_config(TINY, tiny_overrides(out, steps=3)), enable_progress=False, extend=True)


def test_curriculum_only_with_an_unknown_step_name_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"no step named \['edt'\].*\['base', 'inpaint', 'ground', 'control'"):
        run_curriculum(REPO / "experiments/cologen/curriculum_tiny.yaml", [f"output_dir={tmp_path}"], only=["edt"])
    assert not any(tmp_path.iterdir())


def test_user_errors_are_one_line_and_debug_shows_the_traceback(tmp_path):
    res = cologen("curriculum", str(REPO / "experiments/cologen/curriculum_tiny.yaml"), f"output_dir={tmp_path}",
                  "--only", "0_base")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("cologen: error: --only: no step named ['0_base']")
    res = cologen("curriculum", str(REPO / "experiments/cologen/curriculum_tiny.yaml"), f"output_dir={tmp_path}",
                  "--only", "0_base", "--debug")
    assert res.returncode != 0 and "Traceback" in res.stderr


def test_shards_given_without_source_shards_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.source.*'shapes5'.*data\.source=shards"):
        load_step_config(TINY, tiny_overrides(tmp_path, **{"data.train_shards": f"[{tmp_path}]"}))


def test_a_wrong_shard_path_is_one_line_before_training(tmp_path):
    missing = tmp_path / "no-such-shards"
    res = cologen("train", str(TINY), *tiny_overrides(tmp_path / "run", **{"data.source": "shards",
                                                                            "data.train_shards": f"[{missing}]"}))
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last == f"cologen: error: shard spec '{missing}': {missing} does not exist (check the path, relative to {REPO})"
    assert res.stderr.count("does not exist") == 1


def test_config_errors_name_where_the_value_came_from(tmp_path):
    with pytest.raises(ConfigError, match=r"^config key 'optim\.lrr' \(set on the command line\)"):
        load_step_config(TINY, ["optim.lrr=1"])
    with pytest.raises(ConfigError, match=r"^config key 'veteran\.rho' \(set on the command line\): must be"):
        load_step_config(TINY, ["veteran.rho=2"])
    bad = tmp_path / "step.yaml"
    bad.write_text("optim:\n  lr: -1\n")
    with pytest.raises(ConfigError, match=rf"^config key 'optim\.lr' in {bad}: must be"):
        load_step_config(bad)
    from lit_cologen.training.config import load_curriculum

    with pytest.raises(ConfigError, match=r"'veteran\.rho' \(set on the command line\).*step 0 'base'"):
        load_curriculum(REPO / "experiments/cologen/curriculum_tiny.yaml", ["veteran.rho=2"])


def test_sample_says_what_it_samples_and_takes_a_curriculum_folder(tmp_path, capsys, finished_step):
    import shutil

    from PIL import Image

    from lit_cologen.cli import main

    image = tmp_path / "in.png"
    Image.new("RGB", (200, 200), (200, 0, 0)).save(image)
    args = ["sample", "--task", "edit", "--image", str(image), "--instruction", "make it blue", "--steps", "1",
            "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "a.png")]) == 0
    err = capsys.readouterr().err
    assert "tiny preset's seeded random-init model" in err
    assert "sampling at 200x200, 39x the pixels of the tiny preset's training resolution 32x32" in err
    # a curriculum output folder: the last finished step's adapters (as `bench generate`'s run=)
    cur = tmp_path / "cur"
    shutil.copytree(finished_step, cur / "1_inpaint")
    assert main([*args, "--height", "32", "--width", "32", "--adapters", str(cur), "--out", str(tmp_path / "b.png")]) == 0
    out = capsys.readouterr()
    assert "random-init" not in out.err and "training resolution" not in out.err and (tmp_path / "b.png").is_file()
    assert main([*args, "--adapters", str(tmp_path), "--out", str(tmp_path / "c.png")]) == 2
    assert "no finished step" in capsys.readouterr().err


def test_data_build_says_what_it_read_and_skipped_and_leaves_nothing_on_failure(tmp_path):
    """A MagicBrush Hub download (``data/{split}-0000N-of-0000M-<hash>.parquet``, as in test_published_formats),
    one row of it undecodable."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    def png(v):
        buf = io.BytesIO()
        Image.new("RGB", (8, 8), (v, v, v)).save(buf, format="PNG")
        return {"bytes": buf.getvalue(), "path": None}

    img = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    root = tmp_path / "MagicBrush"
    (root / "data").mkdir(parents=True)
    cols = {"img_id": ["1", "2"], "turn_index": [1, 1], "source_img": [png(1), {"bytes": b"broken", "path": None}],
            "mask_img": [png(2), png(2)], "instruction": ["a", "b"], "target_img": [png(3), png(3)]}
    table = pa.table({k: pa.array(v, type=img if k.endswith("_img") else None) for k, v in cols.items()})
    for name in ("train-00000-of-00001-0123456789abcdef.parquet", "dev-00000-of-00001-fedcba9876543210.parquet"):
        pq.write_table(table, root / "data" / name)
    base = ["data", "build", "magicbrush", "--root", str(root)]
    res = cologen(*base, "--out", str(tmp_path / "a"))
    assert res.returncode == 2 and "--opt on_error=skip" in res.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "a").exists()
    res = cologen(*base, "--out", str(tmp_path / "b"), "--opt", "split=dev")
    assert res.returncode == 2 and "'dev' is an evaluation split" in res.stderr and "on_error" not in res.stderr
    res = cologen(*base, "--out", str(tmp_path / "c"), "--opt", "on_error=skip")
    assert res.returncode == 0, res.stderr
    assert "MagicBrush: split 'train', 1 file(s) under" in res.stderr
    assert "1 samples in 1 shard(s)" in res.stdout and "skipped 1 row(s) (1 DataSourceError)" in res.stdout


def test_a_bare_string_for_a_list_option_is_a_one_element_list():
    from lit_cologen.data.builders import build, build_coco_inpaint, build_multigen, list_options

    assert list_options(build_multigen, {"cond_types": "seg"}) == {"cond_types": ["seg"]}
    assert list_options(build_coco_inpaint, {"annotations": "a.json"}) == {"annotations": "a.json"}  # str | Sequence
    with pytest.raises(ValueError, match=r"no option\(s\) \['cond_type'\]; its options: \[.*'cond_types'"):
        build("multigen", "/nowhere", cond_type="seg")


def test_a_folder_with_a_config_but_nothing_trained_does_not_block_a_corrected_rerun(tmp_path):
    from lit_cologen.training.run_folder import saved_config_differences

    out = tmp_path / "run"
    out.mkdir()
    first = load_step_config(TINY, tiny_overrides(out, steps=2))
    (out / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(first)))  # a run that died at setup
    fixed = load_step_config(TINY, tiny_overrides(out, steps=2, **{"optim.lr": 0.05}))
    assert saved_config_differences(fixed) == []
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / "last.ckpt").write_bytes(b"x")  # something trained: now the difference counts
    assert saved_config_differences(fixed) == ["optim.lr: 0.001 != 0.05"]


def test_missing_init_from_is_one_line_before_anything_is_written(tmp_path):
    cfg = load_step_config(TINY, tiny_overrides(tmp_path / "run", **{"init_from": tmp_path / "prev" / "final"}))
    with pytest.raises(ConfigError, match=r"config key 'init_from': .*prev/final does not exist.*train that step"):
        run_step(cfg, enable_progress=False)
    assert not (tmp_path / "run").exists()


def test_curriculum_only_followed_by_an_override(tmp_path):
    res = cologen("curriculum", str(REPO / "experiments/cologen/curriculum_tiny.yaml"), "--only", "base",
                  f"output_dir={tmp_path / 'o'}", "--dry-run")
    assert res.returncode == 0, res.stderr
    assert str(tmp_path / "o" / "0_base") in res.stdout and "1_inpaint" not in res.stdout
