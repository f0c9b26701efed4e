"""Dataset builders on tiny fixtures written in each real dataset's on-disk layout (created here in tmp_path)."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from lit_cologen.data.builders import BUILDER_TASKS, BUILDERS, build
from lit_cologen.data.builders._common import DataSourceError, safe_key
from lit_cologen.data.builders.coco import (
    decode_segmentation,
    polygons_to_mask,
    rle_counts_to_string,
    rle_decode,
    rle_encode,
    rle_string_to_counts,
)
from lit_cologen.data.builders.control import apply_online_condition, build_multigen
from lit_cologen.data.builders.detectors import TorchEdgeDetector, canny_edges
from lit_cologen.data.builders.editing import build_edit_folder, build_magicbrush, build_omniedit
from lit_cologen.data.builders.grounding import (
    GROUNDING_COLOURS,
    auto_line_width,
    blend_mask,
    box_pixels,
    build_lvis,
    build_refcoco,
    draw_box,
)
from lit_cologen.data.builders.inpaint import build_ade20k_inpaint, build_coco_inpaint, decode_ade20k_seg
from lit_cologen.data.builders.subject200k import build_subject200k, split_composite
from lit_cologen.data.schema import TASKS

# ------------------------------------------------------------------------------------------------------- helpers


def noise_image(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), mode="RGB")


def png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


IMG_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def img_cell(im: Image.Image) -> dict:
    return {"bytes": png_bytes(im), "path": None}


def write_parquet(path: Path, columns: dict[str, list], types: dict[str, pa.DataType] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for name, values in columns.items():
        t = (types or {}).get(name)
        arrays[name] = pa.array(values, type=t) if t is not None else pa.array(values)
    pq.write_table(pa.table(arrays), path)
    return path


def arr(im: Image.Image) -> np.ndarray:
    return np.asarray(im.convert("RGB")).astype(np.int32)


def encodes(samples) -> None:
    """Every sample passes the schema and encodes to a WebDataset dict (meta JSON-serialisable)."""
    for smp in samples:
        d = smp.to_wds()
        assert d["__key__"] == smp.key and json.loads(d["meta.json"])


def rect_mask_fn(box=(2, 3, 10, 9)):
    """A deterministic stand-in for masks.sample_inpaint_mask that records what it was given."""
    calls = []

    def fn(rng, object_masks, h, w):
        calls.append([m.copy() for m in object_masks])
        m = np.zeros((h, w), dtype=np.uint8)
        x0, y0, x1, y1 = box
        m[y0:y1, x0:x1] = 255
        return m, "random"

    fn.calls = calls
    return fn


# ------------------------------------------------------------------------------------------------------ COCO RLE


def test_rle_hand_made_mask():
    mask = np.array([[0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 1, 1]], dtype=bool)
    # column-major: 0 0 0 | 1 1 0 | 1 1 1 | 0 0 1  -> runs 3,2,1,3,2,1
    assert rle_decode({"size": [3, 4], "counts": [3, 2, 1, 3, 2, 1]}).tolist() == mask.tolist()
    enc = rle_encode(mask)
    # 3,2,1 as themselves; then deltas vs two back: 3-2=1, 2-1=1, 1-3=-2 ('N' carries the sign bit)
    assert enc == {"size": [3, 4], "counts": "32111N"}
    assert rle_decode(enc).tolist() == mask.tolist()
    assert rle_string_to_counts("X1") == [40]  # 40 = 8 + 1<<5, continuation bit set on 'X'
    starts_with_one = np.ones((2, 2), dtype=bool)
    assert rle_encode(starts_with_one)["counts"] == rle_counts_to_string([0, 4])


def test_rle_roundtrip_random_and_errors():
    rng = np.random.default_rng(1)
    for _ in range(50):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        m = rng.random((h, w)) < rng.random()
        r = rle_encode(m)
        assert (rle_decode(r) == m).all()
        assert rle_counts_to_string(rle_string_to_counts(r["counts"])) == r["counts"]
    with pytest.raises(DataSourceError, match="sum to"):
        rle_decode({"size": [2, 2], "counts": [1, 1]})
    with pytest.raises(DataSourceError, match="does not match the image size"):
        decode_segmentation({"size": [2, 2], "counts": [4]}, 3, 3, where="ann 7")


def test_polygon_mask():
    m = polygons_to_mask([[2, 1, 6, 1, 6, 4, 2, 4]], 6, 8)
    assert m[1:5, 2:7].all() and m.sum() == 4 * 5


# --------------------------------------------------------------------------------------------------- inpainting


def make_coco(tmp: Path) -> dict:
    root = tmp / "coco"
    (root / "train2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    im1, im2 = noise_image(16, 12, 1), noise_image(20, 10, 2)
    im1.save(root / "train2017" / "000000000001.png")
    im2.save(root / "train2017" / "000000000002.png")
    dog = np.zeros((12, 16), dtype=bool)
    dog[6:11, 9:15] = True
    crowd = np.zeros((12, 16), dtype=bool)
    crowd[0:2, 0:3] = True
    crowd_counts = rle_string_to_counts(rle_encode(crowd)["counts"])  # uncompressed (list) form, as iscrowd=1
    inst = {
        "images": [
            {"id": 1, "file_name": "000000000001.png", "height": 12, "width": 16},
            {"id": 2, "file_name": "000000000002.png", "height": 10, "width": 20},
        ],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [1, 1, 6, 5],
             "segmentation": [[1, 1, 6, 1, 6, 5, 1, 5]]},
            {"id": 11, "image_id": 1, "category_id": 18, "iscrowd": 0, "bbox": [9, 6, 6, 5],
             "segmentation": rle_encode(dog)},
            {"id": 12, "image_id": 1, "category_id": 1, "iscrowd": 1, "bbox": [0, 0, 3, 2],
             "segmentation": {"size": [12, 16], "counts": crowd_counts}},
            {"id": 20, "image_id": 2, "category_id": 17, "iscrowd": 0, "bbox": [2, 2, 8, 6],
             "segmentation": [[2, 2, 10, 2, 10, 8, 2, 8]]},
        ],
        "categories": [{"id": 1, "name": "person"}, {"id": 17, "name": "cat"}, {"id": 18, "name": "dog"}],
    }
    (root / "annotations" / "instances_train2017.json").write_text(json.dumps(inst))
    caps = {"annotations": [{"image_id": 1, "id": 1, "caption": "A person walking a dog."}]}
    (root / "annotations" / "captions_train2017.json").write_text(json.dumps(caps))
    return {"root": root, "im1": im1, "im2": im2, "dog": dog}


def test_coco_inpaint_layout(tmp_path):
    fx = make_coco(tmp_path)
    fn = rect_mask_fn()
    samples = list(build_coco_inpaint(fx["root"], mask_fn=fn, seed=3))
    assert [s.key for s in samples] == ["coco-train2017-1", "coco-train2017-2"]
    s1, s2 = samples
    assert s1.task == "inpaint" and s1.prompt == "A person walking a dog."
    assert s2.prompt == "a photo of a cat" and s2.meta["prompt_source"] == "class_template"
    # object masks handed to the mask sampler: polygon person + compressed-RLE dog (crowd excluded)
    objs = fn.calls[0]
    assert len(objs) == 2 and (objs[1] == fx["dog"]).all() and objs[0][1:6, 1:7].all()
    m = np.asarray(s1.mask)
    assert s1.mask.mode == "L" and set(np.unique(m)) == {0, 255} and (m[3:9, 2:10] == 255).all()
    src, tgt = arr(s1.source), arr(s1.target)
    assert (src[m == 255] == 128).all()
    assert (src[m == 0] == tgt[m == 0]).all() and (tgt == arr(fx["im1"])).all()
    assert s1.meta["mask_type"] == "random" and s1.meta["fill"] == "grey"
    encodes(samples)
    black = next(iter(build_coco_inpaint(fx["root"], mask_fn=rect_mask_fn(), fill="black", max_samples=1)))
    assert (arr(black.source)[np.asarray(black.mask) == 255] == 0).all()
    # parallel parts partition the images
    a = [s.key for s in build_coco_inpaint(fx["root"], mask_fn=rect_mask_fn(), part=0, num_parts=2)]
    b = [s.key for s in build_coco_inpaint(fx["root"], mask_fn=rect_mask_fn(), part=1, num_parts=2)]
    assert sorted(a + b) == [s.key for s in samples] and not set(a) & set(b)


def test_coco_inpaint_with_paper_masks(tmp_path):
    pytest.importorskip("lit_cologen.data.masks")
    fx = make_coco(tmp_path)
    samples = list(build_coco_inpaint(fx["root"], seed=0))
    again = list(build_coco_inpaint(fx["root"], seed=0))
    for s, t in zip(samples, again):
        m = np.asarray(s.mask)
        assert set(np.unique(m)) <= {0, 255} and m.shape == (s.target.size[1], s.target.size[0])
        assert (arr(s.source)[m == 255] == 128).all()
        assert isinstance(s.meta["mask_type"], str) and s.meta["mask_type"]
        assert (np.asarray(t.mask) == m).all()  # deterministic per (seed, key)


def test_coco_inpaint_errors(tmp_path):
    fx = make_coco(tmp_path)
    (fx["root"] / "train2017" / "000000000002.png").unlink()
    with pytest.raises(DataSourceError, match="000000000002.png"):
        list(build_coco_inpaint(fx["root"], mask_fn=rect_mask_fn()))
    kept = list(build_coco_inpaint(fx["root"], mask_fn=rect_mask_fn(), on_error="skip"))
    assert [s.key for s in kept] == ["coco-train2017-1"]
    with pytest.raises(DataSourceError, match="annotations"):
        list(build_coco_inpaint(tmp_path / "coco", split="val2017", mask_fn=rect_mask_fn(), allow_eval_split=True))


def test_ade20k_seg_decoding_and_inpaint(tmp_path):
    folder = tmp_path / "ADE20K_2021_17_01" / "images" / "ADE" / "training" / "home" / "bedroom"
    folder.mkdir(parents=True)
    h, w = 12, 16
    img = noise_image(w, h, 5)
    img.save(folder / "ADE_train_00000001.jpg", quality=95)
    seg = np.zeros((h, w, 3), dtype=np.uint8)
    # class 1234 -> R = 1234 // 256 * 10 = 40, G = 1234 % 256 = 210; instance in B
    seg[2:8, 1:7] = (40, 210, 10)
    seg[6:12, 9:16] = (0, 5, 20)
    Image.fromarray(seg).save(folder / "ADE_train_00000001_seg.png")
    objects = {"annotation": {"object": [
        {"id": 1, "name": "chair", "raw_name": "chair", "parts": {"part_level": 0},
         "polygon": {"x": [1, 6, 6, 1], "y": [2, 2, 7, 7]}},
        {"id": 2, "name": "lamp, light", "raw_name": "lamp", "parts": {"part_level": 0},
         "polygon": {"x": [9, 15, 15, 9], "y": [6, 6, 11, 11]}},
        {"id": 3, "name": "leg", "parts": {"part_level": 1}, "polygon": {"x": [1, 2, 2], "y": [2, 2, 3]}},
    ]}}
    (folder / "ADE_train_00000001.json").write_text(json.dumps(objects))
    cls, inst = decode_ade20k_seg(seg)
    assert cls[3, 3] == 1234 and cls[7, 10] == 5 and cls[0, 15] == 0
    assert len(np.unique(inst)) == 3 and inst[3, 3] != inst[7, 10]
    fn = rect_mask_fn()
    (s,) = build_ade20k_inpaint(tmp_path / "ADE20K_2021_17_01", mask_fn=fn)
    assert s.prompt == "a photo of a chair and a lamp"
    assert len(fn.calls[0]) == 2 and s.key == "ade20k-ADE_train_00000001"
    (folder / "ADE_train_00000001.txt").write_text("a cosy bedroom\n")
    (s,) = build_ade20k_inpaint(tmp_path / "ADE20K_2021_17_01", mask_fn=rect_mask_fn())
    assert s.prompt == "a cosy bedroom"
    with pytest.raises(DataSourceError, match="validation"):
        list(build_ade20k_inpaint(tmp_path / "ADE20K_2021_17_01", split="validation", mask_fn=fn, allow_eval_split=True))


# ---------------------------------------------------------------------------------------------------- grounding


def test_draw_box_is_pixel_exact():
    img = Image.new("RGB", (64, 80), (10, 20, 30))
    out = arr(draw_box(img, [10, 20, 30, 40], (255, 0, 0), 3))
    red = (out == [255, 0, 0]).all(-1)
    assert box_pixels([10, 20, 30, 40], 64, 80) == (10, 20, 39, 59)
    assert red[20, 10:40].all() and red[59, 10:40].all() and red[20:60, 10].all() and red[20:60, 39].all()
    assert red[22, 12] and not red[23, 13]  # 3 px wide, growing inward
    assert not red[19, 10] and not red[20, 9] and not red[60, 39] and not red[59, 40]
    assert red.sum() == 30 * 40 - 24 * 34
    # fractional boxes round outward; boxes past the border are clipped
    assert box_pixels([10.4, 20.6, 5.2, 3.1], 64, 80) == (10, 20, 15, 23)
    assert box_pixels([-5, -5, 100, 100], 64, 80) == (0, 0, 63, 79)
    assert auto_line_width(640, 480) == 4


def test_blend_mask_exact():
    img = Image.new("RGB", (4, 3), (100, 50, 0))
    m = np.zeros((3, 4), dtype=bool)
    m[1, 1:3] = True
    out = arr(blend_mask(img, m, (255, 0, 255), 0.5))
    assert out[1, 1].tolist() == [178, 25, 128] and out[0, 0].tolist() == [100, 50, 0]


def make_refer(tmp: Path) -> Path:
    root = tmp / "refcoco"
    imgs = tmp / "images" / "mscoco" / "images" / "train2014"
    imgs.mkdir(parents=True)
    root.mkdir()
    Image.new("RGB", (48, 40), (90, 90, 90)).save(imgs / "COCO_train2014_000000000009.png")
    inst = {
        "images": [{"id": 9, "file_name": "COCO_train2014_000000000009.png", "height": 40, "width": 48}],
        "annotations": [{"id": 100, "image_id": 9, "category_id": 1, "iscrowd": 0, "bbox": [5, 6, 20, 10],
                         "segmentation": [[5, 6, 24, 6, 24, 15, 5, 15]]}],
        "categories": [{"id": 1, "name": "person"}],
    }
    (root / "instances.json").write_text(json.dumps(inst))
    refs = [{"ref_id": 7, "ann_id": 100, "image_id": 9, "split": "train", "category_id": 1,
             "file_name": "COCO_train2014_000000000009_100.jpg",
             "sentences": [{"sent": "man on the left", "raw": "Man on the left"}, {"sent": "left guy"}]},
            {"ref_id": 8, "ann_id": 100, "image_id": 9, "split": "val", "category_id": 1,
             "sentences": [{"sent": "val only"}]}]
    (root / "refs(unc).json").write_text(json.dumps(refs))
    return root


def test_refcoco_refer_layout_box_and_mask(tmp_path):
    root = make_refer(tmp_path)
    boxes = list(build_refcoco(root, tasks=("box",), line_width=2))
    assert [s.key for s in boxes] == ["refcoco-ref7-0", "refcoco-ref7-1"]  # split filter drops ref 8
    s = boxes[0]
    colour = s.meta["colour"]
    assert s.prompt == f"draw a {colour} box around man on the left" and s.task == "ground"
    rgb = np.array(GROUNDING_COLOURS[colour])
    out = arr(s.target)
    on = (out == rgb).all(-1)
    assert on[6, 5:25].all() and on[15, 5:25].all() and on[6:16, 5].all() and on[6:16, 24].all()
    assert on.sum() == 20 * 10 - 16 * 6 and (arr(s.source) == 90).all()
    masks = list(build_refcoco(root, tasks=("mask",), alpha=0.5))
    m = masks[1]
    c = np.array(GROUNDING_COLOURS[m.meta["colour"]])
    assert m.prompt == f"cover left guy with a {m.meta['colour']} mask"
    assert arr(m.target)[10, 10].tolist() == np.round(0.5 * 90 + 0.5 * c).astype(int).tolist()
    assert arr(m.target)[30, 40].tolist() == [90, 90, 90]
    encodes(boxes + masks)
    one = list(build_refcoco(root, per_expression=False, split=None, allow_eval_split=True))
    assert len(one) == 2 and all(s.meta["ground_task"] in ("box", "mask") for s in one)
    scaled = next(iter(build_refcoco(root, tasks=("box",), max_side=24, line_width=1)))
    assert scaled.target.size == (24, 20) and scaled.meta["boxes_xywh"] == [[2.5, 3.0, 10.0, 5.0]]


def test_refcoco_mdetr_and_parquet_layouts(tmp_path):
    imgs = tmp_path / "train2014"
    imgs.mkdir()
    Image.new("RGB", (30, 20), (0, 0, 0)).save(imgs / "COCO_train2014_000000000005.png")
    mdetr = {
        "images": [{"id": 0, "file_name": "COCO_train2014_000000000005.png", "height": 20, "width": 30,
                    "caption": "the small box", "original_id": 5}],
        "annotations": [{"id": 1, "image_id": 0, "category_id": 3, "bbox": [2, 3, 4, 5], "iscrowd": 0}],
        "categories": [{"id": 3, "name": "box"}],
    }
    ann = tmp_path / "final_refcoco_train.json"
    ann.write_text(json.dumps(mdetr))
    (s,) = build_refcoco(ann, images=imgs, tasks=("box", "mask"), line_width=1)
    assert s.meta["ground_task"] == "box"  # no segmentation -> only the box task is possible
    assert s.prompt.endswith("around the small box") and s.meta["image_id"] == 5
    assert (arr(s.target)[3, 2:6] == GROUNDING_COLOURS[s.meta["colour"]]).all()

    pqf = write_parquet(
        tmp_path / "lmms" / "data" / "val-00000-of-00001.parquet",
        {
            "question_id": ["q1"],
            "image": [img_cell(Image.new("RGB", (30, 20), (5, 5, 5)))],
            "question": ["Please carefully observe the area circled in the image."],
            "answer": [["red car", "car on right"]],
            "segmentation": [[10.0, 4.0, 20.0, 4.0, 20.0, 12.0, 10.0, 12.0]],
            "bbox": [[10.0, 4.0, 10.0, 8.0]],
            "iscrowd": [0],
            "file_name": ["COCO_train2014_000000000001.jpg"],
        },
        {"image": IMG_STRUCT},
    )
    out = list(build_refcoco(pqf.parent.parent, split="val", tasks=("mask",), dataset="refcocog", allow_eval_split=True))
    assert [o.key for o in out] == ["refcocog-qq1-0", "refcocog-qq1-1"]
    t = arr(out[0].target)
    assert (t[6, 12] != 5).any() and (t[0, 0] == 5).all()


def test_lvis_instance_and_referring(tmp_path):
    root = tmp_path / "lvis"
    (root / "train2017").mkdir(parents=True)
    Image.new("RGB", (40, 30), (50, 60, 70)).save(root / "train2017" / "000000000042.jpg", quality=100)
    lvis = {
        "images": [{"id": 42, "height": 30, "width": 40,
                    "coco_url": "http://images.cocodataset.org/train2017/000000000042.jpg"}],
        "annotations": [
            {"id": 1, "image_id": 42, "category_id": 1, "bbox": [1, 1, 8, 8], "segmentation": [[1, 1, 9, 1, 9, 9, 1, 9]]},
            {"id": 2, "image_id": 42, "category_id": 1, "bbox": [20, 1, 8, 8], "segmentation": [[20, 1, 28, 1, 28, 9, 20, 9]]},
            {"id": 3, "image_id": 42, "category_id": 2, "bbox": [5, 15, 20, 10],
             "segmentation": [[5, 15, 25, 15, 25, 25, 5, 25]]},
            {"id": 4, "image_id": 42, "category_id": 2, "bbox": [0, 0, 0.5, 0.5], "segmentation": [[0, 0, 1, 0, 1, 1]]},
        ],
        "categories": [{"id": 1, "name": "apple"}, {"id": 2, "name": "bow_(weapon)"}],
    }
    (root / "lvis_v1_train.json").write_text(json.dumps(lvis))
    samples = {s.meta["category_id"]: s for s in build_lvis(root, line_width=1)}
    encodes(samples.values())
    apple, bow = samples[1], samples[2]
    assert apple.meta["ground_task"] == "instance" and apple.meta["num_instances"] == 2
    assert apple.prompt == f"draw a {apple.meta['colour']} box around an apple"
    assert bow.meta["num_instances"] == 1  # the tiny second bow is dropped by min_box_frac
    assert bow.meta["class"] == "bow"
    expected = {
        "box": f"draw a {bow.meta['colour']} box around the bow",
        "mask": f"cover the bow with a {bow.meta['colour']} mask",
        "instance": f"draw a {bow.meta['colour']} box around a bow",
    }
    assert bow.prompt == expected[bow.meta["ground_task"]]
    only_box = next(s for s in build_lvis(root, tasks=("box",), line_width=1) if s.meta["category_id"] == 2)
    on = (arr(only_box.target) == GROUNDING_COLOURS[only_box.meta["colour"]]).all(-1)
    assert on[15, 5:25].all() and on[24, 5:25].all() and on.sum() == 2 * 20 + 2 * 8


# -------------------------------------------------------------------------------------------------- controllable


def make_multigen(tmp: Path) -> Path:
    root = tmp / "MultiGen-20M"
    (root / "images" / "aesthetics_6_plus_0").mkdir(parents=True)
    (root / "conditions" / "group_0_depth").mkdir(parents=True)
    (root / "json_files").mkdir()
    img = Image.new("RGB", (32, 24), (0, 0, 0))
    img.paste((255, 255, 255), (8, 6, 24, 18))
    img.save(root / "images" / "aesthetics_6_plus_0" / "00001.png")
    Image.new("L", (16, 12), 77).save(root / "conditions" / "group_0_depth" / "00001.png")
    depth = [{"source": "aesthetics_6_plus_0/00001.png", "prompt": "a white square",
              "control_depth": "group_0_depth/00001.png"}]
    canny = [{"source": "./aesthetics_6_plus_0/00001.png", "prompt": "a white square",
              "control_canny": "group_0_canny/00001.png"}]
    (root / "json_files" / "aesthetics_plus_all_group_depth_all.json").write_text(
        "\n".join(json.dumps(r) for r in depth) + "\n")
    (root / "json_files" / "aesthetics_plus_all_group_canny_all.json").write_text(
        "\n".join(json.dumps(r) for r in canny) + "\n")
    return root


class _EdgeNet:
    """Factory target for the safetensors detector path (a tiny conv net)."""

    def __new__(cls):
        import torch

        net = torch.nn.Sequential(torch.nn.Conv2d(3, 1, 1), torch.nn.Sigmoid())
        return net


def test_multigen_json_layout_canny_depth(tmp_path):
    root = make_multigen(tmp_path)
    out = {s.cond_type: s for s in build_multigen(root, cond_types=("canny", "depth"))}
    assert set(out) == {"canny", "depth"}
    c, d = out["canny"], out["depth"]
    assert c.prompt == "a white square" and c.task == "control"
    assert c.meta["condition"] == "kornia-canny(0.1,0.2)"
    assert (arr(c.source) == arr(canny_edges(c.target, 0.1, 0.2))).all() and arr(c.source).max() == 255
    assert d.source.size == d.target.size == (32, 24) and (arr(d.source) == 77).all() and d.meta["cond_resized"]
    assert d.key == "multigen-aesthetics_6_plus_0_00001_png-depth"
    encodes(out.values())
    one = list(build_multigen(root, cond_types=("canny", "depth"), per_image="one"))
    assert len(one) == 1
    with pytest.raises(DataSourceError, match="cond_types"):
        list(build_multigen(root, cond_types=("normal",)))


def test_multigen_hed_lineart_detectors(tmp_path):
    import torch
    from safetensors.torch import save_file

    root = make_multigen(tmp_path)
    with pytest.raises(DataSourceError, match="hed_detector"):
        build_multigen(root, cond_types=("hed",))
    with pytest.raises(DataSourceError, match="lineart_detector"):
        build_multigen(root, cond_types=("canny", "lineart"))

    class Mean(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=1, keepdim=True)

    ts = tmp_path / "hed.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.trace(Mean(), torch.rand(1, 3, 8, 8)).save(str(ts))
    net = _EdgeNet()
    st = tmp_path / "lineart.safetensors"
    save_file(net.state_dict(), str(st))
    samples = {
        s.cond_type: s
        for s in build_multigen(
            root, cond_types=("hed", "lineart"), hed_detector=ts, lineart_detector=st, lineart_module=_EdgeNet,
        )
    }
    hed = arr(samples["hed"].source)
    assert hed[12, 12].tolist() == [255, 255, 255] and hed[0, 0].tolist() == [0, 0, 0]
    assert samples["hed"].meta["condition"] == "hed"
    x = torch.from_numpy(arr(samples["lineart"].target).astype(np.float32) / 255).permute(2, 0, 1)[None]
    with torch.no_grad():
        want = (255 - (net(x)[0, 0] * 255).round()).numpy()  # lineart is inverted by default
    assert np.abs(arr(samples["lineart"].source)[..., 0] - want).max() <= 1
    with pytest.raises(DataSourceError, match="module"):
        TorchEdgeDetector(st)
    # a torch.export program (.pt2) with dynamic H, W
    dims = {2: torch.export.Dim("h", min=2, max=1024), 3: torch.export.Dim("w", min=2, max=1024)}
    pt2 = tmp_path / "edges.pt2"
    torch.export.save(torch.export.export(Mean(), (torch.rand(1, 3, 8, 8),), dynamic_shapes=(dims,)), str(pt2))
    det = TorchEdgeDetector(pt2, name="hed", invert=True)
    assert arr(det(Image.new("RGB", (10, 6), (255, 255, 255)))).max() == 0
    with pytest.raises(DataSourceError, match="unsupported detector file type"):
        (tmp_path / "model.pth").write_bytes(b"x")
        TorchEdgeDetector(tmp_path / "model.pth")


def test_multigen_online_mode(tmp_path):
    root = make_multigen(tmp_path)
    (s,) = build_multigen(root, cond_types=("hed",), hed_from="online")
    assert s.meta["condition"] == "online" and arr(s.source).max() == 0  # black placeholder, never the target
    with pytest.raises(DataSourceError, match="no detector"):
        apply_online_condition(s, {})
    s2 = apply_online_condition(s, {"hed": lambda im: im.convert("L").convert("RGB")})
    assert (arr(s2.source) == arr(s2.target)).all() and s2.meta["condition"].startswith("online:")


def test_control_folder_and_parquet_layouts(tmp_path):
    root = tmp_path / "ctrl"
    (root / "images").mkdir(parents=True)
    (root / "seg").mkdir()
    noise_image(20, 16, 3).save(root / "images" / "a.png")
    (root / "images" / "a.txt").write_text("a noisy picture")
    Image.new("RGB", (20, 16), (1, 2, 3)).save(root / "seg" / "a.png")
    out = list(build_multigen(root, cond_types=("seg", "depth")))
    assert [s.cond_type for s in out] == ["seg"] and (arr(out[0].source) == [1, 2, 3]).all()
    assert out[0].prompt == "a noisy picture" and out[0].key == "folder-a-seg"

    pqf = write_parquet(
        tmp_path / "ade" / "data" / "train-00000-of-00001.parquet",
        {"image": [img_cell(noise_image(20, 16, 4))], "prompt": ["a room"],
         "control_seg": [img_cell(Image.new("RGB", (20, 16), (9, 9, 9)))]},
        {"image": IMG_STRUCT, "control_seg": IMG_STRUCT},
    )
    (s,) = build_multigen(pqf.parent.parent, cond_types=("seg",), split="train")
    assert s.prompt == "a room" and (arr(s.source) == 9).all()
    bad = write_parquet(tmp_path / "bad.parquet", {"img": [b"x"], "text": ["t"]})
    with pytest.raises(DataSourceError, match=r"bad.parquet lacks column\(s\) \['image'\]"):
        list(build_multigen(bad, cond_types=("seg",)))


# ------------------------------------------------------------------------------------------------- Subject200K


def composite(panel: int, border: int, left_rgb, right_rgb) -> Image.Image:
    """A Subjects200K composite in the published geometry: (2S + 4b) x (S + 2b) (1056 x 528 for S = 512, b = 8),
    the panels where the dataset authors' loader crops them (Yuanshi9815/OminiControl, src/train/data.py,
    ``Subject200KDateset.__getitem__``, commit 1acdb07): left ``(b, b, S + b, S + b)``, right
    ``(S + 2b, b, 2S + 2b, S + b)``; the rest is white padding."""
    w, h = 2 * panel + 4 * border, panel + 2 * border
    im = Image.new("RGB", (w, h), (255, 255, 255))
    im.paste(left_rgb, (border, border, border + panel, border + panel))
    im.paste(right_rgb, (panel + 2 * border, border, 2 * panel + 2 * border, border + panel))
    return im


def test_split_composite_exact():
    im = composite(16, 4, (200, 0, 0), (0, 0, 200))
    left, right = split_composite(im, 4)
    assert left.size == right.size == (16, 16)
    assert (arr(left) == [200, 0, 0]).all() and (arr(right) == [0, 0, 200]).all()
    with pytest.raises(DataSourceError, match="too small"):
        split_composite(Image.new("RGB", (10, 5)), 8)


def test_subject200k_parquet(tmp_path):
    qa_type = pa.struct([("compositeStructure", pa.int64()), ("objectConsistency", pa.int64()),
                         ("imageQuality", pa.int64())])
    desc_type = pa.struct([("item", pa.string()), ("description_0", pa.string()), ("description_1", pa.string()),
                           ("category", pa.string()), ("description_valid", pa.bool_())])
    write_parquet(
        tmp_path / "Subjects200K" / "data" / "train-00000-of-00001.parquet",
        {
            "image": [img_cell(composite(16, 8, (200, 0, 0), (0, 0, 200))),
                      img_cell(composite(16, 8, (0, 200, 0), (9, 9, 9)))],
            "collection": ["collection_1", "collection_2"],
            "quality_assessment": [
                {"compositeStructure": 5, "objectConsistency": 5, "imageQuality": 5},
                {"compositeStructure": 5, "objectConsistency": 3, "imageQuality": 5},
            ],
            "description": [
                {"item": "red mug", "description_0": "a red mug on a desk", "description_1": "a red mug in snow",
                 "category": "kitchen", "description_valid": True},
                {"item": "green hat", "description_0": "a green hat", "description_1": "a green hat on a bed",
                 "category": "clothing", "description_valid": True},
            ],
        },
        {"image": IMG_STRUCT, "quality_assessment": qa_type, "description": desc_type},
    )
    root = tmp_path / "Subjects200K"
    samples = list(build_subject200k(root))
    assert len(samples) == 4
    encodes(samples)
    l2r, r2l = samples[0], samples[1]
    assert l2r.task == "subject" and l2r.prompt == "a red mug in snow"
    assert (arr(l2r.source) == [200, 0, 0]).all() and (arr(l2r.target) == [0, 0, 200]).all()
    assert r2l.prompt == "a red mug on a desk" and (arr(r2l.source) == [0, 0, 200]).all()
    assert l2r.meta["item"] == "red mug" and l2r.source.size == (16, 16)
    good = list(build_subject200k(root, min_quality=5, directions="left_to_right"))
    assert [s.meta["item"] for s in good] == ["red mug"]
    assert [s.meta["collection"] for s in build_subject200k(root, collections=["collection_2"])] == ["collection_2"] * 2
    with pytest.raises(DataSourceError, match="description"):
        write_parquet(tmp_path / "x" / "train.parquet", {"image": [img_cell(composite(4, 0, (0, 0, 0), (1, 1, 1)))]},
                      {"image": IMG_STRUCT})
        list(build_subject200k(tmp_path / "x"))


# ----------------------------------------------------------------------------------------------------- editing


def test_magicbrush_parquet(tmp_path):
    src, tgt = noise_image(24, 20, 7), noise_image(24, 20, 8)
    mask = Image.new("RGB", (24, 20), (0, 0, 0))
    mask.paste((255, 255, 255), (4, 4, 10, 10))
    write_parquet(
        tmp_path / "MagicBrush" / "data" / "train-00000-of-00001.parquet",
        {"img_id": ["327726", "327726"], "turn_index": [1, 2], "source_img": [img_cell(src), img_cell(tgt)],
         "mask_img": [img_cell(mask), img_cell(mask)], "instruction": ["add a hat", "make it  red"],
         "target_img": [img_cell(tgt), img_cell(src)]},
        {"source_img": IMG_STRUCT, "mask_img": IMG_STRUCT, "target_img": IMG_STRUCT, "turn_index": pa.int32()},
    )
    write_parquet(
        tmp_path / "MagicBrush" / "data" / "dev-00000-of-00001.parquet",
        {"img_id": ["1"], "turn_index": [1], "source_img": [img_cell(src)], "mask_img": [img_cell(mask)],
         "instruction": ["x"], "target_img": [img_cell(tgt)]},
        {"source_img": IMG_STRUCT, "mask_img": IMG_STRUCT, "target_img": IMG_STRUCT},
    )
    out = list(build_magicbrush(tmp_path / "MagicBrush", include_mask=True))
    assert [s.key for s in out] == ["magicbrush-train-327726-1", "magicbrush-train-327726-2"]
    encodes(out)
    assert out[0].prompt == "add a hat" and out[1].prompt == "make it red"
    assert (arr(out[0].source) == arr(src)).all() and (arr(out[0].target) == arr(tgt)).all()
    assert np.asarray(out[0].mask)[5, 5] == 255 and np.asarray(out[0].mask)[0, 0] == 0
    assert [s.meta["img_id"] for s in build_magicbrush(tmp_path / "MagicBrush", split="dev", allow_eval_split=True)] == ["1"]


def test_omniedit_parquet(tmp_path):
    src, tgt = noise_image(20, 16, 1), noise_image(30, 24, 2)
    write_parquet(
        tmp_path / "omni" / "data" / "train-00000-of-00002.parquet",
        {"omni_edit_id": ["e1", "e2"], "task": ["addition", "removal"], "src_img": [img_cell(src)] * 2,
         "edited_img": [img_cell(tgt)] * 2,
         "edited_prompt_list": [["add a cat", "put a cat on the sofa"], ["remove the lamp"]],
         "width": [20, 20], "height": [16, 16], "sc_score_1": [9, 4], "sc_score_2": [8, 9],
         "pq_score": [8, 8], "o_score": [8.5, 6.0]},
        {"src_img": IMG_STRUCT, "edited_img": IMG_STRUCT},
    )
    out = list(build_omniedit(tmp_path / "omni"))
    assert len(out) == 2 and out[0].prompt in ("add a cat", "put a cat on the sofa")
    encodes(out)
    assert out[0].target.size == out[0].source.size == (20, 16) and out[0].meta["target_resized"]
    assert out[0].meta["edit_task"] == "addition"
    again = list(build_omniedit(tmp_path / "omni"))
    assert [s.prompt for s in again] == [s.prompt for s in out]
    assert [s.meta["id"] for s in build_omniedit(tmp_path / "omni", min_sc_score=5)] == ["e1"]
    assert [s.meta["id"] for s in build_omniedit(tmp_path / "omni", tasks=["removal"])] == ["e2"]


def test_edit_folder_layouts(tmp_path):
    a = tmp_path / "pairs_a"
    a.mkdir()
    noise_image(16, 12, 1).save(a / "0001_source.png")
    noise_image(16, 12, 2).save(a / "0001_target.png")
    (a / "0001.txt").write_text("turn the sky pink\n")
    (s,) = build_edit_folder(a)
    assert s.prompt == "turn the sky pink" and s.key == "inhouse-0001" and s.mask is None
    (a / "0002_source.png").write_bytes(png_bytes(noise_image(16, 12, 3)))
    with pytest.raises(DataSourceError, match="0002_target"):
        list(build_edit_folder(a))
    b = tmp_path / "pairs_b"
    (b / "in").mkdir(parents=True)
    noise_image(16, 12, 4).save(b / "in" / "x.png")
    noise_image(16, 12, 5).save(b / "in" / "y.png")
    (b / "pairs.jsonl").write_text(json.dumps({"id": "p1", "source": "in/x.png", "target": "in/y.png",
                                               "instruction": "make it night"}) + "\n")
    (s,) = build_edit_folder(b, dataset="studio")
    assert s.key == "studio-p1" and s.prompt == "make it night"


# ---------------------------------------------------------------------------------------------------- registry


def test_registry():
    assert set(BUILDERS) == set(BUILDER_TASKS)
    assert set(BUILDER_TASKS.values()) == set(TASKS)
    assert all(callable(fn) for fn in BUILDERS.values())
    with pytest.raises(KeyError, match="unknown builder 'nope'"):
        build("nope", "/x")
    assert safe_key("a.b", "c/d") == "a_b-c_d"


def test_registry_refcoco_variants_and_missing_root(tmp_path):
    root = make_refer(tmp_path)
    (s, *_) = build("refcoco+", root, tasks=("box",))
    assert s.key.startswith("refcoco_-") and s.meta["dataset"] == "refcoco+"
    with pytest.raises(DataSourceError, match="not found"):
        build("magicbrush", tmp_path / "missing")


def test_builder_output_feeds_the_shard_writer(tmp_path):
    shards = pytest.importorskip("lit_cologen.data.shards")
    import tarfile

    root = make_refer(tmp_path)
    with shards.ShardWriter(tmp_path / "out", "refcoco", maxcount=1) as w:
        for smp in build("refcoco", root):
            w.write(smp)
    tars = sorted((tmp_path / "out").glob("refcoco-*.tar"))
    assert len(tars) == 2
    with tarfile.open(tars[0]) as t:
        names = sorted(m.name for m in t.getmembers())
    assert names == [f"refcoco-ref7-0.{x}" for x in ("meta.json", "prompt.txt", "source.png", "target.png", "task.txt")]
