"""Our scorers against the reference scripts' computations, reproduced here in a few lines each.

References (the commit is the stored version read):

* HF ``transformers/image_transforms.py`` ``center_crop`` (huggingface/transformers @ 10fe7734; CLIPImageProcessor):
  ``top = (H - h) // 2``, ``left = (W - w) // 2``.
* torchvision ``transforms/functional.py`` ``center_crop``: ``int(round((W - w) / 2.0))``; clip's ``_transform``.
* facebookresearch/dino ``vision_transformer.py`` @ 58aabc09: ``vit_small`` uses ``nn.LayerNorm(eps=1e-6)``.
* MagicBrush ``evaluation/image_eval.py`` (OSU-NLP-Group/MagicBrush @ 44745b5b).
* ControlNet++ ``eval/eval_clip.py`` @ bbdc3c06, ``eval/eval.py`` / ``eval_edge.py`` / ``eval_depth.py`` @ ecccfe20
  (liming-ai/ControlNet_Plus_Plus); torchmetrics 1.9.0 ``functional/multimodal/clip_score.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from control_records import ControlRecord
from PIL import Image

from benchmarks.metrics import Backbones, CLIPEncoder, ControlNetHED, DinoEncoder, HEDAnnotator
from benchmarks.metrics.random_init import save_random_clip

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def rand_image(seed: int, w: int, h: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def normalised(im: Image.Image, mean, std) -> torch.Tensor:
    """PIL crop -> ``[3, h, w]`` float32, (x / 255 - mean) / std."""
    arr = (np.asarray(im, dtype=np.float32) / 255.0 - mean) / std
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "tiny-clip.pt"
    save_random_clip(path, "tiny", seed=0)
    return CLIPEncoder.from_file(path)


@pytest.fixture(scope="module")
def dino_1e12(tmp_path_factory):
    """A tiny DINO-layout ViT folder whose config says layer_norm_eps=1e-12 (as the Hub facebook/dino-vits16)."""
    from transformers import ViTConfig, ViTModel

    folder = tmp_path_factory.mktemp("dino") / "dino-eps12"
    cfg = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                    image_size=224, patch_size=16, layer_norm_eps=1e-12)
    torch.manual_seed(0)
    ViTModel(cfg, add_pooling_layer=False).eval().save_pretrained(str(folder))
    return folder


# ------------------------------------------------------------------------------------------------ centre crop


def test_clip_centre_crop_floors_like_hf_clip_processor(tiny_clip):
    """HF ``image_transforms.center_crop`` (huggingface/transformers @ 10fe7734): left = (W - R) // 2. A 35x32
    image at R = 32 (no resize): HF crops from column 1, torchvision's ``CenterCrop`` from round(1.5) = 2."""
    im = rand_image(0, 35, 32)
    left = (35 - 32) // 2
    want = normalised(im.crop((left, 0, left + 32, 32)), CLIP_MEAN, CLIP_STD)
    torch.testing.assert_close(tiny_clip.pixel_values([im])[0], want)
    torch.testing.assert_close(tiny_clip.pixel_values([im], crop_offset="floor")[0], want)


def test_clip_round_crop_is_clip_load_transform(tiny_clip):
    """clip ``_transform(n_px)`` (what ``clip.load`` returns; MagicBrush ``image_eval.py``): torchvision
    ``CenterCrop``, i.e. int(round((W - R) / 2)). A 47x42 image -> 35x32 (short side 32), offset 1.5: 2 (round)."""
    from clip.clip import _transform

    im = rand_image(1, 47, 42)  # short side 42 -> 32: long = int(32 * 47 / 42) = 35; (35 - 32) / 2 = 1.5
    ref = _transform(32)(im)
    torch.testing.assert_close(tiny_clip.pixel_values([im], crop_offset="round")[0], ref)
    assert not torch.equal(tiny_clip.pixel_values([im], crop_offset="floor")[0], ref)


def test_dino_crop_is_torchvision_by_default(dino_1e12):
    """MagicBrush ``image_eval.py`` / Kosmos-G ``eval/dino_score.py`` DINO transform: Resize(256, bicubic),
    CenterCrop(224) (torchvision, round), ToTensor, Normalize(ImageNet); a 300x260 image -> 295x256, offset 35.5:
    torchvision 36, HF 35."""
    from torchvision import transforms as T

    enc = DinoEncoder.from_folder(dino_1e12)
    im = rand_image(2, 300, 260)
    ref = T.Compose([T.Resize(256, interpolation=3), T.CenterCrop(224), T.ToTensor(),
                     T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])(im)
    torch.testing.assert_close(enc.pixel_values([im])[0], ref)
    resized = im.resize((295, 256), Image.Resampling.BICUBIC)
    left = (295 - 224) // 2
    floor = normalised(resized.crop((left, 16, left + 224, 240)), IMAGENET_MEAN, IMAGENET_STD)
    torch.testing.assert_close(enc.pixel_values([im], crop_offset="floor")[0], floor)


# ------------------------------------------------------------------------------------------------ DINO epsilon


def test_dino_runs_with_the_torch_hub_layer_norm_eps(dino_1e12):
    """facebookresearch/dino ``vision_transformer.py`` @ 58aabc09: ``vit_small`` builds every LayerNorm with
    ``eps=1e-6``; the Hub config's 1e-12 must not be used, and both are recorded."""
    enc = DinoEncoder.from_folder(dino_1e12)
    eps = {m.eps for m in enc.model.modules() if isinstance(m, torch.nn.LayerNorm)}
    assert eps == {1e-6}
    assert enc.weights()["layer_norm_eps"] == 1e-6 and enc.weights()["config_layer_norm_eps"] == 1e-12
    bb = Backbones(paths={"dino_vits16": dino_1e12})
    bb.dino()
    assert bb.used()["dino_vits16"]["layer_norm_eps"] == 1e-6


# ------------------------------------------------------------------------------------------------ precision


def test_backbones_record_the_precision_they_ran_in(tmp_path, dino_1e12):
    """Every backbone's record in ``results.json`` (``Backbones.used()``) names its dtype: the MagicBrush reference
    runs CLIP in fp16 on CUDA (``clip.load``), ours in fp32, so the record must say which."""
    save_random_clip(tmp_path / "ViT-B-32.pt", "tiny", seed=0)
    bb = Backbones(paths={"clip_b32": tmp_path / "ViT-B-32.pt", "dino_vits16": dino_1e12})
    bb.clip("clip_b32")
    bb.dino()
    bb.register("hed", HEDAnnotator(ControlNetHED()), {"path": "random-init"})
    used = bb.used()
    assert {k: v["dtype"] for k, v in used.items()} == {"clip_b32": "float32", "dino_vits16": "float32",
                                                         "hed": "float32"}
    bb.get("hed").half()
    assert bb.used()["hed"]["dtype"] == "float16"  # what ran, read when the record is written


# ------------------------------------------------------------------------------------------------ scorer fixtures


class FixedImages:
    """Test double generator: returns the given image for each request id."""

    def __init__(self, images: dict[str, Image.Image]):
        self.images = images

    def generate(self, requests):
        return [self.images[r.id] for r in requests]


@pytest.fixture(scope="module")
def weights(tmp_path_factory, dino_1e12):
    """Tiny random-init CLIP (B/32 and B/16 slots) and the tiny DINO folder, in the real layouts."""
    import shutil

    root = tmp_path_factory.mktemp("weights")
    save_random_clip(root / "ViT-B-32.pt", "tiny", seed=0)
    save_random_clip(root / "ViT-B-16.pt", "tiny", seed=1)
    shutil.copytree(dino_1e12, root / "dino-vits16")
    return root


def hf_clip_pixels(im: Image.Image, res: int) -> torch.Tensor:
    """HF ``CLIPImageProcessor`` (transformers 4.x, the one torchmetrics / Kosmos-G ran): shortest edge -> res with
    ``int(res * long / short)`` (PIL bicubic), crop at ``(W - res) // 2``, rescale, normalise -> ``[1, 3, res, res]``."""
    w, h = im.size
    size = (res, int(res * h / w)) if w <= h else (int(res * w / h), res)
    im = im.resize(size, Image.Resampling.BICUBIC)
    left, top = (size[0] - res) // 2, (size[1] - res) // 2
    return normalised(im.crop((left, top, left + res, top + res)), CLIP_MEAN, CLIP_STD)[None]


def torchvision_dino_pixels(im: Image.Image) -> torch.Tensor:
    """The DINO transform of MagicBrush ``image_eval.py`` and Kosmos-G ``eval/dino_score.py`` -> ``[1, 3, 224, 224]``."""
    from torchvision import transforms as T

    return T.Compose([T.Resize(256, interpolation=3), T.CenterCrop(224), T.ToTensor(),
                      T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])(im)[None]


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1).item()


# ------------------------------------------------------------------------------------------------ DreamBench


def test_dreambench_scorer_crops_as_kosmos_g(tmp_path, weights):
    """Kosmos-G ``eval/clip_score.py`` (HF ``CLIPProcessor``: floor crop) and ``eval/dino_score.py`` (torchvision
    ``CenterCrop``: round), microsoft/unilm @ 7b4b9f03. Sizes 46x41 / 41x46 put both crops at x.5 offsets."""
    from benchmarks.harness import GenerationRequest, generate, score

    ref, out = rand_image(10, 41, 46), rand_image(11, 46, 41)
    ref.save(tmp_path / "00.jpg", quality=100)
    ref = Image.open(tmp_path / "00.jpg").convert("RGB")
    req = GenerationRequest(id="backpack-p00-s0", task="subject", prompt="a backpack", seed=0,
                            protocol="dreambench/omnigen", sources=[str(tmp_path / "00.jpg")], width=46, height=41,
                            fields={"subject": "backpack", "subset": "object", "clip_t_text": "a backpack",
                                    "references": [str(tmp_path / "00.jpg")]})
    run = tmp_path / "run"
    generate(run, [req], FixedImages({req.id: out}), progress=False)
    bb = Backbones(weights_dir=weights)
    res = score(run, bb, progress=False, write=False)
    clip, dino = bb.clip("clip_b32"), bb.dino()
    with torch.no_grad():
        want_clip_i = cos(clip.model.encode_image(hf_clip_pixels(out, 32)), clip.model.encode_image(hf_clip_pixels(ref, 32)))
        feats = [dino.model(pixel_values=torchvision_dino_pixels(x)).last_hidden_state[:, 0] for x in (out, ref)]
    assert res["metrics"]["clip_i"] == pytest.approx(want_clip_i, abs=1e-6)
    assert res["metrics"]["dino"] == pytest.approx(cos(*feats), abs=1e-6)


# ------------------------------------------------------------------------------------------------ MagicBrush


def test_magicbrush_gt_encodes_the_output_at_its_own_size(tmp_path, weights):
    """MagicBrush ``evaluation/image_eval.py`` (OSU-NLP-Group/MagicBrush @ 44745b5b): ``eval_distance`` resizes the
    generated image to the ground truth's size (PIL default = bicubic) for L1 / L2 only; ``eval_clip_i`` (CLIP-I,
    DINO) and ``eval_clip_t`` encode the generated image as it is, with ``clip.load``'s transform and the torchvision
    DINO transform."""
    import clip as clip_pkg
    from clip.clip import _transform

    from benchmarks.harness import generate, score
    from benchmarks.suites.editing import requests_from_records
    from lit_cologen.data.evalsets import EditEvalRecord

    src, gt, out = rand_image(20, 40, 48), rand_image(21, 40, 48), rand_image(22, 46, 41)
    src.save(tmp_path / "s.png")
    gt.save(tmp_path / "t.png")
    rec = EditEvalRecord(key="mb-0", dataset="magicbrush", instruction="edit", source_ref=tmp_path / "s.png",
                         target_ref=tmp_path / "t.png", input_caption="a photo", output_caption="an edited photo")
    run = tmp_path / "run"
    reqs = requests_from_records([rec], run, "editing/magicbrush")
    generate(run, reqs, FixedImages({reqs[0].id: out}), progress=False)
    bb = Backbones(weights_dir=weights)
    res = score(run, bb, protocol="editing/magicbrush-gt", progress=False, write=False)["metrics"]

    clip, dino = bb.clip("clip_b32"), bb.dino()
    with torch.no_grad():
        c_out, c_gt = (clip.model.encode_image(_transform(32)(x)[None]) for x in (out, gt))
        d_out, d_gt = (dino.model(pixel_values=torchvision_dino_pixels(x)).last_hidden_state[:, 0] for x in (out, gt))
        t = clip.model.encode_text(clip_pkg.tokenize("an edited photo"))
    resized = np.asarray(out.resize(gt.size), dtype=np.float64) / 255
    gt01 = np.asarray(gt, dtype=np.float64) / 255
    assert res["l1"] == pytest.approx(np.abs(resized - gt01).mean(), rel=1e-6)
    assert res["l2"] == pytest.approx(((resized - gt01) ** 2).mean(), rel=1e-6)
    assert res["clip_i"] == pytest.approx(cos(c_out, c_gt), abs=1e-6)
    assert res["dino"] == pytest.approx(cos(d_out, d_gt), abs=1e-6)
    assert res["clip_t"] == pytest.approx(cos(c_out, t), abs=1e-6)


# ------------------------------------------------------------------------------------------------ ControlNet++




LONG_PROMPT = "a photo of " + " ".join(f"red{i} cat" for i in range(45))  # > 77 CLIP tokens


def torchmetrics_token_ids(text: str) -> torch.Tensor:
    """torchmetrics ``_get_features`` (1.9.0, as in the version ControlNet++ ran): ``[SOT] + BPE + [EOT]`` padded,
    then ``input_ids[..., :77]``, so a long caption loses its EOT token -> ``[1, 77]``."""
    from clip.simple_tokenizer import SimpleTokenizer

    tok = SimpleTokenizer()
    ids = ([tok.encoder["<|startoftext|>"]] + tok.encode(text) + [tok.encoder["<|endoftext|>"]])[:77]
    return torch.tensor(ids + [0] * (77 - len(ids)))[None]


def _control_run(tmp_path, cond, records, outputs, resolution):
    from benchmarks.harness import generate
    from benchmarks.suites.control import requests_from_records

    run = tmp_path / "run"
    reqs = requests_from_records(records, run, images_per_prompt=len(outputs) // len(records), resolution=resolution)
    generate(run, reqs, FixedImages({r.id: o for r, o in zip(reqs, outputs)}), progress=False)
    return run, reqs


def _canny_records(prompts):
    from benchmarks.metrics import canny_edges, load_images01

    records = []
    for i, prompt in enumerate(prompts):
        im = rand_image(30 + i, 48, 48)
        edges = Image.fromarray((canny_edges(load_images01([im]))[0, 0].numpy() * 255).astype(np.uint8))
        records.append(ControlRecord("canny", i, prompt, im, edges.convert("RGB"), edges))
    return records


def _score_output(run, reqs, bb, protocol):
    """The scorer's ScoreOutput (per-image values included)."""
    from benchmarks.harness import RunFolder, ScoreContext
    from benchmarks.protocols import get_protocol
    from benchmarks.suites.control import score

    return score(ScoreContext(RunFolder(run), reqs, get_protocol(protocol), bb, progress=False, options={"fid": False}))


def _reference_clip_scores(enc, reqs, outputs, tokens_of) -> list[float]:
    """torchmetrics ``_clip_score_update``: ``100 * cos`` per image, HF CLIPProcessor pixels."""
    with torch.no_grad():
        return [100 * cos(enc.model.encode_image(hf_clip_pixels(o, 32)), enc.model.encode_text(tokens_of(r.prompt)))
                for r, o in zip(reqs, outputs)]


def test_controlnetpp_clip_score_long_prompt_loses_eot(tmp_path, weights):
    """ControlNet++ ``eval/eval_clip.py`` @ bbdc3c06 uses ``CLIPScore(openai/clip-vit-base-patch16)``; torchmetrics
    1.9.0 ``_get_features`` cuts the text ids to 77 (a long prompt loses its EOT token, CLIP pools at the largest
    id) and ``_clip_score_update`` returns per-image ``100 cos`` unclamped. The corrected variant
    ``control/controlnetpp-keep-eot`` tokenizes as ``clip.tokenize(truncate=True)``."""
    import clip as clip_pkg

    records = _canny_records([LONG_PROMPT])
    outputs = [rand_image(40 + k, 48, 48) for k in range(2)]
    run, reqs = _control_run(tmp_path, "canny", records, outputs, 48)
    bb = Backbones(paths={"clip_b16": weights / "ViT-B-16.pt"})
    enc = bb.clip("clip_b16")
    assert 49407 not in torchmetrics_token_ids(LONG_PROMPT)[0].tolist()  # no EOT left in the reference's ids
    wants = []
    for protocol, tokens_of in (("control/controlnetpp", torchmetrics_token_ids),
                                ("control/controlnetpp-keep-eot", lambda t: clip_pkg.tokenize(t, truncate=True))):
        out = _score_output(run, reqs, bb, protocol)
        got = [row["canny/clip_score"] for row in out.per_image if "canny/clip_score" in row]
        wants.append(_reference_clip_scores(enc, reqs, outputs, tokens_of))
        assert got == pytest.approx(wants[-1], abs=1e-4), protocol
        assert out.metrics["canny/clip_score"] == pytest.approx(max(float(np.mean(wants[-1])), 0.0), abs=1e-4)
    assert wants[0] != pytest.approx(wants[1], abs=1e-2)  # the two truncations embed the prompt differently


def test_controlnetpp_clip_score_clamps_the_mean(tmp_path, weights):
    """torchmetrics ``CLIPScore.compute()`` (ControlNet++ ``eval/eval_clip.py``): ``max(score / n_samples, 0)``, the
    mean of unclamped per-image ``100 cos``; not the mean of per-image ``max(100 cos, 0)``."""
    records = _canny_records(["a photo of a dog"])
    outputs = [Image.new("RGB", (48, 48), (0, 0, 0)), Image.new("RGB", (48, 48), (0, 0, 255)), rand_image(43, 48, 48)]
    run, reqs = _control_run(tmp_path, "canny", records, outputs, 48)
    bb = Backbones(paths={"clip_b16": weights / "ViT-B-16.pt"})
    want = _reference_clip_scores(bb.clip("clip_b16"), reqs, outputs, torchmetrics_token_ids)
    assert min(want) < 0 < np.mean(want)  # the fixture tells a clamped mean from clamped samples
    out = _score_output(run, reqs, bb, "control/controlnetpp")
    assert out.metrics["canny/clip_score"] == pytest.approx(float(np.mean(want)), abs=1e-4)


def test_lineart_inversion_by_hand():
    """ControlNet++ ``eval/eval_edge.py`` @ ecccfe20, ``pred_condition = 1 - pred_condition`` on a uint8 tensor:
    level p -> (1 - p) mod 256; the corrected inversion is 255 - p."""
    from benchmarks.metrics.edges import invert_line_levels

    p = torch.tensor([0, 1, 2, 128, 254, 255], dtype=torch.uint8).reshape(1, 1, 1, 6)
    want_ref = [(1 - v) % 256 / 255 for v in (0, 1, 2, 128, 254, 255)]  # 1, 0, 255, 129, 3, 2 (/ 255)
    torch.testing.assert_close(invert_line_levels(p, "uint8_one_minus").flatten(), torch.tensor(want_ref))
    want_fix = [(255 - v) / 255 for v in (0, 1, 2, 128, 254, 255)]
    torch.testing.assert_close(invert_line_levels(p, "255_minus").flatten(), torch.tensor(want_fix))


def test_controlnetpp_lineart_ms_ssim_as_eval_edge(tmp_path):
    """ControlNet++ ``eval/eval.py`` @ ecccfe20 saves the generated image's line map ``to_pil_image(model(x))`` and
    the label ``to_pil_image(1 - model(x_real))``; ``eval_edge.py`` reads both as uint8, inverts the prediction with
    uint8 ``1 - pred`` and scores ``MultiScaleStructuralSimilarityIndexMeasure(data_range=1)`` of
    ``(pred / 255).clip(0, 1)`` vs ``label / 255``. ``control/controlnetpp-lineart-invert``: ``255 - pred``."""
    from torchmetrics.image import MultiScaleStructuralSimilarityIndexMeasure
    from torchvision.transforms.functional import pil_to_tensor, to_pil_image

    from benchmarks.harness import score
    from benchmarks.metrics import LineartAnnotator, LineDrawingGenerator

    torch.manual_seed(0)
    net = LineDrawingGenerator().eval()
    smooth = lambda seed: rand_image(seed, 22, 22).resize((176, 176), Image.Resampling.BICUBIC)  # noqa: E731
    real, out = smooth(50), smooth(51)
    with torch.no_grad():
        label = to_pil_image((1 - net(pil_to_tensor(real)[None] / 255.0))[0], "L")
        pred = torch.from_numpy(np.array(to_pil_image(net(pil_to_tensor(out)[None] / 255.0)[0]).convert("L")))
    run, _ = _control_run(tmp_path, "lineart", [ControlRecord("lineart", 0, "a drawing", real, label.convert("RGB"), label)],
                          [out], 176)
    bb = Backbones()
    bb.register("lineart", LineartAnnotator(net), {"path": "random-init"})
    gt = torch.from_numpy(np.array(label))[None, None].float() / 255.0

    def ms_ssim_of(inverted: torch.Tensor) -> float:
        return MultiScaleStructuralSimilarityIndexMeasure(data_range=1.0)(
            (inverted[None, None].float() / 255.0).clip(0, 1), gt).item()

    res = score(run, bb, progress=False, write=False, options={"fid": False})
    assert res["metrics"]["lineart/ms_ssim"] == pytest.approx(ms_ssim_of(1 - pred), abs=1e-5)  # uint8: wraps
    fixed = score(run, bb, protocol="control/controlnetpp-lineart-invert", progress=False, write=False,
                  options={"fid": False})
    assert fixed["metrics"]["lineart/ms_ssim"] == pytest.approx(ms_ssim_of(255 - pred), abs=1e-5)


# ------------------------------------------------------------------------------------------------ depth


def reference_dpt_depth(model, image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """ControlNet++ ``eval/eval.py`` @ ecccfe20 with Intel/dpt-large's processor (``resample: 2``: PIL bilinear to
    384 x 384, ``(x / 255 - 0.5) / 0.5``): ``to_pil_image(x / x.max()).convert('RGB').resize(size, BILINEAR)``,
    saved and read back as ``L`` -> ``[H, W]`` float32 levels."""
    from torchvision.transforms.functional import to_pil_image

    x = (np.asarray(image.convert("RGB").resize((384, 384), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0 - 0.5) / 0.5
    with torch.no_grad():
        d = model(pixel_values=torch.from_numpy(x.transpose(2, 0, 1).copy())[None]).predicted_depth[0]
    q = to_pil_image(d / d.max()).convert("RGB").resize(size, Image.Resampling.BILINEAR).convert("L")
    return np.asarray(q, dtype=np.float32)


@pytest.fixture(scope="module")
def dpt_no_processor(tmp_path_factory):
    """A tiny random DPT folder without ``preprocessor_config.json`` (the fallback path)."""
    from benchmarks.metrics.random_init import save_random_dpt

    folder = tmp_path_factory.mktemp("dpt") / "dpt"
    model = save_random_dpt(folder)
    (folder / "preprocessor_config.json").unlink()
    return folder, model


def test_dpt_fallback_processor_is_intel_dpt_large(dpt_no_processor):
    """Intel/dpt-large ``preprocessor_config.json``: 384 x 384, ``resample: 2`` (bilinear), mean = std = 0.5; the
    processor ControlNet++ ``eval/eval.py`` loaded with ``DPTImageProcessor.from_pretrained("Intel/dpt-large")``."""
    from benchmarks.metrics import DepthEstimator

    folder, model = dpt_no_processor
    est = DepthEstimator.from_folder(folder)
    im = rand_image(60, 64, 48)
    np.testing.assert_array_equal(est([im], (64, 48))[0].numpy(), reference_dpt_depth(model, im, (64, 48)))


def test_controlnetpp_depth_label_normalised_before_resize(tmp_path, dpt_no_processor):
    """ControlNet++ ``eval/eval.py`` @ ecccfe20: ``label = (label - min) / (max - min) * 255`` on the label as read,
    ``astype('uint8')``, then ``resize((512, 512), NEAREST)``; the prediction is the DPT depth of the generated
    image as it is, bilinear to 512; ``eval_depth.py``: per-image ``sqrt(mse)`` of the two. Here 512 = the requests'
    48 px and the label is 60 px, its extremes on rows and columns that the nearest resize drops."""
    from benchmarks.harness import score
    from benchmarks.metrics import DepthEstimator

    folder, model = dpt_no_processor
    idx = Image.fromarray(np.tile(np.arange(60, dtype=np.uint8), (60, 1)))
    kept = set(np.asarray(idx.resize((48, 48), Image.Resampling.NEAREST))[0].tolist())
    dropped = sorted(set(range(60)) - kept)
    rng = np.random.default_rng(61)
    label = rng.integers(40, 200, (60, 60)).astype(np.uint8)
    label[dropped[0], dropped[0]], label[dropped[1], dropped[1]] = 3, 250  # only in pixels the resize drops
    real, out = rand_image(62, 48, 48), rand_image(63, 48, 48)
    lab = Image.fromarray(label)
    run, reqs = _control_run(tmp_path, "depth", [ControlRecord("depth", 0, "a room", real, lab.convert("RGB"), lab)], [out], 48)
    bb = Backbones()
    bb.register("dpt_large", DepthEstimator.from_folder(folder), {"path": "random-init"})
    res = score(run, bb, progress=False, write=False, options={"fid": False})

    norm = (label - label.min()) / (label.max() - label.min()) * 255
    target = np.asarray(Image.fromarray(norm.astype("uint8")).resize((48, 48), Image.Resampling.NEAREST), np.float64)
    pred = reference_dpt_depth(model, out, (48, 48)).astype(np.float64)
    assert res["metrics"]["depth/rmse"] == pytest.approx(np.sqrt(((pred - target) ** 2).mean()), rel=1e-6)
    resized_first = np.asarray(lab.resize((48, 48), Image.Resampling.NEAREST), np.float64)
    assert resized_first.min() > 3 and resized_first.max() < 250  # the order matters for this label


# ------------------------------------------------------------------------------------------------ Canny


def test_controlnetpp_records_the_kornia_canny_it_ran():
    """ControlNet++ ``requirements.txt`` pins ``kornia==0.7.0``; we run the installed kornia, whose NMS differs. The
    protocol records both versions and the measured F1 difference (``benchmarks.metrics.canny_versions``)."""
    from importlib.metadata import version

    from benchmarks.protocols import get_protocol

    rec = get_protocol("control/controlnetpp").settings["canny_kornia"]
    assert rec["reference"].startswith("0.7.0") and rec["used"] == version("kornia")
    assert {"max_abs", "mean_abs", "tiles"} <= set(rec["measured_f1_difference"])


def test_canny_versions_f1_is_torchmetrics_binary_f1():
    """ControlNet++ ``eval/eval_edge.py``: ``BinaryF1Score()(pred.flatten(), gt.flatten())`` over a prompt's maps."""
    from torchmetrics.classification import BinaryF1Score

    from benchmarks.metrics.canny_versions import f1

    rng = np.random.default_rng(70)
    pred, gt = rng.random((4, 1, 16, 16)) > 0.7, rng.random((4, 1, 16, 16)) > 0.6
    want = BinaryF1Score()(torch.from_numpy(pred).flatten().long(), torch.from_numpy(gt).flatten().long()).item()
    assert f1(pred, gt) == pytest.approx(want, abs=1e-6)
