"""The package layers only point down (README, "Layout"), read from the code's own imports with ``ast``.

{benchmarks, app} -> {pipeline, training} -> sampling -> {models, data} -> {utils, config, errors}; nothing in
``lit_cologen`` imports ``benchmarks`` (nor ``lit_cologen.app``) except the ``cologen`` command's registry, which
names its modules as strings.
Lazy imports inside functions count as imports here, and so do module paths named in ``lazy_command`` strings.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "lit_cologen"

#: package (path under lit_cologen/) -> the lit_cologen subpackages / modules it may import
ALLOWED = {
    "utils": {"utils"},
    "errors.py": set(),
    "config.py": {"errors.py"},
    "cliutil.py": set(),
    "models": {"models", "utils", "config.py", "errors.py"},
    "data": {"data", "utils", "config.py", "errors.py", "cliutil.py"},
    "sampling.py": {"models"},
    "training": {"training", "models", "data", "sampling.py", "utils", "config.py", "errors.py", "cliutil.py"},
    # `cologen sample` resolves a training run folder (training/run_folder.py)
    "pipeline": {"pipeline", "models", "data", "sampling.py", "utils", "config.py", "errors.py", "cliutil.py",
                 "training"},
    # `cologen app`: a top-level consumer (the Gradio UI over the pipeline); nothing in the library imports it
    "app": {"app", "pipeline", "models", "data", "utils", "config.py", "errors.py", "cliutil.py"},
}


def _imported_modules(path: Path) -> set[str]:
    """Every absolute module a file imports (top level or inside a function), plus dotted names in strings that look
    like module paths of the project (``lazy_command("lit_cologen.training.encode", ...)``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names.add(".".join(base + ([node.module] if node.module else [])))
            else:
                names.add(node.module or "")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _is_module(node.value):
            names.add(node.value)  # a module named as a string (lazy_command, import_module)
    return names


def _is_module(text: str) -> bool:
    """Whether ``text`` is the dotted path of one of the project's modules or packages."""
    if not re.fullmatch(r"(?:lit_cologen|benchmarks)(?:\.[a-z_0-9]+)+", text):
        return False
    path = ROOT.joinpath(*text.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _layer(path: Path) -> str:
    rel = path.relative_to(LIB)
    return rel.parts[0]


LIB_FILES = sorted(p for p in LIB.rglob("*.py") if p.name != "__init__.py" or p.parent != LIB)


@pytest.mark.parametrize("path", LIB_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_library_imports_point_down(path):
    layer = _layer(path)
    if layer == "cli.py":  # the command registry: may name every command module, benchmarks' included
        return
    allowed = ALLOWED[layer]
    bad = []
    for name in _imported_modules(path):
        parts = name.split(".")
        if parts[0] == "benchmarks":
            bad.append(name)
        elif parts[0] == "lit_cologen" and len(parts) > 1:
            packages = {"models", "data", "training", "pipeline", "utils", "app"}
            target = parts[1] if parts[1] in packages else parts[1] + ".py"
            if target not in allowed:
                bad.append(name)
    assert not bad, f"{path.relative_to(ROOT)} ({layer}) imports {sorted(bad)}, above its layer"


def test_the_layer_table_covers_every_part_of_the_library():
    parts = {_layer(p) for p in LIB_FILES}
    assert parts - {"cli.py"} <= set(ALLOWED), sorted(parts - set(ALLOWED))
