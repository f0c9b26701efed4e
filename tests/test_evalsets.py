"""Evaluation sets: DreamBench on the real files, Emu Edit / MagicBrush / MultiGen eval on tiny local fixtures."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from lit_cologen.data.builders._common import DataSourceError
from lit_cologen.data.builders.detectors import canny_edges
from lit_cologen.data.evalsets import (
    DREAMBENCH_ENV,
    default_dreambench_path,
    iter_emu_edit,
    load_dreambench,
    load_emu_edit,
    load_magicbrush_test,
    load_multigen_eval,
    parse_dreambench_prompts,
)

# the repository's shared copy (override with COLOGEN_DREAMBENCH)
DREAMBENCH = default_dreambench_path() or Path("missing-dreambench")
IMG_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def cell(im: Image.Image) -> dict:
    return {"bytes": png(im), "path": None}


def write_parquet(path: Path, cols: dict, types: dict | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({k: pa.array(v, type=(types or {}).get(k)) for k, v in cols.items()}), path)
    return path


# ---------------------------------------------------------------------------------------------------- DreamBench

needs_dreambench = pytest.mark.skipif(
    not (DREAMBENCH / "prompts_and_classes.txt").is_file(), reason="shared DreamBench copy not present"
)


@needs_dreambench
def test_dreambench_real_files():
    recs = load_dreambench(DREAMBENCH)
    assert len(recs) == 750
    per_subject = Counter(r.subject for r in recs)
    assert len(per_subject) == 30 and set(per_subject.values()) == {25}
    live = {r.subject for r in recs if r.live}
    assert live == {"cat", "cat2", "dog", "dog2", "dog3", "dog5", "dog6", "dog7", "dog8"}
    assert len({r.key for r in recs}) == 750
    first = recs[0]
    assert (first.subject, first.class_noun, first.template) == ("backpack", "backpack", "a {0} {1} in the jungle")
    assert first.prompt == "a sks backpack in the jungle" and first.prompt_class == "a backpack in the jungle"
    assert first.references == (DREAMBENCH / "backpack" / "00.jpg",) and first.references[0].is_file()
    bear = [r for r in recs if r.subject == "bear_plushie"]
    assert bear[20].prompt_class == "a red stuffed animal" and not bear[0].live
    dog = [r for r in recs if r.subject == "dog"]
    assert dog[10].prompt_class == "a dog wearing a red hat" and dog[10].live
    obj = [r for r in recs if r.subject == "can"]
    assert obj[10].prompt_class == "a can with a wheat field in the background"
    allref = load_dreambench(DREAMBENCH, references="all", unique_token="<v>")
    assert all(len(r.references) >= 4 for r in allref) and allref[0].prompt == "a <v> backpack in the jungle"
    classes, o, lv = parse_dreambench_prompts(DREAMBENCH / "prompts_and_classes.txt")
    assert len(classes) == 30 and len(o) == len(lv) == 25 and o[:10] == lv[:10] and o[10] != lv[10]


@needs_dreambench
def test_dreambench_env_and_errors(tmp_path, monkeypatch):
    monkeypatch.setenv(DREAMBENCH_ENV, str(DREAMBENCH))
    assert len(load_dreambench()) == 750
    monkeypatch.delenv(DREAMBENCH_ENV)
    import lit_cologen.data.evalsets as evalsets

    assert len(load_dreambench()) == 750  # the repository's copy (data/dreambench) is found without the variable
    monkeypatch.setattr(evalsets, "BUNDLED_DREAMBENCH", tmp_path / "no-such-copy")
    with pytest.raises(DataSourceError, match="google/dreambooth"):
        load_dreambench()
    with pytest.raises(DataSourceError, match="prompts_and_classes.txt"):
        load_dreambench(tmp_path)
    # a repo root holding dataset/ is accepted
    repo = tmp_path / "dreambooth"
    (repo / "dataset").mkdir(parents=True)
    (repo / "dataset" / "prompts_and_classes.txt").write_text((DREAMBENCH / "prompts_and_classes.txt").read_text())
    with pytest.raises(DataSourceError, match="subject folder"):
        load_dreambench(repo)
    with pytest.raises(DataSourceError, match="references"):
        load_dreambench(DREAMBENCH, references="some")


# ------------------------------------------------------------------------------------------------------ Emu Edit


def make_emu(tmp: Path) -> Path:
    im = Image.new("RGB", (12, 10), (1, 2, 3))
    write_parquet(
        tmp / "emu_edit_test_set" / "data" / "test-00000-of-00001.parquet",
        {
            "instruction": ["make the sky pink", "remove the dog", "noop"],
            "image": [cell(im)] * 3,
            "task": ["background", "remove", "style"],
            "split": ["test", "test", "validation"],
            "idx": [0, 1, 2],
            "hash": ["a", "b", "c"],
            "input_caption": ["a dog under a blue sky", "a dog on grass", "x"],
            "output_caption": ["a dog under a pink sky", "a dog on grass", "x"],
        },
        {"image": IMG_STRUCT},
    )
    write_parquet(
        tmp / "emu_edit_test_set" / "data" / "validation-00000-of-00001.parquet",
        {"instruction": ["v"], "image": [cell(im)], "task": ["add"], "split": ["validation"], "idx": [9],
         "hash": ["z"], "input_caption": ["i"], "output_caption": ["o"]},
        {"image": IMG_STRUCT},
    )
    return tmp / "emu_edit_test_set"


def test_emu_edit(tmp_path):
    root = make_emu(tmp_path)
    recs = load_emu_edit(root, subset=True)
    assert [r.key for r in recs] == ["emu-0", "emu-1"]  # the row whose split column says validation is dropped
    r = recs[0]
    assert r.instruction == "make the sky pink" and r.output_caption == "a dog under a pink sky"
    assert r.task == "background" and r.target() is None
    assert np.asarray(r.source()).tolist()[0][0] == [1, 2, 3]
    assert [r.key for r in iter_emu_edit(root, drop_identical_captions=True)] == ["emu-0"]
    assert [r.key for r in load_emu_edit(root, split="validation", subset=True)] == ["emu-9"]
    with pytest.raises(DataSourceError, match="emu_edit_output"):
        r.extra("emu_edit_output")
    gen = write_parquet(
        tmp_path / "gens" / "test-00000-of-00001.parquet",
        {"instruction": ["x"], "image": [cell(Image.new("RGB", (4, 4)))], "task": ["add"], "split": ["test"],
         "idx": [3], "hash": ["h"], "input_caption": ["a"], "output_caption": ["b"],
         "edited_image": [cell(Image.new("RGB", (4, 4), (7, 7, 7)))], "model": ["emu"]},
        {"image": IMG_STRUCT, "edited_image": IMG_STRUCT},
    )
    (g,) = load_emu_edit(gen.parent, subset=True)
    assert np.asarray(g.extra("emu_edit_output"))[0, 0].tolist() == [7, 7, 7]
    bad = write_parquet(tmp_path / "bad" / "test-0.parquet", {"instruction": ["x"], "image": [b"x"]})
    with pytest.raises(DataSourceError, match=r"lacks column\(s\) \['task', 'idx', 'input_caption'"):
        load_emu_edit(bad.parent)
    with pytest.raises(DataSourceError, match="not found"):
        load_emu_edit(tmp_path / "nowhere")


# ---------------------------------------------------------------------------------------------------- MagicBrush


def test_magicbrush_test_parquet_and_folder(tmp_path):
    a, b, c = (Image.new("RGB", (8, 8), (v, v, v)) for v in (10, 20, 30))
    m = Image.new("RGB", (8, 8), (255, 255, 255))
    write_parquet(
        tmp_path / "mb" / "test-00000-of-00001.parquet",
        {"img_id": ["5", "5", "7"], "turn_index": [1, 2, 1], "source_img": [cell(a), cell(b), cell(a)],
         "mask_img": [cell(m)] * 3, "instruction": ["i1", "i2", "j1"], "target_img": [cell(b), cell(c), cell(c)]},
        {"source_img": IMG_STRUCT, "mask_img": IMG_STRUCT, "target_img": IMG_STRUCT},
    )
    recs = load_magicbrush_test(tmp_path / "mb", subset=True)
    assert [r.key for r in recs] == ["magicbrush-5-1", "magicbrush-5-2", "magicbrush-7-1"]
    assert np.asarray(recs[1].source())[0, 0, 0] == 20 and np.asarray(recs[1].target())[0, 0, 0] == 30
    assert ([r.key for r in load_magicbrush_test(tmp_path / "mb", turns="last", subset=True)]
            == ["magicbrush-5-2", "magicbrush-7-1"])
    assert ([r.key for r in load_magicbrush_test(tmp_path / "mb", turns="first", subset=True)]
            == ["magicbrush-5-1", "magicbrush-7-1"])
    assert load_magicbrush_test(tmp_path / "mb", include_mask=True, subset=True)[0].mask().mode == "L"
    # hub shards of another split are never used silently as the test split
    (tmp_path / "mb" / "test-00000-of-00001.parquet").rename(tmp_path / "mb" / "train-00000-of-00001.parquet")
    with pytest.raises(DataSourceError, match=r"no files of split 'test'.*\['train'\]"):
        load_magicbrush_test(tmp_path / "mb", subset=True)

    # the official test.zip layout
    root = tmp_path / "test"
    (root / "images" / "139306").mkdir(parents=True)
    for name, im in (("139306-input.png", a), ("139306-output1.png", b), ("139306-output2.png", c),
                     ("139306-mask1.png", m), ("139306-mask2.png", m)):
        im.save(root / "images" / "139306" / name)
    sessions = {"139306": [
        {"input": "139306-input.png", "output": "139306-output1.png", "mask": "139306-mask1.png", "instruction": "add a cat"},
        {"input": "139306-output1.png", "output": "139306-output2.png", "mask": "139306-mask2.png", "instruction": "make it red"},
    ]}
    (root / "edit_sessions.json").write_text(json.dumps(sessions))
    (root / "global_descriptions.json").write_text(json.dumps(
        {"139306": {"139306-input.png": "a room", "139306-output1.png": "a room with a cat",
                    "139306-output2.png": "a red room with a cat"}}))
    recs = load_magicbrush_test(tmp_path, subset=True)  # finds test/edit_sessions.json
    assert [r.instruction for r in recs] == ["add a cat", "make it red"]
    assert recs[1].input_caption == "a room with a cat" and recs[1].output_caption == "a red room with a cat"
    assert np.asarray(recs[1].source())[0, 0, 0] == 20
    (root / "images" / "139306" / "139306-output2.png").unlink()
    with pytest.raises(DataSourceError, match="139306-output2.png"):
        load_magicbrush_test(root, subset=True)


# ------------------------------------------------------------------------------------------------ MultiGen eval


def test_multigen_eval_canny_depth_seg(tmp_path):
    img = Image.new("RGB", (40, 30), (0, 0, 0))
    img.paste((255, 255, 255), (10, 8, 30, 22))
    canny_root = write_parquet(
        tmp_path / "MultiGen-20M_canny_eval" / "data" / "validation-00000-of-00001.parquet",
        {"image": [cell(img), cell(img)], "text": ["a white box", "again"]},
        {"image": IMG_STRUCT},
    ).parent.parent
    recs = load_multigen_eval(canny_root, "canny", resolution=32, subset=True)
    assert [r.key for r in recs] == ["canny-0", "canny-1"] and recs[0].prompt == "a white box"
    im = recs[0].image()
    assert im.size == (32, 32)
    cond = recs[0].condition()
    assert (np.asarray(cond) == np.asarray(canny_edges(im, 0.1, 0.2))).all() and np.asarray(cond).max() == 255
    assert (np.asarray(recs[0].label()) == np.asarray(cond)).all()
    with pytest.raises(DataSourceError, match="detector"):
        load_multigen_eval(canny_root, "hed", subset=True)
    hed = load_multigen_eval(canny_root, "hed", detector=lambda x: x.convert("L"), resolution=None, subset=True)
    assert hed[0].condition().size == (40, 30) and hed[0].condition().mode == "RGB"

    depth_map = Image.new("L", (40, 30), 100)
    depth_root = write_parquet(
        tmp_path / "depth" / "validation-00000-of-00001.parquet",
        {"image": [cell(img)], "text": ["a box"], "control_depth": [cell(depth_map)]},
        {"image": IMG_STRUCT, "control_depth": IMG_STRUCT},
    ).parent
    (d,) = load_multigen_eval(depth_root, "depth", subset=True)
    assert d.condition().size == (512, 512) and np.asarray(d.condition())[0, 0].tolist() == [100, 100, 100]
    assert np.asarray(d.label())[5, 5] == 100 and d.label().mode == "L"
    with pytest.raises(DataSourceError, match="control_seg"):
        load_multigen_eval(depth_root, "seg", subset=True)

    seg_root = write_parquet(
        tmp_path / "ade" / "validation-0.parquet",
        {"image": [cell(img)], "prompt": ["a room"], "control_seg": [cell(img)],
         "seg_map": [cell(Image.new("L", (40, 30), 3))]},
        {"image": IMG_STRUCT, "control_seg": IMG_STRUCT, "seg_map": IMG_STRUCT},
    ).parent
    (s,) = load_multigen_eval(seg_root, "seg", resolution=16, subset=True)
    assert s.prompt == "a room" and np.unique(np.asarray(s.label())).tolist() == [3]
    with pytest.raises(DataSourceError, match="cond_type"):
        load_multigen_eval(seg_root, "normal", subset=True)
