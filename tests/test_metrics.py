"""Known-answer tests of the evaluation metrics (benchmarks.metrics), on random-init backbones saved to tmp_path
and loaded back through the same loading code real weights use."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.metrics import (
    Backbones,
    CLIPEncoder,
    ControlNetHED,
    DepthEstimator,
    DepthRMSE,
    DinoEncoder,
    EdgeF1,
    FIDInceptionV3,
    HEDAnnotator,
    HFSegmenter,
    ImageSimilarity,
    ImageTextSimilarity,
    L1Distance,
    LineartAnnotator,
    LineDrawingGenerator,
    MeanIoU,
    MissingWeightsError,
    SubsetMean,
    binary_f1,
    canny_edges,
    depth_rmse,
    fid_over_groups,
    l1_distance,
    load_fid_inception,
    load_images01,
    ms_ssim,
    normalize_depth_label,
    paired_cosine,
    psnr,
    quantize_depth,
    sha256_file,
    ssim,
)
from benchmarks.metrics.random_init import save_random_clip, save_random_dino, save_random_dpt, save_random_segformer

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def rand_image(seed: int, w: int = 48, h: int = 40) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def manual_preprocess(im: Image.Image, short: int, crop: int, mean, std) -> torch.Tensor:
    """Reference preprocessing written with PIL + numpy only: resize short side (bicubic), centre crop, normalise."""
    w, h = im.size
    if w <= h:
        nw, nh = short, int(short * h / w)
    else:
        nw, nh = int(short * w / h), short
    im = im.resize((nw, nh), Image.Resampling.BICUBIC)
    left = int(round((nw - crop) / 2.0))
    top = int(round((nh - crop) / 2.0))
    im = im.crop((left, top, left + crop, top + crop))
    arr = (np.asarray(im, dtype=np.float32) / 255.0 - mean) / std
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())[None]


# ------------------------------------------------------------------------------------------------------------ CLIP


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "tiny-clip.pt"
    model = save_random_clip(path, "tiny", seed=0)
    return path, model


def test_clip_loader_matches_direct_model(clip_file):
    path, ref = clip_file
    enc = CLIPEncoder.from_file(path)
    images = [rand_image(1), rand_image(2, 40, 56)]
    got = enc.encode_images(images)
    with torch.no_grad():
        want = torch.cat([ref.encode_image(manual_preprocess(im, 32, 32, CLIP_MEAN, CLIP_STD)) for im in images])
    assert got.shape == (2, 16)
    torch.testing.assert_close(got, want.float(), rtol=1e-4, atol=1e-5)

    import clip

    texts = ["a red circle", "a photo of a dog"]
    with torch.no_grad():
        want_t = ref.encode_text(clip.tokenize(texts))
    torch.testing.assert_close(enc.encode_texts(texts), want_t.float(), rtol=1e-4, atol=1e-5)
    assert enc.weights()["sha256"] == sha256_file(path)


def test_clip_safetensors_and_tensor_input(tmp_path):
    path = tmp_path / "clip.safetensors"
    save_random_clip(path, "tiny", seed=3)
    enc = CLIPEncoder.from_file(path)
    im = rand_image(5, 32, 32)
    t = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    torch.testing.assert_close(enc.encode_images(t), enc.encode_images([im]))


def test_clip_similarity_metrics(clip_file):
    path, ref = clip_file
    enc = CLIPEncoder.from_file(path)
    a, b = rand_image(10), rand_image(11)
    sim = ImageSimilarity(enc)
    v = sim.score([a, a], [a, b])
    assert v[0].item() == pytest.approx(1.0, abs=1e-5)
    ea, eb = enc.encode_images([a]), enc.encode_images([b])
    assert v[1].item() == pytest.approx(torch.nn.functional.cosine_similarity(ea, eb).item(), abs=1e-5)
    assert sim.compute().item() == pytest.approx((1.0 + v[1].item()) / 2, abs=1e-6)

    ts = ImageTextSimilarity(enc, scale=100.0, clamp_min=0.0)
    vals = ts.score([a], ["a dog"])
    cos = torch.nn.functional.cosine_similarity(ea, enc.encode_texts(["a dog"])).item()
    assert vals.item() == pytest.approx(max(100 * cos, 0.0), abs=1e-3)


# ------------------------------------------------------------------------------------------------------------ DINO


@pytest.fixture(scope="module")
def dino_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dino") / "dino-tiny"
    model = save_random_dino(folder, "tiny", seed=0)
    return folder, model


def test_dino_loader_matches_direct_model(dino_folder):
    folder, ref = dino_folder
    enc = DinoEncoder.from_folder(folder)
    images = [rand_image(3, 300, 260), rand_image(4, 256, 320)]
    got = enc.encode_images(images)
    with torch.no_grad():
        want = torch.cat([
            ref(pixel_values=manual_preprocess(im, 256, 224, IMAGENET_MEAN, IMAGENET_STD)).last_hidden_state[:, 0]
            for im in images
        ])
    assert got.shape == (2, 32)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    same = ImageSimilarity(enc).score([images[0]], [images[0]])
    assert same.item() == pytest.approx(1.0, abs=1e-5)
    assert "model.safetensors" in enc.weights()["sha256"]


def test_dino_vits16_architecture():
    from transformers import ViTModel

    cfg = DinoEncoder.vits16_config()
    n = sum(p.numel() for p in ViTModel(cfg, add_pooling_layer=False).parameters())
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.patch_size) == (384, 12, 6, 16)
    assert 21.5e6 < n < 22.0e6  # DINO ViT-S/16: 21.7 M parameters


def test_missing_weights_errors_name_the_backbone(tmp_path):
    with pytest.raises(MissingWeightsError, match="CLIP backbone.*not found"):
        CLIPEncoder.from_file(tmp_path / "nope.pt")
    with pytest.raises(MissingWeightsError, match="DINO backbone.*not found"):
        DinoEncoder.from_folder(tmp_path / "nope")
    with pytest.raises(MissingWeightsError, match="clip_b32.*--backbone clip_b32=PATH"):
        Backbones().clip("clip_b32")
    with pytest.raises(KeyError, match="unknown backbone"):
        Backbones(paths={"clip_b99": "x"})


def test_backbones_registry_records_hashes(clip_file, dino_folder, tmp_path):
    path, _ = clip_file
    folder, _ = dino_folder
    wd = tmp_path / "weights"
    wd.mkdir()
    (wd / "ViT-B-32.pt").write_bytes(path.read_bytes())
    bb = Backbones(paths={"dino_vits16": folder}, weights_dir=wd)
    assert bb.clip("clip_b32") is bb.clip("clip_b32")  # cached
    bb.dino()
    used = bb.used()
    assert used["clip_b32"]["sha256"] == sha256_file(path)
    assert set(used) == {"clip_b32", "dino_vits16"}


# ------------------------------------------------------------------------------------------------------------ pixel


def test_l1_ssim_psnr_known_answers():
    a = torch.tensor([[[[0.0, 1.0], [0.5, 0.25]]]])  # [1, 1, 2, 2]
    b = torch.tensor([[[[1.0, 1.0], [0.0, 0.75]]]])
    # |a - b| = 1, 0, 0.5, 0.5 -> mean 0.5
    assert l1_distance(a, b).item() == pytest.approx(0.5)
    assert l1_distance(a, a).item() == 0.0
    # mse = (1 + 0 + 0.25 + 0.25) / 4 = 0.375 -> psnr = -10 log10(0.375)
    assert psnr(a, b).item() == pytest.approx(-10 * math.log10(0.375), rel=1e-5)
    assert psnr(a, a).item() == 100.0
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(ssim(x, x), torch.ones(2))
    y = torch.rand(1, 1, 192, 192)
    assert ms_ssim(y, y).item() == pytest.approx(1.0, abs=1e-5)
    assert ssim(x, torch.rand(2, 3, 32, 32)).max() < 0.5
    m = L1Distance()
    m.update(a, b)
    m.update(a, a)
    assert m.compute().item() == pytest.approx(0.25)


def test_load_images01_resizes_to_reference():
    im = Image.new("RGB", (10, 6), (255, 0, 0))
    t = load_images01([im], size=(4, 4))
    assert t.shape == (1, 3, 4, 4)
    torch.testing.assert_close(t[0, :, 0, 0], torch.tensor([1.0, 0.0, 0.0]))


# ------------------------------------------------------------------------------------------------------------ edges


def test_binary_f1_known_answer():
    pred = torch.tensor([[1, 1, 0], [0, 1, 0]])
    target = torch.tensor([[1, 0, 0], [0, 1, 1]])
    # tp = 2, fp = 1, fn = 1 -> F1 = 4 / (4 + 1 + 1) = 2/3
    assert binary_f1(pred, target).item() == pytest.approx(2 / 3)
    assert binary_f1(target, target).item() == 1.0
    assert binary_f1(torch.zeros(3), torch.zeros(3)).item() == 0.0


def test_canny_f1_identical_images_is_one():
    img = torch.zeros(2, 3, 64, 64)
    img[:, :, 16:48, 16:48] = 1.0
    edges = canny_edges(img, 0.1, 0.2)
    assert edges.shape == (2, 1, 64, 64)
    assert set(edges.unique().tolist()) <= {0.0, 1.0} and edges.sum() > 0
    f1 = EdgeF1()
    assert f1.score(edges, canny_edges(img.clone())).item() == 1.0
    f1.update(edges, torch.zeros_like(edges))
    assert f1.compute().item() == pytest.approx(0.5)


def test_hed_and_lineart_annotators_load(tmp_path):
    torch.manual_seed(0)
    hed = ControlNetHED()
    torch.save(hed.state_dict(), tmp_path / "ControlNetHED.pth")
    ann = HEDAnnotator.from_file(tmp_path / "ControlNetHED.pth")
    x = torch.rand(1, 3, 32, 32)
    out = ann(x)
    assert out.shape == (1, 1, 32, 32) and 0 <= out.min() and out.max() <= 1
    ref = HEDAnnotator(hed)(x)
    torch.testing.assert_close(out, ref)

    gen = LineDrawingGenerator()
    torch.save(gen.state_dict(), tmp_path / "lineart.pth")
    la = LineartAnnotator.from_file(tmp_path / "lineart.pth")
    out = la(x)
    assert out.shape == (1, 1, 32, 32)
    with torch.no_grad():
        want = 1 - gen.eval()(x)
    assert (out - want).abs().max() <= 1 / 255 + 1e-6  # 8-bit quantised like the reference script
    with pytest.raises(MissingWeightsError, match="HED annotator"):
        HEDAnnotator.from_file(tmp_path / "missing.pth")


# ------------------------------------------------------------------------------------------------------------ depth


def test_depth_quantisation_and_rmse_by_hand():
    d = np.array([[0.0, 1.0], [2.0, 4.0]])
    np.testing.assert_array_equal(quantize_depth(d, "max"), [[0, 63], [127, 255]])
    np.testing.assert_array_equal(quantize_depth(d + 1, "minmax"), [[0, 63], [127, 255]])
    np.testing.assert_array_equal(normalize_depth_label(np.array([[10, 20], [30, 50]], dtype=np.uint8)), [[0, 63], [127, 255]])
    p = torch.tensor([[[0.0, 3.0], [4.0, 5.0]]])
    t = torch.tensor([[[0.0, 0.0], [0.0, 5.0]]])
    # squared errors 0, 9, 16, 0 -> mean 6.25 -> rmse 2.5
    assert depth_rmse(p, t).item() == pytest.approx(2.5)
    m = DepthRMSE()
    m.update(p, t)
    m.update(t, t)
    assert m.compute().item() == pytest.approx(1.25)


def test_dpt_depth_estimator_tiny(tmp_path):
    model = save_random_dpt(tmp_path / "dpt")
    est = DepthEstimator.from_folder(tmp_path / "dpt")
    ims = [rand_image(7, 48, 40), rand_image(8, 48, 40)]
    out = est(ims, (48, 40))
    assert out.shape == (2, 40, 48)
    assert out.min() >= 0 and out.max() <= 255 and out.max() > 200  # divided by its max -> reaches ~255
    # independent path: the model called directly, quantised and resized by hand
    from transformers import DPTImageProcessorPil  # PIL resize: transformers 4.x DPTImageProcessor, as ControlNet++ ran

    proc = DPTImageProcessorPil(size={"height": 32, "width": 32})
    with torch.no_grad():
        depth = model(**proc(images=ims[:1], return_tensors="pt")).predicted_depth[0].numpy()
    q = (np.clip(depth / depth.max(), 0, 1) * 255).astype(np.uint8)
    want = np.asarray(Image.fromarray(q).convert("RGB").resize((48, 40), Image.Resampling.BILINEAR).convert("L"))
    np.testing.assert_array_equal(out[0].numpy(), want.astype(np.float32))
    assert depth_rmse(out, out.clone()).max().item() == 0.0


# ------------------------------------------------------------------------------------------------------------ seg


def test_miou_by_hand():
    pred = torch.tensor([[0, 0, 1], [1, 1, 2], [2, 2, 2]])
    target = torch.tensor([[0, 1, 1], [1, 1, 2], [255, 2, 0]])
    # ignore (2,0). class 0: I = 1 (0,0); pred0 = {(0,0),(0,1)}, tgt0 = {(0,0),(2,2)} -> U = 3 -> 1/3
    # class 1: pred1 = {(0,2),(1,0),(1,1)}, tgt1 = {(0,1),(0,2),(1,0),(1,1)} -> I = 3, U = 4 -> 3/4
    # class 2: pred2 (not ignored) = {(1,2),(2,1),(2,2)}, tgt2 = {(1,2),(2,1)} -> I = 2, U = 3 -> 2/3
    m = MeanIoU(num_classes=4)
    m.update(pred[None], target[None])
    iou = m.per_class_iou()
    assert iou[:3].tolist() == pytest.approx([1 / 3, 3 / 4, 2 / 3])
    assert math.isnan(iou[3].item())  # absent everywhere -> skipped
    assert m.compute().item() == pytest.approx((1 / 3 + 3 / 4 + 2 / 3) / 3)
    m2 = MeanIoU(num_classes=4)
    m2.update(target[None], target[None])
    assert m2.compute().item() == pytest.approx(1.0)


def test_hf_segmenter_tiny(tmp_path):
    save_random_segformer(tmp_path / "seg", num_labels=5)
    seg = HFSegmenter.from_folder(tmp_path / "seg")
    ims = [rand_image(9, 48, 40)]
    labels = seg(ims, (48, 40))
    assert labels.shape == (1, 40, 48) and labels.dtype == torch.long
    assert labels.min() >= 0 and labels.max() < 5
    m = MeanIoU(5)
    m.update(labels, seg(ims, (48, 40)))
    assert m.compute().item() == pytest.approx(1.0)
    with pytest.raises(MissingWeightsError, match="preprocessor_config.json"):
        (tmp_path / "seg" / "preprocessor_config.json").unlink()
        HFSegmenter.from_folder(tmp_path / "seg")


# ------------------------------------------------------------------------------------------------------------ FID


class MeanColour(torch.nn.Module):
    """Feature = mean colour per channel (3 features): FID reduces to hand-computable Gaussians."""

    num_features = 3

    def forward(self, x):
        return x.float().mean(dim=(2, 3)).double()


def test_fid_known_answers():
    g = torch.Generator().manual_seed(0)
    real = torch.rand(16, 3, 8, 8, generator=g)
    shift = torch.tensor([0.1, -0.05, 0.2]).view(1, 3, 1, 1)
    out = fid_over_groups(MeanColour(), [real], {"group_0": [real.clone()], "group_1": [real + shift]})
    assert out["group_0"] == pytest.approx(0.0, abs=1e-6)
    # same covariance, means differ by `shift` -> FID = |shift|^2
    assert out["group_1"] == pytest.approx(0.01 + 0.0025 + 0.04, rel=1e-4)
    assert out["mean"] == pytest.approx((out["group_0"] + out["group_1"]) / 2)


def test_fid_inception_round_trip(tmp_path):
    torch.manual_seed(0)
    net = FIDInceptionV3("fid")
    assert sum(p.numel() for p in net.parameters()) > 20e6
    torch.save(net.net.state_dict(), tmp_path / "pt_inception.pth")
    loaded = load_fid_inception(tmp_path / "pt_inception.pth")
    x = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        a, b = net.eval()(x), loaded(x)
    assert a.shape == (1, 2048)
    torch.testing.assert_close(a, b)
    torch.save({"foo": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not an Inception"):
        load_fid_inception(tmp_path / "bad.pth")


# ------------------------------------------------------------------------------------------------------------ reduction


def test_subset_mean_and_merge():
    m = SubsetMean(["object", "live"])
    m.update(torch.tensor([1.0, 2.0, 4.0, float("nan")]), [[0], [0], [1], [1]])
    res = m.compute()
    assert res["all"] == {"mean": pytest.approx(7 / 3), "n": 3}
    assert res["object"]["mean"] == pytest.approx(1.5) and res["live"]["n"] == 1
    # what DDP does: states summed across processes
    a, b = SubsetMean(["object", "live"]), SubsetMean(["object", "live"])
    a.update(torch.tensor([4.0]), [[1]])
    b.update(torch.tensor([3.0]), [[1]])
    a.merge_state(b)
    assert a.compute()["live"] == {"mean": pytest.approx(3.5), "n": 2}


def test_paired_cosine_shapes():
    a = torch.randn(3, 8)
    torch.testing.assert_close(paired_cosine(a, a), torch.ones(3))
    with pytest.raises(ValueError):
        paired_cosine(a, torch.randn(2, 8))
