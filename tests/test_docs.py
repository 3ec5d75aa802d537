"""The README cannot drift from the code: kernel table, options, commands, quickstart."""

import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from kernelcli.cli import apply, cli
from kernelcli.kernels import get_kernel, library

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
CI = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text(encoding="utf-8")


def _table_rows():
    rows = {}
    for line in README.splitlines():
        m = re.match(r"^\| `([a-z0-9-]+)` \| `([^`]+)` \| ([-0-9/]+) \|", line)
        if m:
            rows[m.group(1)] = (m.group(2), m.group(3))
    return rows


def test_every_named_kernel_is_in_the_readme_table_with_its_values():
    rows = _table_rows()
    assert set(rows) == set(library()), "README kernel table and kernels/ differ"
    for name, (matrix, scale) in rows.items():
        documented = get_kernel(matrix).values * float(eval(scale, {}, {}))  # noqa: S307 (digits and / only)
        np.testing.assert_allclose(documented, library()[name].values * library()[name].scale, err_msg=name)


def test_every_apply_option_is_documented():
    for param in apply.params:
        for opt in getattr(param, "opts", []):
            if opt.startswith("--"):
                assert f"`{opt}" in README or f", {opt}" in README, f"{opt} missing from README"


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_every_command_has_help_and_is_documented(name):
    assert cli.commands[name].help, name
    assert f"kernelcli {name}" in README
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0


def test_quickstart_has_the_two_commands_and_ci_runs_the_test_one():
    assert "pip install . && kernelcli apply sharpen samples/photo.jpg sharpened.jpg" in README
    marker = README.index("<!-- test-command -->")
    block = README[marker:].split("```")[1].strip()
    assert block == "pip install '.[test]' && python -m pytest -q"
    assert "test-command" in CI
