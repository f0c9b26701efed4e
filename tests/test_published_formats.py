"""Loaders and builders on fixtures written in each dataset's *published* form (not the form our code expects).

Each fixture's docstring names where its layout comes from: the dataset card (Hugging Face ``README.md`` metadata:
features, splits, ``data_files``), the Hub's file naming (``push_to_hub`` shards
``{split}-{i:05d}-of-{n:05d}-{fingerprint}.parquet``), the ``datasets`` library's Arrow files, or the dataset
authors' loading code. Every test here failed on the loaders as they were before these fixtures existed.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from lit_cologen.data.builders import build_coco_inpaint, build_multigen, build_refcoco, split_composite
from lit_cologen.data.builders._common import DataSourceError, dataset_files
from lit_cologen.data.evalsets import (
    iter_multigen_eval,
    load_dreambench,
    load_emu_edit,
    load_gedit_bench,
    load_magicbrush_test,
    load_multigen_eval,
)

IMG = pa.struct([("bytes", pa.binary()), ("path", pa.string())])  # the HF ``Image`` feature in parquet / Arrow
SEG_MAP = pa.list_(pa.list_(pa.uint8()))  # ``sequence: sequence: uint8`` in the dataset cards


def cell(im: Image.Image) -> dict:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


def noise(w: int, h: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def table(cols: dict, types: dict | None = None) -> pa.Table:
    return pa.table({k: pa.array(v, type=(types or {}).get(k)) for k, v in cols.items()})


def write_parquet(path: Path, cols: dict, types: dict | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table(cols, types), path)
    return path


# --------------------------------------------------------------------------------- 1. hashed Hub shard names


def magicbrush_hub_download(root: Path) -> Path:
    """``osunlp/MagicBrush`` as ``huggingface-cli download`` leaves it: ``data/train-000NN-of-00051-<hash>.parquet``
    and ``data/dev-00000-of-00001-<hash>.parquet`` (the repo has train and dev, no test; names as ``push_to_hub``
    writes them, with the fingerprint suffix). Columns from the dataset card: img_id, turn_index, source_img,
    mask_img, instruction, target_img."""
    im = Image.new("RGB", (8, 8), (9, 9, 9))
    row = {"img_id": ["1"], "turn_index": [1], "source_img": [cell(im)], "mask_img": [cell(im)],
           "instruction": ["x"], "target_img": [cell(im)]}
    types = {"source_img": IMG, "mask_img": IMG, "target_img": IMG}
    write_parquet(root / "data" / "train-00000-of-00051-453c1a9ccc53b253.parquet", row, types)
    write_parquet(root / "data" / "train-00001-of-00051-0b2f6a1d9e8c7b45.parquet", row, types)
    write_parquet(root / "data" / "dev-00000-of-00001-9a8b7c6d5e4f3a2b.parquet", row, types)
    return root


def test_hashed_shard_names_never_fall_back_to_other_splits(tmp_path):
    root = magicbrush_hub_download(tmp_path / "MagicBrush")
    with pytest.raises(DataSourceError, match=r"split 'test'.*\['dev', 'train'\].*test\.zip"):
        load_magicbrush_test(root)
    assert [f.name for f in dataset_files(root, "dev")] == ["dev-00000-of-00001-9a8b7c6d5e4f3a2b.parquet"]
    assert len(dataset_files(root, "train")) == 2
    with pytest.raises(DataSourceError, match="is a file of split 'train', not 'test'"):
        dataset_files(root / "data" / "train-00000-of-00051-453c1a9ccc53b253.parquet", "test")


def test_parquet_conversion_folders_name_the_split(tmp_path):
    """The Hub's ``refs/convert/parquet`` branch: ``default/{split}/0000.parquet`` (the split is the folder)."""
    for split in ("train", "validation"):
        write_parquet(tmp_path / "default" / split / "0000.parquet", {"a": [1]})
    assert [f.parent.name for f in dataset_files(tmp_path, "validation")] == ["validation"]


# ------------------------------------------------------------------- 2. / 3. Captioned ADE20K / COCO-Stuff


def captioned_ade20k(root: Path) -> tuple[Path, np.ndarray]:
    """``limingcv/Captioned_ADE20K`` (dataset card: features image, detailed_prompt, control_seg (image), seg_map
    (sequence of sequence of uint8), image_path, prompt; splits train 20,210 / validation 2,000; data_files
    ``data/train-*``, ``data/validation-*``). Returns the root and the validation row's label map."""
    label = np.zeros((6, 8), dtype=np.uint8)
    label[2:5, 3:7] = 12
    def rows(n: int, seed: int) -> dict:
        return {"image": [cell(noise(8, 6, seed + i)) for i in range(n)],
                "detailed_prompt": ["a long caption"] * n,
                "control_seg": [cell(noise(8, 6, 100 + seed + i)) for i in range(n)],
                "seg_map": [label.tolist()] * n, "image_path": [f"ADE_{seed + i}.jpg" for i in range(n)],
                "prompt": [f"a room {seed + i}" for i in range(n)]}
    types = {"image": IMG, "control_seg": IMG, "seg_map": SEG_MAP}
    write_parquet(root / "data" / "train-00000-of-00001-1a2b3c4d5e6f7a8b.parquet", rows(2, 0), types)
    write_parquet(root / "data" / "validation-00000-of-00001-8b7a6f5e4d3c2b1a.parquet", rows(1, 50), types)
    return root, label


def test_training_builders_read_the_training_split_only(tmp_path):
    root, _ = captioned_ade20k(tmp_path / "Captioned_ADE20K")
    samples = list(build_multigen(root, cond_types=("seg",)))
    assert sorted(s.prompt for s in samples) == ["a room 0", "a room 1"]  # the validation row never leaks in
    with pytest.raises(DataSourceError, match=r"evaluation split\(s\) \['validation'\].*allow_eval_split"):
        list(build_multigen(root, cond_types=("seg",), split=None))
    with pytest.raises(DataSourceError, match="'validation' is an evaluation split"):
        list(build_multigen(root, cond_types=("seg",), split="validation"))
    assert len(list(build_multigen(root, cond_types=("seg",), split="validation", allow_eval_split=True))) == 1


def test_seg_labels_published_as_nested_lists(tmp_path):
    root, label = captioned_ade20k(tmp_path / "Captioned_ADE20K")
    (rec,) = iter_multigen_eval(root, "seg", resolution=None)
    assert rec.prompt == "a room 50"
    assert np.array_equal(np.asarray(rec.label()), label)
    (small,) = iter_multigen_eval(root, "seg", resolution=4)
    expected = np.asarray(Image.fromarray(label).resize((4, 4), Image.Resampling.NEAREST))
    assert np.array_equal(np.asarray(small.label()), expected)
    with pytest.raises(DataSourceError, match=r"Captioned ADE20K validation: loaded 1 rows.*2,000"):
        load_multigen_eval(root, "seg")


def test_cocostuff_panoptic_labels_and_published_count(tmp_path):
    """``limingcv/Captioned_COCOStuff`` (dataset card: image, control_seg, prompt, semantic_seg_map,
    panoptic_seg_map (both sequence of sequence of uint8), image_path; validation 5,000 rows). ControlNet++'s
    ``eval/eval.py`` is run with ``--label_column=panoptic_seg_map`` on it."""
    pan = np.full((4, 5), 7, dtype=np.uint8)
    write_parquet(
        tmp_path / "coco" / "data" / "validation-00000-of-00001-aaaaaaaabbbbbbbb.parquet",
        {"image": [cell(noise(5, 4, 1))], "control_seg": [cell(noise(5, 4, 2))], "prompt": ["a street"],
         "semantic_seg_map": [np.zeros((4, 5), np.uint8).tolist()], "panoptic_seg_map": [pan.tolist()],
         "image_path": ["000000000139.jpg"]},
        {"image": IMG, "control_seg": IMG, "semantic_seg_map": SEG_MAP, "panoptic_seg_map": SEG_MAP},
    )
    recs = load_multigen_eval(tmp_path / "coco", "seg", resolution=None, subset=True)
    assert np.array_equal(np.asarray(recs[0].label()), pan)
    assert recs.count.as_dict() == {"dataset": "Captioned COCOStuff", "split": "validation", "unit": "rows",
                                    "expected": 5000, "found": 1, "subset": True, "notes": []}


# ----------------------------------------------------------------------------------------- 4. GEdit-Bench Arrow


def gedit_bench_save_to_disk(root: Path, n_en: int = 2) -> Path:
    """``stepfun-ai/GEdit-Bench`` as published: the ``datasets`` library's ``save_to_disk`` output (the Hub lists
    its format as "arrow"): ``dataset_dict.json``, ``train/data-00000-of-00001.arrow`` (Arrow IPC *stream* format,
    which ``datasets``' ArrowWriter writes), ``train/dataset_info.json``, ``train/state.json``. Columns: key,
    task_type, instruction, instruction_language (en / cn), input_image (Image), Intersection_exist."""
    train = root / "train"
    train.mkdir(parents=True)
    keys = [f"k{i}" for i in range(n_en)] + ["k0"]
    t = table({"key": keys, "task_type": ["background_change"] * len(keys),
               "instruction": [f"make it night {i}" for i in range(n_en)] + ["把背景换成夜晚"],
               "instruction_language": ["en"] * n_en + ["cn"],
               "input_image": [cell(noise(6, 4, i)) for i in range(len(keys))],
               "Intersection_exist": [True] * len(keys)}, {"input_image": IMG})
    with pa.OSFile(str(train / "data-00000-of-00001.arrow"), "wb") as sink, pa.ipc.new_stream(sink, t.schema) as w:
        w.write_table(t)
    (train / "dataset_info.json").write_text(json.dumps({"features": {}}))
    (train / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
    (root / "dataset_dict.json").write_text(json.dumps({"splits": ["train"]}))
    return root


def test_gedit_bench_arrow_files(tmp_path):
    from benchmarks.suites.gedit import build_requests

    root = gedit_bench_save_to_disk(tmp_path / "GEdit-Bench")
    recs = load_gedit_bench(root, subset=True)
    assert [r.instruction for r in recs] == ["make it night 0", "make it night 1"]
    assert np.array_equal(np.asarray(recs[0].source()), np.asarray(noise(6, 4, 0)))
    with pytest.raises(DataSourceError, match=r"GEdit-Bench en: loaded 2 rows.*606"):
        load_gedit_bench(root)
    reqs = build_requests(root, tmp_path / "run", language="cn", subset=True)
    assert [r.prompt for r in reqs] == ["把背景换成夜晚"]
    assert reqs.eval_set["expected"] == 606 and reqs.eval_set["found"] == 1 and reqs.eval_set["subset"]


# ------------------------------------------------------------------------------------------- 5. smaller ones


def test_coco_panoptic_json_is_refused(tmp_path):
    """A COCO panoptic JSON (``panoptic_val2017.json`` / ``panoptic_train2017.json``, cocodataset.org panoptic
    format): ``annotations`` are per-image ``{image_id, file_name, segments_info: [...]}`` with no ``segmentation``."""
    root = tmp_path / "coco"
    (root / "train2017").mkdir(parents=True)
    pan = {"images": [{"id": 1, "file_name": "1.jpg", "width": 8, "height": 8}],
           "annotations": [{"image_id": 1, "file_name": "1.png",
                            "segments_info": [{"id": 3, "category_id": 1, "area": 9, "bbox": [0, 0, 3, 3],
                                               "iscrowd": 0}]}],
           "categories": [{"id": 1, "name": "person", "isthing": 1}]}
    ann = root / "annotations" / "panoptic_train2017.json"
    ann.parent.mkdir()
    ann.write_text(json.dumps(pan))
    with pytest.raises(DataSourceError, match="panoptic JSON.*instances"):
        list(build_coco_inpaint(root, annotations=ann))


def refcocog_refer(root: Path) -> Path:
    """REFER's RefCOCOg folder (lichengunc/refer): ``refs(google).p`` and ``refs(umd).p`` (here as their JSON
    conversion, since we never unpickle) + ``instances.json``; refs carry ``ref_id, ann_id, image_id, split,
    sentences``; the umd partition has train / val / test, google train / val."""
    root.mkdir(parents=True)
    Image.new("RGB", (10, 10)).save(root / "COCO_train2014_000000000001.jpg")
    inst = {"images": [{"id": 1, "file_name": "COCO_train2014_000000000001.jpg", "width": 10, "height": 10}],
            "annotations": [{"id": 5, "image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 4], "iscrowd": 0,
                             "segmentation": [[1, 1, 5, 1, 5, 5, 1, 5]]}],
            "categories": [{"id": 1, "name": "cat"}]}
    (root / "instances.json").write_text(json.dumps(inst))
    for by, sent in (("google", "the google cat"), ("umd", "the umd cat")):
        ref = {"ref_id": 0, "ann_id": 5, "image_id": 1, "split": "train", "category_id": 1,
               "sentences": [{"sent": sent, "raw": sent}]}
        (root / f"refs({by}).json").write_text(json.dumps([ref]))
    return root


def test_refcocog_reads_the_umd_partition_by_default(tmp_path):
    root = refcocog_refer(tmp_path / "refcocog")
    (s,) = build_refcoco(root, dataset="refcocog", images=root, tasks=("box",))
    assert "the umd cat" in s.prompt
    (g,) = build_refcoco(root, dataset="refcocog", images=root, tasks=("box",), split_by="google")
    assert "the google cat" in g.prompt
    with pytest.raises(DataSourceError, match=r"several refs files.*split_by"):
        list(build_refcoco(root, dataset="refcocog", images=root, split_by="unc"))


def test_builders_doc_names_the_hub_repos_as_spelled():
    """The lmms-lab Hub repos are ``lmms-lab/RefCOCO``, ``lmms-lab/RefCOCOplus``, ``lmms-lab/RefCOCOg`` (a '+' is
    not allowed in a repo name)."""
    text = (Path(__file__).resolve().parents[1] / "data" / "BUILDERS.md").read_text()
    assert "RefCOCOplus" in text and "/ `RefCOCO+` /" not in text


def emu_edit_with_duplicated_shards(root: Path) -> Path:
    """``facebook/emu_edit_test_set`` in a past revision whose test shards were uploaded twice (the same rows in
    ``test-00000-of-00002`` and ``test-00001-of-00002``); columns from the dataset card: instruction, image, task,
    split, idx, hash, input_caption, output_caption. One row carries ``split='validation'`` in a test file."""
    im = Image.new("RGB", (4, 4))
    rows = {"instruction": ["a", "b", "c"], "image": [cell(im)] * 3, "task": ["add"] * 3,
            "split": ["test", "test", "validation"], "idx": [0, 1, 2], "hash": ["h0", "h1", "h2"],
            "input_caption": ["i"] * 3, "output_caption": ["o"] * 3}
    for k in range(2):
        write_parquet(root / "data" / f"test-0000{k}-of-00002-{k}f0e1d2c3b4a5968.parquet", rows, {"image": IMG})
    return root


def test_emu_edit_dedupes_by_idx_and_reports_split_mismatch(tmp_path, caplog):
    root = emu_edit_with_duplicated_shards(tmp_path / "emu")
    with caplog.at_level(logging.WARNING, logger="lit_cologen.data.evalsets"):
        recs = load_emu_edit(root, subset=True)
    assert [r.key for r in recs] == ["emu-0", "emu-1"]
    assert recs.count.notes == ("2 rows repeating an earlier idx dropped",
                                "2 rows in 'test' files carry another 'split' value (skipped)")
    assert "carry another 'split' value" in caplog.text
    with pytest.raises(DataSourceError, match=r"Emu Edit test: loaded 2 rows.*3,589.*repeating an earlier idx"):
        load_emu_edit(root)


def test_subjects200k_panels_where_the_authors_crop_them():
    """A 1056 x 528 Subjects200K composite; the authors' loader (Yuanshi9815/OminiControl ``src/train/data.py``,
    ``Subject200KDateset``, padding 8, image_size 512) crops left ``(8, 8, 520, 520)`` and right
    ``(528, 8, 1040, 520)``."""
    left, right = noise(512, 512, 1), noise(512, 512, 2)
    comp = Image.new("RGB", (1056, 528), (255, 255, 255))
    comp.paste(left, (8, 8))
    comp.paste(right, (528, 8))
    got_left, got_right = split_composite(comp, 8)
    assert np.array_equal(np.asarray(got_left), np.asarray(left))
    assert np.array_equal(np.asarray(got_right), np.asarray(right))


# ------------------------------------------------------------------------------------ 6. published sizes


def test_dreambench_folder_with_missing_subjects_is_an_error(tmp_path):
    """DreamBooth's ``dataset/`` (google/dreambooth): ``prompts_and_classes.txt`` + one folder per subject; here two
    of the 30 subjects."""
    text = "Classes\nsubject_name,class\nbackpack,backpack\ndog,dog\n\nPrompts\nObject Prompts\n"
    text += "".join(f"'a {{0}} {{1}} {i}'.format(unique_token, class_token)\n" for i in range(25))
    text += "Live Subject Prompts\n" + "".join(
        f"'a {{0}} {{1}} live {i}'.format(unique_token, class_token)\n" for i in range(25))
    (tmp_path / "prompts_and_classes.txt").write_text(text)
    for s in ("backpack", "dog"):
        (tmp_path / s).mkdir()
        Image.new("RGB", (4, 4)).save(tmp_path / s / "00.jpg")
    with pytest.raises(DataSourceError, match=r"DreamBench all: loaded 50 prompts.*750.*2 subjects"):
        load_dreambench(tmp_path)
    recs = load_dreambench(tmp_path, subset=True)
    assert recs.count.expected == 750 and recs.count.found == 50 and recs.count.subset


def test_magicbrush_test_zip_size_is_checked(tmp_path):
    """The official MagicBrush ``test.zip`` unpacked (MagicBrush README): ``test/edit_sessions.json`` and
    ``test/images/<img_id>/``; 535 sessions, 1,053 turns when complete."""
    from benchmarks.suites.editing import build_magicbrush_requests

    root = tmp_path / "test"
    (root / "images" / "1").mkdir(parents=True)
    for name in ("1-input.png", "1-output1.png"):
        Image.new("RGB", (4, 4)).save(root / "images" / "1" / name)
    (root / "edit_sessions.json").write_text(json.dumps(
        {"1": [{"input": "1-input.png", "output": "1-output1.png", "mask": "1-mask1.png", "instruction": "x"}]}))
    with pytest.raises(DataSourceError, match=r"MagicBrush test: loaded 1 turns.*1,053.*--subset"):
        load_magicbrush_test(root)
    reqs = build_magicbrush_requests(root, tmp_path / "run", subset=True)
    assert reqs.eval_set == {"dataset": "MagicBrush", "split": "test", "unit": "turns", "expected": 1053,
                             "found": 1, "subset": True, "notes": ["1 sessions, 1 turns on disk (turns='all')"]}


def test_depth_labels_keep_their_stored_size():
    """``limingcv/MultiGen-20M_depth_eval`` (validation 5,000 rows: image, text, control_depth): ControlNet++'s
    ``eval/eval.py`` min-max normalises the depth label at its stored size and resizes afterwards, so the loader hands
    it over unresized (the image and condition are resized to 512 as before)."""
    import tempfile

    depth = Image.fromarray(np.arange(40 * 30, dtype=np.uint16).reshape(30, 40).astype(np.uint8))
    with tempfile.TemporaryDirectory() as tmp:
        write_parquet(Path(tmp) / "data" / "validation-00000-of-00001-0a1b2c3d4e5f6a7b.parquet",
                      {"image": [cell(noise(40, 30, 0))], "text": ["a room"], "control_depth": [cell(depth)]},
                      {"image": IMG, "control_depth": IMG})
        (rec,) = iter_multigen_eval(tmp, "depth")
        assert rec.image().size == (512, 512) and rec.condition().size == (512, 512)
        assert rec.label().size == (40, 30) and np.array_equal(np.asarray(rec.label()), np.asarray(depth))
