"""Shared fixtures for the kernelcli tests.

* ``samples``: the project's ``samples/`` folder.
* ``run_cli(args, input=None)``: run ``kernelcli`` in-process through click's
  ``CliRunner`` (click >= 8.2: stdout and stderr are kept apart; use
  ``result.stdout_bytes``, ``result.stdout``, ``result.stderr``).
* ``run_installed(args, input=None)``: run the installed ``kernelcli`` console
  script as a real process; returns a ``subprocess.CompletedProcess`` with
  bytes ``stdout`` / ``stderr``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

SAMPLES = Path(__file__).parent.parent / "samples"


def _installed_command() -> list[str]:
    exe = shutil.which("kernelcli")
    if exe is None:  # fall back to the same interpreter's module entry point
        return [sys.executable, "-m", "kernelcli"]
    return [exe]


@pytest.fixture(scope="session")
def samples() -> Path:
    return SAMPLES


@pytest.fixture(scope="session")
def run_cli():
    from kernelcli.cli import cli

    def run(args, input=None, env=None):
        runner = CliRunner()
        return runner.invoke(cli, [str(a) for a in args], input=input, env=env,
                             prog_name="kernelcli", catch_exceptions=True)

    return run


@pytest.fixture(scope="session")
def run_installed():
    command = _installed_command()

    def run(args, input=None, cwd=None, timeout=120, **kwargs):
        env = dict(os.environ)
        env.pop("KERNELCLI_DEBUG", None)
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        if input is None and "stdin" not in kwargs:
            kwargs["stdin"] = subprocess.DEVNULL
        return subprocess.run(command + [str(a) for a in args], input=input, cwd=cwd,
                              env=env, timeout=timeout, **kwargs)

    return run
