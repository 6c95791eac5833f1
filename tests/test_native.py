"""The compiled hot modules (engine/_native.py): built where a compiler is, else source,
and never a stale or partial build."""

from __future__ import annotations

import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from engine import _native

ROOT = Path(__file__).resolve().parents[1]
NAMES = [s.removesuffix(".py").replace("/", ".") for s in _native.COMPILED]
_PROBE = (
    "import importlib, json, engine, engine._native as n; "
    f"print(json.dumps([n.MODE] + [importlib.import_module(m).__file__ for m in {NAMES!r}]))"
)


def _compiled_files(root: Path) -> list[Path]:
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    return [p for p in root.rglob("*") if p.name.endswith(suffixes) and ".venv" not in p.parts]


def _probe(root: Path, *, isolated: bool = False, **env: str) -> tuple[str, list[str], str]:
    """Import every hot module in a fresh interpreter rooted at ``root``.

    ``isolated``: without ``site`` (the site-packages directories go on the path as
    plain directories), so an editable install's import hooks cannot find this checkout.
    """
    clean = {k: v for k, v in os.environ.items() if k != "LBTUI_PURE_PYTHON"}
    path = [str(root)]
    flags = []
    if isolated:
        flags = ["-S"]
        path += [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
    done = subprocess.run(
        [sys.executable, *flags, "-c", _PROBE],
        cwd=root,
        env={**clean, "PYTHONPATH": os.pathsep.join(path), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    mode, *files = json.loads(done.stdout)
    return mode, files, done.stderr


def test_the_hot_modules_are_compiled_wherever_a_compiler_is() -> None:
    """`pip install -e .` compiles them (setup.py); a silent fallback would lose half the speed."""
    if os.environ.get("LBTUI_PURE_PYTHON"):
        assert _native.MODE == "python"
        return
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not (shutil.which("cc") or shutil.which("gcc")) or not headers.exists():
        pytest.skip("no C compiler or Python headers here: lbtui runs from source, as designed")
    mode, files, _ = _probe(ROOT)
    assert mode == "compiled" == _native.MODE
    assert all(not f.endswith(".py") for f in files), files


def test_pure_python_runs_every_hot_module_from_source() -> None:
    mode, files, _ = _probe(ROOT, LBTUI_PURE_PYTHON="1")
    assert mode == "python"
    assert all(f.endswith(".py") for f in files), files


def _built_copy(tmp_path: Path) -> Path:
    if not _compiled_files(ROOT / "engine"):
        pytest.skip("not built here: there is no compiled module to go stale")
    copy = tmp_path / "checkout"
    shutil.copytree(ROOT / "engine", copy / "engine", ignore=shutil.ignore_patterns("__pycache__"))
    for shared in ROOT.glob("*__mypyc*"):  # mypyc's shared library for the group
        shutil.copy2(shared, copy / shared.name)
    (copy / ".git").mkdir()  # a source checkout, where edits happen
    return copy


def test_a_build_older_than_its_source_runs_from_source_with_a_warning(tmp_path: Path) -> None:
    copy = _built_copy(tmp_path)
    assert _probe(copy)[0] == "compiled"
    edited = copy / "engine" / "stats.py"
    later = max(p.stat().st_mtime for p in _compiled_files(copy)) + 10
    os.utime(edited, (later, later))
    mode, files, stderr = _probe(copy)
    assert mode == "python"
    assert all(f.endswith(".py") for f in files), files  # all or none
    assert "engine.stats older than the source" in stderr and "pip install -e ." in stderr


def test_a_partial_build_runs_from_source(tmp_path: Path) -> None:
    copy = _built_copy(tmp_path)
    for built in (copy / "engine" / "proxy").glob("client.*"):
        if built.suffix != ".py":
            built.unlink()
    mode, files, stderr = _probe(copy)
    assert mode == "python"
    assert all(f.endswith(".py") for f in files), files
    assert "engine.proxy.client not compiled" in stderr


def test_a_build_whose_shared_library_is_gone_runs_from_source(tmp_path: Path) -> None:
    """mypyc puts every module's code in one ``<hash>__mypyc`` library beside the package;
    a checkout moved without it must not fail with an ImportError at the first import."""
    copy = _built_copy(tmp_path)
    assert _probe(copy, isolated=True)[0] == "compiled"
    for shared in copy.glob("*__mypyc*"):
        shared.unlink()
    mode, files, stderr = _probe(copy, isolated=True)
    assert mode == "python"
    assert all(f.endswith(".py") for f in files), files
    assert "__mypyc cannot be imported" in stderr and "pip install -e ." in stderr
