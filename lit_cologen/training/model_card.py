"""Model cards: the ``README.md`` of a training export (``final/``) and of a saved pipeline folder.

A card is a Hugging Face model card built with ``huggingface_hub``'s :class:`~huggingface_hub.ModelCard` /
:class:`~huggingface_hub.ModelCardData` (the YAML front matter: ``base_model``, ``library_name``, ``tags``,
``pipeline_tag``, ``license``), then a Markdown body:

* **Training**: the step's config summary (iterations, global batch, samples = iterations x global batch, the
  experts' LoRA ranks / alphas, routing, the veteran loss' rho / alpha, preset, where the base weights came from)
  and, for a finished step, what done.json recorded (steps trained, losses, samples/s);
* **Results**: every ``results.json`` found (written by ``cologen bench score``; read as JSON, never through
  ``benchmarks``): its protocol, eval-set size (found / published, subset), main metrics with their directions and
  the sha256 of every scoring backbone.

Writers: :func:`write_export_card` (``training/run.py``'s export, after done.json, before ``final/`` is moved into
place), :func:`write_run_card` (``cologen card RUN_DIR [--results PATH ...]``: (re)writes a finished step's card with
the results under ``RUN_DIR/eval/`` and the given paths) and :func:`pipeline_card` (``CoLoGenPipeline
.save_pretrained`` / ``push_to_hub``). Every card is written with the one atomic writer.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from lit_cologen.errors import UserError
from lit_cologen.training.run_folder import DONE_FILE, saved_config
from lit_cologen.utils.atomic import atomic_write_text
from lit_cologen.utils.hub import looks_like_hub_id

__all__ = ["CARD_FILE", "RESULTS_FILE", "CardError", "HubOfflineError", "build_card", "card_metadata", "find_results",
           "pipeline_card", "refuse_offline", "write_card", "write_export_card", "write_run_card"]

CARD_FILE = "README.md"
#: the file ``cologen bench score`` (benchmarks/harness.py ``score``) writes into a harness run folder
RESULTS_FILE = "results.json"
#: the fields of a results.json a card reads (``protocol`` and ``metrics`` must be there)
RESULTS_FIELDS = ("protocol", "eval_set", "metrics", "backbones")
LIBRARY_NAME = "diffusers"
PIPELINE_TAG = "image-to-image"
PROJECT_LICENSE = "apache-2.0"  # lit-cologen's own (pyproject.toml); the tiny / small presets' weights are ours
#: the Hub repos of the FLUX.1 presets' base weights, and their licenses
HUB_BASES = {"flux-dev": "black-forest-labs/FLUX.1-dev", "flux-schnell": "black-forest-labs/FLUX.1-schnell"}
LICENSES: dict[str, dict[str, str]] = {
    "flux-dev": {"license": "other", "license_name": "flux-1-dev-non-commercial-license",
                 "license_link": "https://huggingface.co/black-forest-labs/FLUX.1-dev/blob/main/LICENSE.md"},
    "flux-schnell": {"license": "apache-2.0"},
}
BASE_TAGS = ("lit-cologen", "cologen", "lora", "mixture-of-experts", "image-to-image")
TASK_TAGS = {"inpaint": "inpainting", "ground": "visual-grounding", "control": "controllable-generation",
             "subject": "subject-driven-generation", "edit": "image-editing"}


class CardError(UserError):
    """A run folder without a finished step, or a results file that is not a ``cologen bench score`` results.json."""


class HubOfflineError(UserError, ConnectionError):
    """An upload asked for while ``HF_HUB_OFFLINE`` is set (nothing is sent)."""


# ------------------------------------------------------------------------------------------------ metadata

def base_model_id(preset: str, pretrained_path: Optional[str] = None) -> Optional[str]:
    """The Hub id of the base weights: a Hub id given as ``pretrained_path``, else the FLUX.1 preset's repo; None for
    a tiny / small base (a seeded random init or a local base pre-training export)."""
    if pretrained_path and looks_like_hub_id(pretrained_path):
        return str(pretrained_path)
    return HUB_BASES.get(preset)


def card_metadata(preset: str, pretrained_path: Optional[str] = None, tasks: Sequence[str] = ()) -> Any:
    """The ``ModelCardData`` of a CoLoGen model on ``preset``'s base."""
    from huggingface_hub import ModelCardData

    tags = list(BASE_TAGS) + (["flux", f"flux-{preset.split('-', 1)[1]}"] if preset in HUB_BASES else [])
    tags += [f"preset-{preset}"] + [TASK_TAGS[t] for t in tasks if t in TASK_TAGS]
    return ModelCardData(base_model=base_model_id(preset, pretrained_path), library_name=LIBRARY_NAME,
                         pipeline_tag=PIPELINE_TAG, tags=list(dict.fromkeys(tags)),
                         **LICENSES.get(preset, {"license": PROJECT_LICENSE}))


# ------------------------------------------------------------------------------------------------ results

def _load_results(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CardError(f"results file {path}: cannot read it as JSON ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("protocol"), str) or not isinstance(data.get("metrics"),
                                                                                                   dict):
        raise CardError(f"results file {path}: not a results.json written by `cologen bench score` (needs the "
                        f"fields 'protocol' and 'metrics'; a card reads {list(RESULTS_FIELDS)})")
    return data


def find_results(paths: Iterable[str | os.PathLike], missing_ok: bool = False) -> list[tuple[Path, dict[str, Any]]]:
    """``(path, results dict)`` of every results.json in ``paths``: a file is read as one, a folder is searched
    (recursively, in sorted order) for ``results.json`` files. Each file once, in the order found.

    Raises CardError for a path that does not exist (unless ``missing_ok``) or a file that is not a harness
    results.json (unreadable, or without ``protocol`` / ``metrics``)."""
    found: dict[Path, dict[str, Any]] = {}
    for raw in paths:
        p = Path(raw)
        if p.is_file():
            files = [p]
        elif p.is_dir():
            files = sorted(p.rglob(RESULTS_FILE))
        elif missing_ok:
            continue
        else:
            raise CardError(f"--results {p}: no such file or folder (a results.json, or a folder holding them)")
        for f in files:
            key = f.resolve()
            if key not in found:
                found[key] = _load_results(f)
    return list(found.items())


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "n/a" if value is None else str(value).lower()
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.4g}"
    return str(value)


def _eval_set_line(eval_set: Any) -> str:
    if not isinstance(eval_set, dict):
        return "unknown (the run recorded no eval_set)"
    dataset = "/".join(str(eval_set[k]) for k in ("dataset", "split") if eval_set.get(k))
    unit = eval_set.get("unit") or "items"
    expected = eval_set.get("expected")
    size = f"{eval_set.get('found', '?')} {unit}" + (f" of the published {expected}" if expected is not None else "")
    subset = "; a declared subset" if eval_set.get("subset") else (
        "; smaller than the published split" if expected is not None and eval_set.get("found") != expected else "")
    return f"{dataset or '?'}: {size}{subset}"


def _where(path: Path, relative_to: Optional[Path]) -> str:
    if relative_to is not None:
        try:
            return os.path.relpath(path, relative_to)
        except ValueError:  # another drive (Windows)
            pass
    return str(path)


def results_section(results: Sequence[tuple[Path, dict[str, Any]]], relative_to: Optional[Path] = None,
                    hint: str = "") -> list[str]:
    """Markdown lines: one subsection per results file (protocol, eval set, metrics, backbones)."""
    lines = ["## Results", ""]
    if not results:
        return lines + ["No evaluation results recorded with this card yet." + (f" {hint}" if hint else ""), ""]
    for path, res in results:
        lines += [f"### {res['protocol']}", "", f"- file: `{_where(path, relative_to)}`"]
        if res.get("generated_under") and res["generated_under"] != res["protocol"]:
            lines.append(f"- generated under: `{res['generated_under']}`")
        lines.append(f"- eval set: {_eval_set_line(res.get('eval_set'))}")
        counts = [f"{res[k]} {k.split('_')[0]}s" for k in ("image_count", "prompt_count") if res.get(k) is not None]
        if res.get("missing_count"):
            counts.append(f"{res['missing_count']} images missing")
        if counts:
            lines.append(f"- scored: {', '.join(counts)}" + (f"; seeds {res['seeds']}" if res.get("seeds") else ""))
        if res.get("scored_at"):
            lines.append(f"- scored at: {res['scored_at']}")
        directions = res.get("metric_directions") or {}
        lines += ["", "| metric | value | better |", "|---|---|---|"]
        lines += [f"| {k} | {_fmt(v)} | {directions.get(k, '')} |" for k, v in res["metrics"].items()]
        unavailable = res.get("unavailable") or {}
        if unavailable:
            lines += [""] + [f"- {k}: not computed ({why})" for k, why in unavailable.items()]
        backbones = res.get("backbones") or {}
        lines.append("")
        if backbones:
            lines += ["| backbone | sha256 | random init |", "|---|---|---|"]
            lines += [f"| {k} | `{(v or {}).get('sha256', 'n/a')}` | {_fmt((v or {}).get('random_init'))} |"
                      for k, v in backbones.items()]
        else:
            lines.append("Scored without learned backbones (the protocol's metrics need none).")
        lines.append("")
    return lines


# ------------------------------------------------------------------------------------------------ training summary

def _get(cfg: dict[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def base_origin_line(preset: str, pretrained_path: Optional[str], seed: Any = 0) -> str:
    """Where the frozen base of a step comes from, in words."""
    if pretrained_path:
        kind = "Hub id (local cache)" if looks_like_hub_id(pretrained_path) else "local folder"
        return f"`{pretrained_path}` ({kind})"
    if preset in HUB_BASES:
        return f"{HUB_BASES[preset]} (no path recorded)"
    return f"the `{preset}` preset's random init (seed {seed})"


def _experts_lines(adapter_meta: Optional[dict[str, Any]], cfg: dict[str, Any]) -> list[str]:
    prw = (adapter_meta or {}).get("prw") or _get(cfg, "model.prw", {}) or {}
    experts = (adapter_meta or {}).get("experts")
    if experts is None and cfg:  # no adapter file (a base pre-training step): what the config says
        rank = _get(cfg, "model.prw.rank")
        alpha = _get(cfg, "model.prw.lora_alpha")
        n = int(_get(cfg, "model.prw.num_experts", 1) or 1)
        experts = [{"rank": rank, "lora_alpha": alpha if alpha is not None else (2 * rank if rank else None)}] * n
    experts = experts or []
    lines = [f"| experts | {len(experts)} |"]
    if experts:
        lines.append("| expert ranks | " + ", ".join(_fmt(e.get("rank")) for e in experts) + " |")
        lines.append("| expert alphas | " + ", ".join(_fmt(e.get("lora_alpha")) for e in experts) + " |")
    lines += [f"| routing | {_fmt(prw.get('routing'))} |", f"| PRW blocks | {_fmt(prw.get('blocks'))} |",
              f"| router noise | {_fmt(prw.get('router_noise'))} |"]
    return lines


def training_section(cfg: dict[str, Any], done: Optional[dict[str, Any]] = None,
                     adapter_meta: Optional[dict[str, Any]] = None) -> list[str]:
    """Markdown lines: the step's config summary (a config dict as saved in config.yaml) and done.json's numbers."""
    iterations = _get(cfg, "train.max_steps")
    batch = _get(cfg, "train.global_batch")
    samples = iterations * batch if isinstance(iterations, int) and isinstance(batch, int) else None
    preset = str(_get(cfg, "model.preset", "?"))
    base = base_origin_line(preset, _get(cfg, "model.pretrained_path"), _get(cfg, "train.seed", 0))
    rows = [
        "## Training", "",
        "| setting | value |", "|---|---|",
        f"| step | {_fmt(_get(cfg, 'name'))} |",
        f"| preset | {preset} |",
        f"| base weights | {base} |",
        f"| base quantization | {_fmt(_get(cfg, 'model.base_quantization', 'none'))} |",
        f"| initialized from | {_fmt(_get(cfg, 'init_from')) if _get(cfg, 'init_from') else 'scratch'}"
        + (" (+ one new expert)" if _get(cfg, "add_expert") else "") + " |",
        f"| trains the base | {_fmt(bool(_get(cfg, 'train.train_base', False)))} |",
        f"| iterations | {_fmt(iterations)} |",
        f"| global batch | {_fmt(batch)} |",
        f"| samples (iterations x global batch) | {_fmt(samples)} |",
        *_experts_lines(adapter_meta, cfg),
        f"| veteran loss rho | {_fmt(_get(cfg, 'veteran.rho'))} |",
        f"| veteran loss alpha | {_fmt(_get(cfg, 'veteran.alpha'))} |",
        f"| veteran estimator | {_fmt(_get(cfg, 'veteran.estimator'))} |",
        f"| tasks | {', '.join(map(str, _get(cfg, 'data.tasks', []) or []))} |",
        f"| data | {_fmt(_get(cfg, 'data.source'))} at {_fmt(_get(cfg, 'data.resolution'))} px |",
        f"| optimizer | AdamW lr {_fmt(_get(cfg, 'optim.lr'))}, {_fmt(_get(cfg, 'optim.schedule'))} after "
        f"{_fmt(_get(cfg, 'optim.warmup_steps'))} warmup steps |",
        f"| precision | {_fmt(_get(cfg, 'train.precision'))} |",
        f"| seed | {_fmt(_get(cfg, 'train.seed'))} |",
        "",
    ]
    if done:
        rows += ["Finished (done.json): "
                 f"{_fmt(done.get('global_step'))} of {_fmt(done.get('max_steps'))} steps, "
                 f"{_fmt(done.get('num_experts'))} experts, train loss {_fmt(done.get('train_loss'))}, "
                 f"val loss {_fmt(done.get('val_loss'))}, {_fmt(done.get('samples_per_s'))} samples/s, "
                 f"{_fmt(done.get('seconds'))} s.", ""]
    return rows


# ------------------------------------------------------------------------------------------------ cards

_TEMPLATE = "---\n{{ card_data }}\n---\n\n{{ body }}\n"


def build_card(title: str, preset: str, pretrained_path: Optional[str] = None, tasks: Sequence[str] = (),
               sections: Sequence[Sequence[str]] = ()) -> Any:
    """A ``ModelCard``: ``card_metadata`` as its front matter, ``title`` and the Markdown ``sections`` as its body."""
    from huggingface_hub import ModelCard

    body = "\n".join([f"# {title}", "", *[line for section in sections for line in section]]).rstrip()
    return ModelCard.from_template(card_metadata(preset, pretrained_path, tasks), template_str=_TEMPLATE, body=body)


def write_card(folder: str | os.PathLike, card: Any) -> Path:
    """Write ``card`` as ``folder/README.md`` (atomically); returns the path."""
    path = Path(folder) / CARD_FILE
    atomic_write_text(path, str(card))
    return path


def _about(kind: str) -> list[str]:
    return [f"A CoLoGen {kind} made with lit-cologen (PyTorch Lightning re-implementation of CoLoGen: a "
            "FLUX.1-style MMDiT with Progressive Representation Weaving LoRA experts on the source tokens).", ""]


def _call_line(tasks: Sequence[str]) -> str:
    """A pipeline call of the first trained task (its extra input: inpaint's mask, control's condition type)."""
    task = tasks[0] if tasks else "edit"
    extra = {"inpaint": ', mask="mask.png"', "control": ', cond_type="canny"'}.get(task, "")
    return f'image = pipe(task="{task}", source="in.png", prompt="...", seed=0{extra}).images[0]'


def _adapter_meta(folder: Path) -> Optional[dict[str, Any]]:
    from lit_cologen.models.adapter_io import ADAPTER_FILE, read_adapter_metadata

    return read_adapter_metadata(folder) if (folder / ADAPTER_FILE).is_file() else None


def export_card(final: str | os.PathLike, cfg: dict[str, Any], done: Optional[dict[str, Any]] = None,
                results: Sequence[tuple[Path, dict[str, Any]]] = (), card_dir: Optional[Path] = None) -> Any:
    """The card of a training export folder ``final`` (its adapters.safetensors read for the experts' shapes),
    ``cfg`` the step's config dict, ``done`` its done.json. ``card_dir``: where the card will be (for relative
    results paths; default ``final``)."""
    final = Path(final)
    preset = str(_get(cfg, "model.preset", "tiny"))
    pretrained = _get(cfg, "model.pretrained_path")
    tasks = list(_get(cfg, "data.tasks", []) or [])
    train_base = bool(_get(cfg, "train.train_base", False))
    args = [f'"{preset}"']
    if train_base or pretrained:
        args.append(f'pretrained_path="{"final" if train_base else pretrained}"')
    if not train_base:
        args.append('adapters="final"')
    usage = ["## Usage", "", "```python", "from lit_cologen.pipeline import CoLoGenPipeline", "",
             f"pipe = CoLoGenPipeline.from_preset({', '.join(args)})  # final: this folder",
             _call_line(tasks),
             "```", "",
             f"This folder holds {'the trained base (`transformer/`)' if train_base else '`adapters.safetensors`'} "
             "and `done.json`; rewrite this card with evaluation results: `cologen card RUN_DIR --results EVAL_DIR`.",
             ""]
    where = card_dir or final
    sections = [_about("training export"), training_section(cfg, done, _adapter_meta(final)),
                results_section(results, where, "Score the model with `cologen bench score` and run `cologen card "
                                "RUN_DIR --results EVAL_DIR`."), usage]
    return build_card(f"CoLoGen step `{_get(cfg, 'name', 'step')}` ({preset})", preset, pretrained, tasks, sections)


def write_export_card(final: str | os.PathLike, cfg: Any, done: Optional[dict[str, Any]] = None,
                      results: Iterable[str | os.PathLike] = ()) -> Path:
    """Write the card of a training export (``training/run.py``'s ``_export``); ``cfg``: a StepConfig or its dict."""
    if not isinstance(cfg, dict):
        from omegaconf import OmegaConf

        cfg = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
    return write_card(final, export_card(final, cfg, done, find_results(results)))


def _step_of(run_dir: Path) -> tuple[Path, Path]:
    """(the step's output folder, its final/) of a step folder, its final/, or a curriculum folder (its last
    finished step with adapters, else its last finished step)."""
    if (run_dir / DONE_FILE).is_file():
        return run_dir.parent, run_dir
    if (run_dir / "final" / DONE_FILE).is_file():
        return run_dir, run_dir / "final"
    finals = sorted(p.parent for p in run_dir.glob(f"*/final/{DONE_FILE}"))
    if not finals:
        raise CardError(f"{run_dir}: no finished training step (expected final/{DONE_FILE}, {DONE_FILE}, or a "
                        f"curriculum folder with */final/{DONE_FILE})")
    with_adapters = [f for f in finals if _adapter_meta_file(f)]
    final = (with_adapters or finals)[-1]
    return final.parent, final


def _adapter_meta_file(folder: Path) -> bool:
    from lit_cologen.models.adapter_io import ADAPTER_FILE

    return (folder / ADAPTER_FILE).is_file()


def write_run_card(run_dir: str | os.PathLike, results: Iterable[str | os.PathLike] = ()) -> tuple[Path, list[Path]]:
    """(Re)write the card of a finished step's ``final/`` with the results under ``<step>/eval/`` (and, for a
    curriculum folder, ``<curriculum>/eval/``) and in ``results`` (files or folders). Returns (card path, results
    files used). Only README.md in ``final/`` changes."""
    run_dir = Path(run_dir)
    step, final = _step_of(run_dir)
    cfg = saved_config(step)
    if cfg is None:
        raise CardError(f"{step / 'config.yaml'} not found: the step's config (written when it started) is needed "
                        "for its card")
    try:
        done = json.loads((final / DONE_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        done = None
    search = [step / "eval"] + ([run_dir / "eval"] if run_dir not in (step, final) else [])
    found = find_results([p for p in search if p.is_dir()]) + find_results(results)
    found = list(dict(found).items())  # a file both under eval/ and given: once
    path = write_card(final, export_card(final, cfg, done, found))
    return path, [p for p, _ in found]


def pipeline_card(preset: str, base_origin: dict[str, Any], adapter_meta: Optional[dict[str, Any]],
                  save_base: bool, results: Iterable[str | os.PathLike] = (),
                  training_run: Optional[str | os.PathLike] = None, card_dir: Optional[Path] = None) -> Any:
    """The card of a ``CoLoGenPipeline.save_pretrained`` folder: the pipeline's preset, frozen-weights origin and
    adapters (their metadata), the training summary of ``training_run`` (a step / curriculum folder or a final/)
    when given, and the results found in ``results``."""
    origin = base_origin.get("source")
    pretrained = base_origin.get("path") if origin == "folder" else None
    if save_base:
        base = "saved in this folder (`transformer/`" + (", `vae/`, text encoders)" if preset in HUB_BASES else ")")
    elif origin == "folder":
        base = f"not saved here: loaded from `{base_origin.get('path')}` (recorded in model_index.json)"
    else:
        base = f"not saved here: the `{preset}` preset's random init (seed {base_origin.get('seed', 0)})"
    lines = ["## Pipeline", "", "| part | value |", "|---|---|", f"| preset | {preset} |",
             f"| base weights | {base} |"]
    if preset in HUB_BASES:
        lines.append(f"| base model | {base_model_id(preset, pretrained)} |")
    if adapter_meta:
        lines += _experts_lines(adapter_meta, {})
    else:
        lines.append("| adapters | none (the plain in-context model) |")
    lines.append("")
    sections = [_about("pipeline"), lines]
    tasks: list[str] = []
    if training_run is not None:
        step, final = _step_of(Path(training_run))
        cfg = saved_config(step) or {}
        try:
            done = json.loads((final / DONE_FILE).read_text())
        except (OSError, json.JSONDecodeError):
            done = None
        tasks = list(_get(cfg, "data.tasks", []) or [])
        sections.append(training_section(cfg, done, adapter_meta))
    found = find_results(results)
    usage = ["## Usage", "", "```python", "from lit_cologen.pipeline import CoLoGenPipeline", "",
             'pipe = CoLoGenPipeline.from_pretrained("FOLDER")  # this folder (or a local copy of its Hub repo)',
             _call_line(tasks),
             "```", ""]
    sections += [results_section(found, card_dir), usage]
    return build_card(f"CoLoGen pipeline ({preset})", preset, pretrained if looks_like_hub_id(pretrained) else None,
                      tasks, sections)


# ------------------------------------------------------------------------------------------------ the Hub

def refuse_offline(what: str, repo_id: str) -> None:
    """Raise HubOfflineError (one line) when ``HF_HUB_OFFLINE`` is set, in the environment or in huggingface_hub."""
    from huggingface_hub import constants

    if constants.is_offline_mode() or str(os.environ.get("HF_HUB_OFFLINE", "")).upper() in ("1", "ON", "YES", "TRUE"):
        raise HubOfflineError(f"{what}: HF_HUB_OFFLINE is set, so nothing is uploaded to '{repo_id}'; unset it (and "
                              "log in with `hf auth login`) to push, or save_pretrained(FOLDER) now and upload that "
                              "folder later")


# ------------------------------------------------------------------------------------------------ `cologen card`

def card_command(args: Any) -> int:
    """``cologen card RUN_DIR [--results PATH ...]``."""
    path, used = write_run_card(args.run_dir, args.results or ())
    print(f"wrote {path} ({len(used)} results file{'s' if len(used) != 1 else ''}"
          + (": " + ", ".join(str(p) for p in used) if used else "") + ")")
    return 0
