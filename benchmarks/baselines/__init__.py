"""Baselines re-run under our protocols: OmniGen (diffusers ``OmniGenPipeline``) and IP-Adapter (FLUX / SDXL).

Each baseline is a :class:`benchmarks.harness.Generator`, so it goes through the same ``generate`` (resumable,
seeded, sharded) and ``score`` code as CoLoGen, and ``cologen bench table`` puts its measured rows beside ours and
the paper's. Weights load from local folders only (``HF_HUB_OFFLINE``); a missing or mismatched folder raises an
error naming the folder and what is missing before anything heavy is loaded.

* :mod:`benchmarks.baselines.omnigen`: ``make`` / :class:`~benchmarks.baselines.omnigen.OmniGenBaseline`
  (editing, control, DreamBench) with OmniGen's own prompt conventions.
* :mod:`benchmarks.baselines.ip_adapter`: ``make_flux`` / ``make_sdxl`` (DreamBench; Table 7's FLUX IP-Adapter).

Configs (``experiments/baselines/*.yaml``) fix the weights folder, scales, steps and the protocol's seeds; run one
with ``python -m benchmarks.baselines.omnigen CONFIG --out RUN`` (or ``...ip_adapter``, same runner), which calls
``cologen bench generate`` with the config's suite options and ``--generator-arg config=CONFIG``. The same
generator also works from the plain CLI::

    cologen bench generate dreambench --out runs/omnigen-db --generator benchmarks.baselines.omnigen:make \\
        --generator-arg config=experiments/baselines/omnigen_dreambench.yaml --generator-arg weights=DIR

* :mod:`benchmarks.baselines.common`: what the generators share -- folder checks (:func:`check_model_folder`,
  :class:`BaselineWeightsError`, :class:`WeightsMismatchError`), weights fingerprints, the generator base
  (:class:`DiffusersBaseline`: device / dtype, lazy loading, per-request CPU generators, grouping of a harness batch
  into pipeline calls, output resizing, ``describe()`` for ``run.json``) and :func:`row_label` for table rows.
* :mod:`benchmarks.baselines.config`: configs (:func:`load_config`, :func:`generator_kwargs`,
  :func:`missing_environment`, :func:`config_argv`, :func:`run_config`) and the runner (:func:`main`).
"""

from __future__ import annotations

from .common import (
                     BaselineWeightsError,
                     DiffusersBaseline,
                     WeightsMismatchError,
                     check_model_folder,
                     expand_path,
                     group_consecutive,
                     read_json,
                     request_generators,
                     resolve_device,
                     row_label,
                     weights_fingerprint,
)
from .config import (
                     RENAMED_ENV,
                     config_argv,
                     generator_kwargs,
                     import_factory,
                     load_config,
                     main,
                     missing_environment,
                     run_config,
)

__all__ = [
    "BaselineWeightsError", "WeightsMismatchError", "check_model_folder", "read_json", "weights_fingerprint",
    "expand_path", "resolve_device", "request_generators", "group_consecutive", "DiffusersBaseline", "load_config",
    "generator_kwargs", "config_argv", "missing_environment", "run_config", "row_label", "import_factory", "main",
    "RENAMED_ENV",
]
