"""Model cards: a training export's final/README.md, `cologen card` with harness results, the pipeline folder's card,
and push_to_hub's offline refusal (no network is ever used)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from tiny_run import tiny_overrides

from benchmarks.harness import CopySourceGenerator, generate, score
from benchmarks.metrics import Backbones
from lit_cologen.cli import main as cologen_main
from lit_cologen.training.config import load_step_config
from lit_cologen.training.model_card import (
    CardError,
    HubOfflineError,
    card_metadata,
    export_card,
    find_results,
    write_run_card,
)
from lit_cologen.training.run import run_step

SHA = "0123456789abcdef" * 4


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One tiny 2-step run (rank 4, veteran rho 0.5 / alpha 0.1): (step folder, its config)."""
    out = tmp_path_factory.mktemp("card") / "step"
    cfg = load_step_config(None, tiny_overrides(out, steps=2, **{"veteran.rho": 0.5, "veteran.alpha": 0.1,
                                                                 "model.prw.lora_alpha": 6}))
    run_step(cfg, enable_progress=False, report=lambda text: None)
    return out, cfg


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
            if p.is_file() and p.name != "README.md"}


def _minimal_results(folder: Path) -> Path:
    """A results.json with the harness' field names (what `score` writes), scored with one hashed backbone."""
    folder.mkdir(parents=True, exist_ok=True)
    res = {"protocol": "dreambench/omnigen", "generated_under": "dreambench/omnigen", "image_count": 30,
           "prompt_count": 30, "missing_count": 0, "seeds": [0],
           "eval_set": {"dataset": "dreambench", "split": "test", "unit": "prompts", "expected": 750, "found": 30,
                        "subset": True},
           "metrics": {"dino": 0.71234, "clip_i": 0.8, "clip_t": float("nan")},
           "metric_directions": {"dino": "higher", "clip_i": "higher", "clip_t": "higher"},
           "unavailable": {"clip_t": "no text encoder"},
           "backbones": {"dino": {"path": "/w/dino", "sha256": SHA, "random_init": False}}}
    (folder / "results.json").write_text(json.dumps(res))
    return folder / "results.json"


def test_training_export_writes_a_card_with_the_config_summary(run):
    out, cfg = run
    final = out / "final"
    assert {"README.md", "adapters.safetensors", "done.json"} <= {p.name for p in final.iterdir()}
    card = ModelCard.load(final / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "diffusers" and data["pipeline_tag"] == "image-to-image"
    assert data["license"] == "apache-2.0" and "base_model" not in data  # tiny: a seeded random base, no Hub id
    assert {"lit-cologen", "cologen", "lora", "preset-tiny", "inpainting"} <= set(data["tags"])
    text = card.text
    samples = cfg.train.max_steps * cfg.train.global_batch
    for row in (f"| iterations | {cfg.train.max_steps} |", f"| global batch | {cfg.train.global_batch} |",
                f"| samples (iterations x global batch) | {samples} |", "| experts | 1 |", "| expert ranks | 4 |",
                "| expert alphas | 6 |", "| routing | sample |", "| veteran loss rho | 0.5 |",
                "| veteran loss alpha | 0.1 |", "| preset | tiny |",
                "| base weights | the `tiny` preset's random init (seed 0) |"):
        assert row in text, row
    assert "Finished (done.json): 2 of 2 steps" in text and "No evaluation results" in text
    assert 'CoLoGenPipeline.from_preset("tiny", adapters="final")' in text


def test_cologen_card_adds_the_harness_results(run, tmp_path, capsys):
    out, _ = run
    final = out / "final"
    before = _digests(final)
    from benchmarks.suites.shapes5 import build_requests

    eval_dir = out / "eval" / "shapes5"  # found without --results: under the run's eval/
    generate(eval_dir, build_requests(eval_dir, per_task=1, resolution=32), CopySourceGenerator(), progress=False)
    scored = score(eval_dir, Backbones(), progress=False)
    other = _minimal_results(tmp_path / "bench" / "dreambench")
    assert cologen_main(["card", str(out), "--results", str(tmp_path / "bench")]) == 0
    assert "2 results files" in capsys.readouterr().out
    card = ModelCard.load(final / "README.md")
    assert card.data.to_dict()["pipeline_tag"] == "image-to-image"
    text = card.text
    assert "### shapes5" in text and "- file: `../eval/shapes5/results.json`" in text
    for name, value in scored["metrics"].items():
        assert f"| {name} | {value:.4g} |" in text
    assert "### dreambench/omnigen" in text and f"- file: `{os.path.relpath(other, final)}`" in text
    assert "dreambench/test: 30 prompts of the published 750; a declared subset" in text
    assert "| dino | 0.7123 | higher |" in text and "| clip_t | n/a | higher |" in text
    assert "- clip_t: not computed (no text encoder)" in text
    assert f"| dino | `{SHA}` | false |" in text
    assert _digests(final) == before  # only README.md changed
    # rewriting from the step's final/ gives the same card (the same results found)
    assert write_run_card(final, [other])[0].read_text() == (final / "README.md").read_text()


def test_card_refusals(tmp_path, capsys):
    assert cologen_main(["card", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cologen: error:") and "no finished training step" in err and "\n" not in err
    with pytest.raises(CardError, match="no such file"):
        find_results([tmp_path / "missing"])
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text(json.dumps({"metrics": {}}))
    with pytest.raises(CardError, match="not a results.json written by `cologen bench score`"):
        find_results([tmp_path / "bad"])


def test_flux_metadata():
    dev = card_metadata("flux-dev", "/local/FLUX.1-dev", ["edit"]).to_dict()
    assert dev["base_model"] == "black-forest-labs/FLUX.1-dev" and dev["license"] == "other"
    assert dev["license_name"] == "flux-1-dev-non-commercial-license" and "image-editing" in dev["tags"]
    schnell = card_metadata("flux-schnell").to_dict()
    assert schnell["base_model"] == "black-forest-labs/FLUX.1-schnell" and schnell["license"] == "apache-2.0"
    assert card_metadata("small", "org/my-small-base").to_dict()["base_model"] == "org/my-small-base"
    cfg = {"name": "edit", "model": {"preset": "flux-dev", "pretrained_path": "/w/flux",
                                     "prw": {"rank": 128, "routing": "sample"}},
           "train": {"max_steps": 1000, "global_batch": 256}, "veteran": {"rho": 0.9, "alpha": 0.01}}
    card = ModelCard(str(export_card("/nonexistent/final", cfg)))  # parses back; no adapter file: the config's shape
    assert card.data.base_model == "black-forest-labs/FLUX.1-dev"
    assert "| samples (iterations x global batch) | 256000 |" in card.text and "| expert alphas | 256 |" in card.text


def test_save_pretrained_writes_a_card_and_push_to_hub_refuses_offline(run, tmp_path, monkeypatch):
    from lit_cologen.pipeline import CoLoGenPipeline

    out, _ = run
    pipe = CoLoGenPipeline.from_preset("tiny", adapters=out / "final")
    results = _minimal_results(tmp_path / "r")
    folder = pipe.save_pretrained(tmp_path / "pipe", save_base=False, results=[results], training_run=out)
    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "diffusers" and "lit-cologen" in card.data.tags
    text = card.text
    assert "| base weights | not saved here: the `tiny` preset's random init (seed 0) |" in text
    assert "| expert ranks | 4 |" in text and "## Training" in text and "| iterations | 2 |" in text
    assert f"| dino | `{SHA}` | false |" in text and "CoLoGenPipeline.from_pretrained" in text
    CoLoGenPipeline.from_pretrained(folder)  # the card does not disturb loading

    import huggingface_hub

    def no_network(*args, **kwargs):
        raise AssertionError("push_to_hub reached the Hub client")

    monkeypatch.setattr(huggingface_hub, "create_repo", no_network)
    monkeypatch.setattr(huggingface_hub, "upload_folder", no_network)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubOfflineError) as err:
        pipe.push_to_hub("someone/cologen-tiny")
    message = str(err.value)
    assert "\n" not in message and "HF_HUB_OFFLINE" in message and "someone/cologen-tiny" in message
