"""Evaluation metrics: CLIP / DINO similarity, pixel metrics, Canny F1, depth RMSE, seg mIoU, FID.

All backbones load from local files (see :mod:`benchmarks.metrics.backbones`); nothing is downloaded.
"""

import warnings

# clip-anytorch imports pkg_resources (setuptools is pinned below 81 for it): the deprecation notice is about a
# removal that cannot happen under that pin, so it is harmless here. Only this message, only from the clip package.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning, module="clip")

from .backbones import BACKBONES, Backbones, BackboneSpec  # noqa: E402 - after the warning filter
from .depth import DepthEstimator, DepthRMSE, depth_rmse, normalize_depth_label, quantize_depth
from .edges import (
    ControlNetHED,
    EdgeF1,
    HEDAnnotator,
    LineartAnnotator,
    LineDrawingGenerator,
    binary_f1,
    canny_edges,
)
from .encoders import CLIPEncoder, DinoEncoder, ImageEncoder, ImageTextEncoder, as_pil_list
from .fid import FIDInceptionV3, fid_over_groups, load_fid_inception, make_fid
from .pixel import L1Distance, l1_distance, l2_distance, load_images01, ms_ssim, pil_to_tensor01, psnr, ssim
from .segmentation import HFSegmenter, MeanIoU, Segmenter, intersection_union
from .similarity import ImageSimilarity, ImageTextSimilarity, MeanMetricSum, SubsetMean, paired_cosine
from .weights import MissingWeightsError, hash_folder, load_state_dict, require_file, require_folder, sha256_file

__all__ = [
    "BACKBONES", "Backbones", "BackboneSpec",
    "DepthEstimator", "DepthRMSE", "depth_rmse", "normalize_depth_label", "quantize_depth",
    "ControlNetHED", "EdgeF1", "HEDAnnotator", "LineartAnnotator", "LineDrawingGenerator", "binary_f1", "canny_edges",
    "CLIPEncoder", "DinoEncoder", "ImageEncoder", "ImageTextEncoder", "as_pil_list",
    "FIDInceptionV3", "fid_over_groups", "load_fid_inception", "make_fid",
    "L1Distance", "l1_distance", "l2_distance", "load_images01", "ms_ssim", "pil_to_tensor01", "psnr", "ssim",
    "HFSegmenter", "MeanIoU", "Segmenter", "intersection_union",
    "ImageSimilarity", "ImageTextSimilarity", "MeanMetricSum", "SubsetMean", "paired_cosine",
    "MissingWeightsError", "hash_folder", "load_state_dict", "require_file", "require_folder", "sha256_file",
]
