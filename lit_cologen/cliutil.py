"""Small argparse helpers for the `cologen` sub-commands; this module imports nothing heavy (no torch, PIL, ...).

* :func:`lazy_command`: a ``func`` for ``set_defaults`` that imports its module only when the command runs, so
  building the parser (``cologen --help``) does not import the code the command drives.
* :func:`lazy_type`: the same for an argparse ``type=`` callable (imported when an argument is converted).
* :func:`module_doc`: a module's docstring read from its source, without importing it (for ``description=``).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
from typing import Any, Callable

__all__ = ["lazy_command", "lazy_type", "module_doc"]


def _resolve(module: str, name: str) -> Callable[..., Any]:
    return getattr(importlib.import_module(module), name)


def lazy_command(module: str, name: str) -> Callable[[argparse.Namespace], Any]:
    """``module.name(args)``, importing ``module`` at call time."""

    def run(args: argparse.Namespace) -> Any:
        return _resolve(module, name)(args)

    run.__name__ = run.__qualname__ = name
    run.__doc__ = f"Runs {module}.{name}(args) (imported when called)."
    return run


def lazy_type(module: str, name: str) -> Callable[[str], Any]:
    """An argparse ``type=`` that calls ``module.name(text)``; keeps the name argparse prints in its errors."""

    def convert(text: str) -> Any:
        return _resolve(module, name)(text)

    convert.__name__ = convert.__qualname__ = name
    return convert


def module_doc(module: str) -> str | None:
    """The docstring of ``module`` (exactly its ``__doc__``), read from the source file without executing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    with open(spec.origin, encoding="utf-8") as f:
        return ast.get_docstring(ast.parse(f.read()), clean=False)
