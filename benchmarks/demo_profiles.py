"""The demo's two sizes: the CPU default (`make demo`) and the one-GPU study (`cologen demo --device cuda`).

Both run the same study (a text-to-image base, the five-step staged curriculum and co-training from it, the
held-out Shapes-5 evaluation, the report); a profile says at which size:

* ``cpu``: the tiny preset at 32 px, one training seed, the committed base (``experiments/demo/base``), sized for
  about 15 minutes on 2 CPU cores.
* ``cuda``: the ``small`` preset at 64 px, twice the training steps, three training seeds (across-seed intervals),
  its base trained in the run (no committed ``small`` base), bf16 mixed precision, sized for <= 10 minutes on one
  H100 / H200.

A profile only adds dotlist overrides to the committed configs (``experiments/demo/*.yaml``): the study is the same
file in both sizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DemoProfile:
    """One size of the demo.

    Attributes:
        name: ``cpu`` or ``cuda`` (the ``--device`` value).
        preset: model preset of every step (the base and the experts).
        resolution: image side in pixels (shards, training, evaluation).
        seeds: default number of training seeds (``--seeds``).
        scale: default fraction of the configs' training steps (``--scale``).
        committed_base: load ``experiments/demo/base`` (tiny, 32 px) instead of training a base in the run.
        overrides: dotlist overrides added to every step config (base, staged, co-training).
        eval_batch: images per generation batch at evaluation.
    """

    name: str
    preset: str
    resolution: int
    seeds: int
    scale: float
    committed_base: bool
    overrides: tuple[str, ...] = field(default_factory=tuple)
    eval_batch: int = 32

    @property
    def device(self) -> str:
        return self.name


PROFILES = {
    "cpu": DemoProfile(name="cpu", preset="tiny", resolution=32, seeds=1, scale=1.0, committed_base=True),
    "cuda": DemoProfile(
        name="cuda", preset="small", resolution=64, seeds=3, scale=2.0, committed_base=False,
        overrides=("model.preset=small", "data.resolution=64", "train.accelerator=gpu", "train.devices=1",
                   "train.precision=bf16-mixed", "data.num_workers=4"),
        eval_batch=64,
    ),
}


def profile_for(device: str) -> DemoProfile:
    """The profile of ``--device`` (``cpu`` | ``cuda``); ValueError naming the choices otherwise."""
    if device not in PROFILES:
        raise ValueError(f"--device must be one of {sorted(PROFILES)}, got {device!r}")
    return PROFILES[device]


def seed_prefix(seed: int) -> str:
    """Sub-folder of a training seed's runs and evaluations: seed 0 keeps the top level (folders of earlier demos
    stay valid), any other seed gets ``seed-<s>/``."""
    return "" if seed == 0 else f"seed-{seed}/"
