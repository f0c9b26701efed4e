"""Small argparse helpers for the `cologen` sub-commands; this module imports nothing heavy (no torch, PIL, ...).

* :func:`lazy_command`: a ``func`` for ``set_defaults`` that imports its module only when the command runs, so
  building the parser (``cologen --help``) does not import the code the command drives.
* :func:`lazy_type`: the same for an argparse ``type=`` callable (imported when an argument is converted).
* :func:`module_doc`: a module's docstring read from its source, without importing it (for ``description=``).
* :func:`intermixed`: make a sub-command's parser accept its flags before, between and after its positionals
  (``cologen train CONFIG --no-progress a.b=1`` and ``cologen train CONFIG a.b=1 --no-progress``).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
from typing import Any, Callable

__all__ = ["lazy_command", "lazy_type", "module_doc", "intermixed", "IntermixedParsing"]


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


class IntermixedParsing:
    """Mixin: ``parse_known_args`` = ``parse_known_intermixed_args`` (optionals anywhere among the positionals).

    argparse calls a sub-parser through ``parse_known_args``; plain parsing gives a ``nargs="*"`` positional the
    empty list as soon as the first flag follows the leading positional, so later ``key=value`` strings would be
    "unrecognized arguments". The intermixed parser first takes every flag, then the positionals.
    """

    _intermixed_active = False

    def parse_known_args(self, args=None, namespace=None):
        if self._intermixed_active:  # parse_known_intermixed_args calls parse_known_args itself
            return super().parse_known_args(args, namespace)
        self._intermixed_active = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixed_active = False


_INTERMIXED_CLASSES: dict[type, type] = {}


def intermixed(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Switch ``parser`` (e.g. from ``subparsers.add_parser``) to intermixed parsing in place; returns it."""
    base = type(parser)
    if not issubclass(base, IntermixedParsing):
        if base not in _INTERMIXED_CLASSES:
            _INTERMIXED_CLASSES[base] = type(f"Intermixed{base.__name__}", (IntermixedParsing, base), {})
        parser.__class__ = _INTERMIXED_CLASSES[base]
    return parser
