"""Inpainting masks (paper 4.2): exact geometry on tiny arrays, the 20/40/40 mixture, the IoU > 0.3 rejection rule."""

from __future__ import annotations

import numpy as np
import pytest

from lit_cologen.data.masks import (
    IRREGULAR_POINTS,
    MASK_KINDS,
    dilate,
    fill_polygon,
    irregular_mask,
    irregular_polygon,
    mask_box,
    mask_iou,
    random_mask,
    random_mask_candidate,
    sample_inpaint_mask,
    sample_mask,
)


def test_iou_by_hand():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[0:2, 0:2] = True  # 4 px
    b[1:3, 1:3] = True  # 4 px, overlapping a in exactly pixel (1, 1)
    assert mask_iou(a, b) == pytest.approx(1 / 7)
    assert mask_iou(a, a) == 1.0
    assert mask_iou(a, np.zeros((4, 4))) == 0.0
    assert mask_iou(np.zeros((4, 4)), np.zeros((4, 4))) == 0.0
    assert mask_iou(a.astype(np.uint8) * 255, b.astype(np.uint8)) == pytest.approx(1 / 7)  # any nonzero counts


def test_fill_polygon_square_and_triangle_by_hand():
    sq = fill_polygon(np.array([[1, 1], [5, 1], [5, 5], [1, 5]]), 8, 8)
    expected = np.zeros((8, 8), bool)
    expected[1:5, 1:5] = True  # centres 1.5 .. 4.5 are inside [1, 5]
    np.testing.assert_array_equal(sq, expected)
    # right triangle (0,0)-(4,0)-(0,4): pixel centre (x+.5, y+.5) inside iff x + y + 1 < 4 (strictly: on the
    # hypotenuse the even-odd rule counts the crossing only left of the edge)
    tri = fill_polygon(np.array([[0, 0], [4, 0], [0, 4]]), 5, 5)
    hand = np.array([[x + y + 1 < 4 for x in range(5)] for y in range(5)])
    np.testing.assert_array_equal(tri, hand)
    assert mask_box(tri) == (0, 0, 3, 3)
    assert mask_box(np.zeros((3, 3))) is None


def test_dilate_square_element():
    m = np.zeros((7, 7), bool)
    m[3, 3] = True
    d = dilate(m, 2)
    expected = np.zeros((7, 7), bool)
    expected[1:6, 1:6] = True
    np.testing.assert_array_equal(d, expected)
    np.testing.assert_array_equal(dilate(m, 0), m)


def test_irregular_polygon_has_20_vertices_inside_the_box():
    rng = np.random.default_rng(3)
    box = (5, 7, 29, 21)  # x0, y0, x1, y1 (exclusive)
    for _ in range(50):
        poly = irregular_polygon(rng, box)
        assert poly.shape == (IRREGULAR_POINTS, 2) == (20, 2)
        assert (poly[:, 0] >= 5).all() and (poly[:, 0] <= 29).all()
        assert (poly[:, 1] >= 7).all() and (poly[:, 1] <= 21).all()
        # uniform in arc length: consecutive vertices are about equally far apart
        chords = np.linalg.norm(np.roll(poly, -1, axis=0) - poly, axis=1)
        assert chords.max() / chords.min() < 2.5
    m, poly = irregular_mask(rng, box, 32, 40)
    assert m.shape == (32, 40) and m.any()
    ys, xs = np.nonzero(m)
    assert xs.min() >= 5 and xs.max() < 29 and ys.min() >= 7 and ys.max() < 21
    np.testing.assert_array_equal(m, fill_polygon(poly, 32, 40))  # the mask is exactly the filled polygon


def test_mixture_ratios_over_many_draws():
    rng = np.random.default_rng(0)
    obj = np.zeros((16, 16), bool)
    obj[2:6, 2:6] = True
    n = 3000
    kinds = [sample_mask(rng, 16, 16, [obj]).kind for _ in range(n)]
    freq = {k: kinds.count(k) / n for k in MASK_KINDS}
    assert freq["random"] == pytest.approx(0.2, abs=0.03)
    assert freq["object"] == pytest.approx(0.4, abs=0.03)
    assert freq["irregular"] == pytest.approx(0.4, abs=0.03)


def test_without_objects_every_mask_is_random():
    rng = np.random.default_rng(1)
    for _ in range(50):
        d = sample_mask(rng, 12, 20, [np.zeros((12, 20), bool)])
        assert d.kind == "random" and d.object_index is None
        assert d.mask.dtype == np.uint8 and d.mask.shape == (12, 20)
        assert set(np.unique(d.mask)) <= {0, 255} and d.mask.any()


def test_random_masks_honour_the_iou_rule():
    obj = np.zeros((32, 32), bool)
    obj[:, :16] = True  # a big object: many candidates overlap it by more than 0.3
    rng = np.random.default_rng(5)
    rejected_some = False
    for _ in range(200):
        d = sample_mask(rng, 32, 32, [obj], ratios=(1, 0, 0))
        if d.kind == "random":
            assert mask_iou(d.mask, obj) <= 0.3
            rejected_some |= d.attempts > 1
    assert rejected_some


def test_a_rejected_candidate_is_really_redrawn():
    obj = np.zeros((32, 32), bool)
    obj[:, :16] = True
    for seed in range(200):  # find a seed whose first candidate breaks the rule
        first = random_mask_candidate(np.random.default_rng(seed), 32, 32)
        if mask_iou(first, obj) > 0.3:
            break
    else:
        pytest.fail("no seed with a rejected first candidate")
    mask, attempts = random_mask(np.random.default_rng(seed), 32, 32, [obj])
    assert attempts > 1
    assert mask_iou(mask, obj) <= 0.3
    assert not np.array_equal(mask, first)


def test_impossible_rule_falls_back_to_an_object_mask():
    obj = np.zeros((16, 16), bool)
    obj[4:8, 4:8] = True
    d = sample_mask(np.random.default_rng(0), 16, 16, [obj], ratios=(1, 0, 0), max_iou=-1.0)
    assert d.kind == "object" and d.object_index == 0


def test_object_masks_cover_the_object_within_the_dilation():
    obj = np.zeros((20, 20), bool)
    obj[5:9, 6:12] = True
    rng = np.random.default_rng(2)
    for _ in range(40):
        d = sample_mask(rng, 20, 20, [np.zeros((20, 20), bool), obj], ratios=(0, 1, 0), max_dilation=2)
        m = d.mask > 0
        assert d.kind == "object" and d.object_index == 1  # the empty object is never chosen
        assert m[obj].all()
        assert not m[~dilate(obj, 2)].any()


def test_same_seed_same_mask_and_builder_signature():
    obj = np.zeros((24, 24), bool)
    obj[3:15, 3:10] = True
    a = sample_inpaint_mask(np.random.default_rng(9), [obj], 24, 24)
    b = sample_inpaint_mask(np.random.default_rng(9), [obj], 24, 24)
    assert isinstance(a, tuple) and len(a) == 2 and a[1] in MASK_KINDS
    np.testing.assert_array_equal(a[0], b[0])
    assert a[0].dtype == np.uint8 and set(np.unique(a[0])) <= {0, 255}


def test_mask_shapes_are_checked():
    with pytest.raises(ValueError, match="does not match"):
        sample_mask(np.random.default_rng(0), 8, 8, [np.zeros((8, 9), bool)])
    with pytest.raises(ValueError, match="ratios"):
        sample_mask(np.random.default_rng(0), 8, 8, [], ratios=(1, 1))
