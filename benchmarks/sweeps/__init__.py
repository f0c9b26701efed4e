"""Ablation sweeps (paper Fig. 4: alpha / LoRA rank / rho; Table 5: R_c / R_l / co-training / staged) and reports.

* :mod:`benchmarks.sweeps.spec`   -- the records (axes, eval specs, points, the sweep) and the sweep file's schema
* :mod:`benchmarks.sweeps.grid`   -- sweep YAML -> points -> per-point step configs (shared prefix, budgets, seeds)
* :mod:`benchmarks.sweeps.runner` -- train + evaluate the points (skip finished, resume), `sweep_results.json`
* :mod:`benchmarks.sweeps.summaries` -- values with their uncertainty (seeds / images), paired differences, verdicts
* :mod:`benchmarks.sweeps.report` -- Figure-4 plots, the Table 5 layout, routing usage, training curves
* :mod:`benchmarks.sweeps.cli`    -- `cologen sweep` and `cologen report`
"""

__all__ = ["Point", "Sweep", "load_sweep"]


def __getattr__(name: str):
    # imported on first use: `cologen sweep --help` imports benchmarks.sweeps.cli, and so this package, and the
    # grid pulls in the training config (torch, diffusers)
    if name in __all__:
        from benchmarks.sweeps import grid, spec

        return getattr(grid if name == "load_sweep" else spec, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
