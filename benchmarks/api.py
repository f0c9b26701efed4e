"""The evaluation harness as plain Python: build a suite's requests, load a generator and the scoring backbones,
generate, score. ``cologen bench`` (:mod:`benchmarks.cli`) and the sweep runner are thin layers over it.

Example::

    from benchmarks import api

    reqs = api.build_requests("shapes5", "runs/s5", per_task=4, resolution=32, tasks=["edit"])
    gen = api.load_generator("benchmarks.cologen_generator:make", {"preset": "tiny", "adapters": "runs/x/final"})
    api.generate("runs/s5", reqs, gen, batch_size=8, progress=False)
    results = api.score_run("runs/s5", "shapes5", weights_dir="~/weights", progress=False)

Importing this module is light (no torch): every heavy import happens inside the function that needs it.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any, Sequence

__all__ = ["SUITES", "REQUEST_KEYWORDS", "build_requests", "load_backbones", "load_generator", "generate",
           "write_plan", "score_run", "protocol_of"]

#: suite name -> the protocol its requests follow
SUITES: dict[str, str] = {
    "dreambench": "dreambench/omnigen",
    "emu": "editing/emu",
    "magicbrush": "editing/magicbrush",
    "control": "control/controlnetpp",
    "shapes5": "shapes5",
    "gedit": "gedit/full",
}

#: the keyword arguments of :func:`build_requests` after ``suite`` and ``out``
REQUEST_KEYWORDS = ("data", "subset", "limit_items", "subjects", "prompts_per_subject", "images_per_prompt",
                    "resolution", "split", "cond", "seg_dataset", "tasks", "per_task", "language", "backbone_paths",
                    "weights_dir", "device")


def protocol_of(suite: str) -> str:
    """The protocol a suite's run folders are scored under (a protocol name passes through)."""
    return SUITES.get(suite, suite)


def default_dreambench_path():
    """``lit_cologen.data.evalsets.default_dreambench_path()`` (imported when called: building the parser stays light)."""
    from lit_cologen.data.evalsets import default_dreambench_path as find

    return find()


def load_backbones(paths: dict[str, Any] | None = None, weights_dir: str | Path | None = None, device: str = "cpu"):
    """The scoring backbones (:class:`benchmarks.metrics.backbones.Backbones`): local weights only.

    ``paths`` maps a backbone key (clip_b32, dino_vits16, ...) to its weights; ``weights_dir`` holds the others under
    their default names."""
    from .metrics.backbones import Backbones

    return Backbones(paths=paths or {}, weights_dir=weights_dir, device=device)


def load_generator(spec: str, kwargs: dict[str, Any] | None = None):
    """A Generator from ``copy-source`` (diagnostic baseline) or ``package.module:factory`` (called with kwargs)."""
    from .harness import CopySourceGenerator, Generator

    if spec == "copy-source":
        return CopySourceGenerator()
    if ":" not in spec:
        raise SystemExit(f"--generator: expected 'copy-source' or 'package.module:factory', got {spec!r}")
    mod, name = spec.split(":", 1)
    obj = getattr(importlib.import_module(mod), name)
    gen = obj(**(kwargs or {})) if inspect.isclass(obj) or not hasattr(obj, "generate") else obj
    if not isinstance(gen, Generator):
        raise SystemExit(f"--generator {spec}: {type(gen).__name__} has no generate(requests) method")
    return gen


def _subjects(subjects: Any) -> Any:
    """``"3"`` -> 3, ``"a,b"`` -> ["a", "b"]; an int, a list or None passes through."""
    if not subjects:
        return None
    if isinstance(subjects, str):
        return int(subjects) if subjects.isdigit() else subjects.split(",")
    return subjects


def _tasks(tasks: Any) -> list[str] | None:
    if not tasks:
        return None
    return tasks.split(",") if isinstance(tasks, str) else list(tasks)


def _dreambench(out, data, o: dict[str, Any]):
    from .suites.dreambench import build_requests as build

    return build(data or default_dreambench_path(), subjects=_subjects(o["subjects"]),
                 prompts_per_subject=o["prompts_per_subject"], images_per_prompt=o["images_per_prompt"],
                 resolution=o["resolution"], subset=o["subset"])


def _emu(out, data, o: dict[str, Any]):
    from .suites.editing import build_emu_requests

    return build_emu_requests(data, out, split=o["split"] or "test", limit=o["limit_items"], subset=o["subset"])


def _magicbrush(out, data, o: dict[str, Any]):
    from .suites.editing import build_magicbrush_requests

    return build_magicbrush_requests(data, out, limit=o["limit_items"], subset=o["subset"])


def _control(out, data, o: dict[str, Any]):
    from .suites.control import AnnotatorDetector
    from .suites.control import build_requests as build

    cond = o["cond"]
    if not cond:
        raise SystemExit("generate control: --cond canny|depth|hed|lineart|seg is required")
    detector = None
    if cond in ("hed", "lineart"):
        bb = load_backbones(o["backbone_paths"], o["weights_dir"], o["device"])
        detector = AnnotatorDetector(bb.get(cond), cond)
    return build(data, cond, out, split=o["split"] or "validation", limit=o["limit_items"], detector=detector,
                 seg_dataset=o["seg_dataset"], images_per_prompt=o["images_per_prompt"], subset=o["subset"])


def _shapes5(out, data, o: dict[str, Any]):
    from .suites.shapes5 import build_requests as build

    tasks = _tasks(o["tasks"])
    kw = {"tasks": tasks} if tasks else {}
    return build(out, per_task=o["per_task"], split=o["split"] or "eval", resolution=o["resolution"] or 64,
                 subset=o["subset"], **kw)


def _gedit(out, data, o: dict[str, Any]):
    from .suites.gedit import build_requests as build

    return build(data, out, language=o["language"], limit=o["limit_items"], subset=o["subset"])


_BUILDERS = {"dreambench": _dreambench, "emu": _emu, "magicbrush": _magicbrush, "control": _control,
             "shapes5": _shapes5, "gedit": _gedit}


def build_requests(suite: str, out: str | Path, *, data: str | Path | None = None, subset: bool = False,
                   limit_items: int | None = None, subjects: int | str | Sequence[str] | None = None,
                   prompts_per_subject: int | None = None, images_per_prompt: int | None = None,
                   resolution: int | None = None, split: str | None = None, cond: str | None = None,
                   seg_dataset: str | None = None, tasks: str | Sequence[str] | None = None, per_task: int = 20,
                   language: str = "en", backbone_paths: dict[str, Any] | None = None,
                   weights_dir: str | Path | None = None, device: str = "cpu"):
    """The suite's requests (a ``RequestList`` carrying ``eval_set``) for the run folder ``out``.

    ``subset`` is passed to every builder, which checks the loaded eval set against its published size
    (``limit_items`` / ``subjects`` / ``prompts_per_subject`` make a subset too: the builders record that).
    ``data`` is the local dataset (required except for dreambench, which finds its default folder, and shapes5).
    ``subjects``: a count or names (dreambench); ``tasks``: a list or comma-separated (shapes5); ``cond`` (control):
    canny | depth | hed | lineart | seg -- hed / lineart load their annotator from the backbones
    (``backbone_paths`` / ``weights_dir`` / ``device``, as :func:`load_backbones`)."""
    if suite not in _BUILDERS:
        raise SystemExit(f"unknown suite {suite!r}; known: {sorted(SUITES)}")
    if data is None and suite not in ("shapes5", "dreambench"):
        raise SystemExit(f"generate {suite}: --data PATH (the local dataset) is required")
    options = {"subset": subset, "limit_items": limit_items, "subjects": subjects,
               "prompts_per_subject": prompts_per_subject, "images_per_prompt": images_per_prompt,
               "resolution": resolution, "split": split, "cond": cond, "seg_dataset": seg_dataset, "tasks": tasks,
               "per_task": per_task, "language": language, "backbone_paths": backbone_paths,
               "weights_dir": weights_dir, "device": device}
    return _BUILDERS[suite](out, data, options)


def generate(out: str | Path, requests, generator, **kwargs):
    """:func:`benchmarks.harness.generate`: write the manifest of ``requests`` into ``out`` and generate the missing
    images (resumable, sharded; keywords: batch_size, rank, world_size, progress, overwrite, limit, info)."""
    from .harness import generate as run

    return run(out, requests, generator, **kwargs)


def write_plan(out: str | Path, requests, generator_info: dict[str, Any] | None = None):
    """Write the manifest only (an external baseline fills ``images/<id>.png``); returns the RunFolder."""
    from .harness import RunFolder

    run = RunFolder(out)
    run.write_manifest(requests, generator_info or {"generator": {"class": "external (plan only)"}})
    return run


def score_run(run_dir: str | Path, suite: str, *, backbones=None, backbone_paths: dict[str, Any] | None = None,
              weights_dir: str | Path | None = None, device: str = "cpu", batch_size: int = 16,
              allow_missing: bool = False, progress: bool = True, options: dict[str, Any] | None = None,
              write: bool = True) -> dict[str, Any]:
    """Score a run folder under the suite's protocol (or a protocol name, e.g. ``dreambench/omnigen-allrefs``);
    returns the results (written to ``run_dir/results.json`` unless ``write=False``). ``backbones``: loaded ones,
    or None to load them from ``backbone_paths`` / ``weights_dir`` on ``device``."""
    from .harness import score

    if backbones is None:
        backbones = load_backbones(backbone_paths, weights_dir, device)
    return score(run_dir, backbones, protocol=protocol_of(suite), batch_size=batch_size, device=device,
                 allow_missing=allow_missing, progress=progress, options=options or {}, write=write)
