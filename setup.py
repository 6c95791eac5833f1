"""Build lbtui, compiling the data plane's hot modules with mypyc (engine/_native.py).

Metadata lives in pyproject.toml; this file only adds the extension modules. Without a
C compiler, or with ``LBTUI_PURE_PYTHON=1``, the build leaves them out and lbtui runs
the same modules from source, slower.
"""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent


class OptionalBuildExt(build_ext):
    """A failed compile is a slower lbtui, not a failed install."""

    def finalize_options(self) -> None:
        super().finalize_options()
        # Always compile: an extension left as it was keeps its old time, and
        # engine/_native.py takes a build older than its source for a stale one.
        self.force = True

    def run(self) -> None:
        try:
            super().run()
        except Exception as error:  # noqa: BLE001 - any compiler failure
            # All or none (engine/_native.py): drop whatever part was built.
            for output in self.get_outputs():
                Path(output).unlink(missing_ok=True)
            print(f"lbtui: mypyc build failed, running from source: {error}", file=sys.stderr)


def compiled_sources() -> list[str]:
    """``COMPILED`` from engine/_native.py, read without running it."""
    tree = ast.parse((HERE / "engine" / "_native.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "COMPILED" for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise RuntimeError("engine/_native.py defines no COMPILED")


def extensions() -> list[object]:
    if os.environ.get("LBTUI_PURE_PYTHON"):
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("lbtui: mypyc not available, running from source", file=sys.stderr)
        return []
    os.chdir(HERE)  # mypyc names modules after the paths it is given
    try:  # mypyc type-checks first: an error there is a slower lbtui too, said aloud
        return mypycify(
            ["--ignore-missing-imports", "--follow-imports=silent", *compiled_sources()],
            opt_level="3",
        )
    except (Exception, SystemExit) as error:  # noqa: BLE001 - mypy exits on type errors
        print(f"lbtui: mypyc could not compile, running from source: {error}", file=sys.stderr)
        return []


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
