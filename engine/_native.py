"""Load the data plane's hot modules compiled (mypyc), or all of them from source.

``setup.py`` compiles ``COMPILED`` with mypyc: native classes turn attribute reads and
method calls into C struct and vtable accesses, which halves the Python CPU of a
proxied request (README.md, "Data plane"). The source stays the truth and runs as is:

- ``LBTUI_PURE_PYTHON=1`` loads every one of them from its ``.py`` file;
- so does, in a source checkout, a compiled module older than its source (an edit
  since the last build), with a warning, so a stale build never runs old code. (An
  installed copy is not checked: its files' times say nothing about the build.)
- and so does a build whose shared library (``<hash>__mypyc``, where mypyc puts the
  code of all the modules) cannot be imported, e.g. after the checkout it was built in
  moved: a warning, not an ImportError at the first request.

All or none: an interpreted class cannot inherit from a compiled one, and compiled
code calls compiled code directly, so a mix would fail or not run the edited source.
Standard library only; ``setup.py`` reads ``COMPILED`` as a literal, so keep it one.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

COMPILED = (
    "engine/accesslog.py",
    "engine/balancer.py",
    "engine/hash_policies.py",
    "engine/policies.py",
    "engine/server.py",
    "engine/stats.py",
    "engine/proxy/batch.py",
    "engine/proxy/client.py",
    "engine/proxy/exchange.py",
    "engine/proxy/headers.py",
    "engine/proxy/http.py",
    "engine/proxy/listener.py",
    "engine/proxy/plain.py",
    "engine/proxy/pool.py",
    "engine/proxy/settings.py",
    "engine/proxy/tcp.py",
)
_ROOT = Path(__file__).resolve().parent.parent


_GROUP = re.compile(rb"([0-9a-f]{20}__mypyc)\.init_")


def _module_name(source: str) -> str:
    return source.removesuffix(".py").replace("/", ".")


def _built(source: Path) -> Path | None:
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = source.with_suffix(suffix)
        if candidate.exists():
            return candidate
    return None


def _group_missing(built: Path) -> str | None:
    """The shared library a compiled module imports, when it cannot be found."""
    match = _GROUP.search(built.read_bytes())
    if match is None:
        return None  # not a mypyc shim (a single-module build): nothing else to import
    group = match.group(1).decode("ascii")
    return None if importlib.util.find_spec(group) is not None else group


class _SourceFirst(importlib.abc.MetaPathFinder):
    """Finds the compiled modules' ``.py`` files ahead of their extension modules."""

    def __init__(self, sources: dict[str, Path]) -> None:
        self.sources = sources

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        source = self.sources.get(fullname)
        return importlib.util.spec_from_file_location(fullname, source) if source is not None else None


def choose() -> str:
    """Decide once, before any compiled module is imported: "compiled" or "python"."""
    sources = {_module_name(s): _ROOT / s for s in COMPILED}
    built = {name: _built(path) for name, path in sources.items()}
    missing = [name for name, b in built.items() if b is None]
    if len(missing) == len(built):
        return "python"  # never built (no compiler, or a plain checkout): nothing to choose
    problem = ""
    if missing:
        problem = f"{', '.join(missing)} not compiled"
    elif (_ROOT / ".git").exists():
        stale = [name for name, b in built.items() if b and b.stat().st_mtime < sources[name].stat().st_mtime]
        if stale:
            problem = f"compiled {', '.join(stale)} older than the source"
    if not problem:
        first = next(b for b in built.values() if b is not None)
        group = _group_missing(first)
        if group is not None:
            problem = f"the compiled modules' library {group} cannot be imported"
    pure = bool(os.environ.get("LBTUI_PURE_PYTHON"))
    if problem and not pure:
        warnings.warn(
            f"lbtui: {problem}; running every hot module from source."
            " Rebuild with `pip install -e .` (or set LBTUI_PURE_PYTHON=1 to silence this).",
            RuntimeWarning,
            stacklevel=2,
        )
    if pure or problem:
        if not any(isinstance(f, _SourceFirst) for f in sys.meta_path):
            sys.meta_path.insert(0, _SourceFirst(sources))
        return "python"
    return "compiled"


MODE = choose()
"""How the hot modules run in this process: "compiled" (mypyc) or "python"."""
