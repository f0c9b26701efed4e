"""One name per environment variable across configs, code and docs; the baseline runner lists every unset variable
of a config in one error, naming the flag that replaces each."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmarks.baselines import RENAMED_ENV, config_argv, main, missing_environment, run_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "experiments" / "baselines"
ALL_VARS = ["OMNIGEN_WEIGHTS", "EMU_EDIT_DATA", "MAGICBRUSH_DATA", "MULTIGEN_EVAL_DATA", "ADE20K_EVAL_DATA",
            "COCOSTUFF_EVAL_DATA", "COLOGEN_WEIGHTS", "FLUX_DEV_PATH", "FLUX_IP_ADAPTER", "CLIP_VIT_L14", "SDXL_WEIGHTS",
            "H94_IP_ADAPTER", "COLOGEN_DREAMBENCH"] + list(RENAMED_ENV)


def _mentioned_vars() -> dict[str, set[str]]:
    """Environment variable names mentioned in configs, docs and code: ``$NAME``, ``${oc.env:NAME,...}``,
    ``os.environ[...]`` / ``os.environ.get(...)``, ``export NAME=``."""
    files = [*REPO.glob("experiments/**/*.yaml"), REPO / "README.md", REPO / "benchmarks" / "README.md",
             *REPO.glob("data/*.md"), *REPO.glob("lit_cologen/**/*.py"), *REPO.glob("benchmarks/**/*.py")]
    pattern = re.compile(r"\$\{?([A-Z][A-Z0-9_]{2,})|oc\.env:([A-Z][A-Z0-9_]*)|environ(?:\.get)?[\[(]\"([A-Z][A-Z0-9_]*)"
                         r"|export ([A-Z][A-Z0-9_]*)=")
    seen: dict[str, set[str]] = {}
    for f in files:
        for m in pattern.finditer(f.read_text(encoding="utf-8")):
            name = next(g for g in m.groups() if g)
            seen.setdefault(name, set()).add(str(f.relative_to(REPO)))
    return seen


def test_old_names_appear_only_as_the_renamed_table():
    seen = _mentioned_vars()
    for old, new in RENAMED_ENV.items():
        assert old not in seen, f"${old} (renamed to ${new}) is still used in {sorted(seen[old])}"
        assert new in seen
    files = {"FLUX_DEV_PATH": {"README.md", "benchmarks/README.md", "experiments/cologen/step.yaml",
                               "experiments/baselines/ip_adapter_flux_dreambench.yaml"},
             "MAGICBRUSH_DATA": {"experiments/baselines/omnigen_magicbrush.yaml", "experiments/ablations/alpha.yaml"}}
    for name, expected in files.items():
        assert expected <= seen[name], (name, sorted(seen[name]))


@pytest.fixture
def no_env(monkeypatch):
    for var in ALL_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_every_unset_variable_of_every_run_in_one_error(no_env, tmp_path):
    with pytest.raises(ValueError) as err:
        run_config(CONFIGS / "omnigen_control.yaml", tmp_path)
    text = str(err.value)
    for var, where, flag in [("OMNIGEN_WEIGHTS", "generator.weights", "--weights DIR"),
                             ("MULTIGEN_EVAL_DATA", "runs[canny].data", "-- --data PATH (for every run)"),
                             ("COLOGEN_WEIGHTS", "runs[hed].weights_dir", "-- --weights-dir PATH"),
                             ("ADE20K_EVAL_DATA", "runs[seg_ade20k].data", "-- --data PATH"),
                             ("COCOSTUFF_EVAL_DATA", "runs[seg_cocostuff].data", "-- --data PATH")]:
        line = next(ln for ln in text.splitlines() if f"${var} " in ln)
        assert where in line and flag in line, line
    assert text.count("$MULTIGEN_EVAL_DATA") == 1 and "needs 5 environment variable(s)" in text
    assert not (tmp_path / "canny").exists()  # nothing ran

    with pytest.raises(ValueError) as err:  # FLUX IP-Adapter: three generator settings
        run_config(CONFIGS / "ip_adapter_flux_dreambench.yaml", tmp_path)
    text = str(err.value)
    assert "$FLUX_DEV_PATH (generator.weights): or --weights DIR" in text
    assert "$FLUX_IP_ADAPTER (generator.adapter): or --set adapter=PATH" in text
    assert "$CLIP_VIT_L14 (generator.image_encoder): or --set image_encoder=PATH" in text


def test_the_named_flags_replace_the_variables(no_env, tmp_path):
    path = CONFIGS / "omnigen_emu.yaml"
    assert {m["variable"] for m in missing_environment(path)} == {"OMNIGEN_WEIGHTS", "EMU_EDIT_DATA"}
    assert missing_environment(path, weights="/w/omnigen", extra=["--data", "/d/emu"]) == []
    argv = config_argv(path, tmp_path, weights="/w/omnigen", extra=["--data", "/d/emu"])[0]
    assert not any("$" in a for a in argv) and argv[argv.index("--data") + 1] == "/d/emu"
    flux = CONFIGS / "ip_adapter_flux_dreambench.yaml"
    assert missing_environment(flux, weights="/w", generator_args={"adapter": "/a", "image_encoder": "/e"}) == []


def test_a_dry_run_needs_only_the_suite_options(no_env, tmp_path, capsys):
    printed = run_config(CONFIGS / "omnigen_dreambench.yaml", tmp_path, dry_run=True)
    assert printed and "$OMNIGEN_WEIGHTS (generator.weights): or --weights DIR" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"\$EMU_EDIT_DATA \(generate.data\): or -- --data PATH") as err:
        run_config(CONFIGS / "omnigen_emu.yaml", tmp_path, dry_run=True)
    assert "OMNIGEN" not in str(err.value)


def test_the_runner_prints_one_error_and_names_an_old_variable(no_env, tmp_path):
    no_env.setenv("FLUX_WEIGHTS", "/old/flux")
    with pytest.raises(SystemExit) as err:
        main([str(CONFIGS / "ip_adapter_flux_dreambench.yaml"), "--out", str(tmp_path)])
    text = str(err.value.code)
    assert text.startswith("error: ") and text.count("error") == 1
    assert "$FLUX_WEIGHTS is set: that is the old name, no longer read; rename it to $FLUX_DEV_PATH" in text
    assert "$FLUX_IP_ADAPTER" in text and "$CLIP_VIT_L14" in text
