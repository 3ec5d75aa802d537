"""The layers point one way (import-linter's contract in pyproject.toml), and
modules and functions stay of a size a reader can hold."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "kernelcli"
#: The jitted loops are written out long on purpose (one pass over memory each).
LONG_ON_PURPOSE = {"_jit.py"}


def test_the_layers_contract_is_kept():
    pytest.importorskip("importlinter")
    code = ("import sys; from importlinter.cli import lint_imports; "
            "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))")
    got = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert got.returncode == 0, got.stdout + got.stderr
    assert "0 broken" in got.stdout


def test_the_contract_names_every_module():
    """A new module must be given its place in the layers."""
    import tomllib

    layers = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]["layers"]
    named = {name.strip() for layer in layers for name in layer.split("|")}
    modules = {f"kernelcli.{p.stem}" for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    packages = {f"kernelcli.{p.name}" for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert modules | packages == named


@pytest.mark.parametrize("path", sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")))
def test_sizes_a_reader_can_hold(path):
    text = (PACKAGE / path).read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 600, f"{path}: {len(text.splitlines())} lines"
    if Path(path).name in LONG_ON_PURPOSE:
        return
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            size = node.end_lineno - node.lineno + 1
            assert size <= 90, f"{path}: {node.name} is {size} lines"


def test_how_to_compute_is_decided_inside_the_engine():
    """Outside the engine nothing reaches for the engine's private names, and
    inside it only the backends module asks whether Numba is loaded (the
    command's process settings, kernelcli/_process.py, aside)."""
    import re

    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        name = str(path.relative_to(PACKAGE))
        if not name.startswith("engine"):
            assert not re.search(r"(?<![\w.])engine\._[a-z]", text), name
        if name not in ("engine/backends.py", "_process.py"):
            assert '"numba" in sys.modules' not in text and '"numba" not in sys.modules' not in text, name


def test_the_packages_lazy_names_are_their_submodules_objects():
    """kernelcli and kernelcli.io import their public names on first use
    (kernelcli._lazy); each is the submodule's object, other names fail."""
    code = ("import sys, kernelcli, kernelcli.io as io\n"
            "assert 'numpy' not in sys.modules\n"
            "from kernelcli.io import inputs, encode, picture\n"
            "from kernelcli import engine, kernels\n"
            "assert io.read_image is inputs.read_image and io.write_pixels is encode.write_pixels\n"
            "assert io.Picture is picture.Picture and kernelcli.convolve is engine.convolve\n"
            "assert kernelcli.get_kernel is kernels.get_kernel and kernelcli.read_image is inputs.read_image\n"
            "assert 'convolve' in vars(kernelcli)\n"
            "for module in (kernelcli, io):\n"
            "    try:\n"
            "        module.nothing_here\n"
            "    except AttributeError as e:\n"
            "        assert module.__name__ in str(e) and 'nothing_here' in str(e)\n"
            "    else:\n"
            "        raise SystemExit('no AttributeError')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
