"""Environment defaults (KERNELCLI_JOBS, KERNELCLI_QUALITY, ...) through the installed command."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from PIL import Image


def _run(args, cwd, **env):
    command = shutil.which("kernelcli")
    if command is None:
        pytest.skip("needs the installed kernelcli")
    full = {k: v for k, v in os.environ.items() if not k.startswith("KERNELCLI_")}
    return subprocess.run([command, *args], cwd=cwd, capture_output=True, timeout=120, env={**full, **env})


@pytest.fixture
def picture(tmp_path):
    Image.effect_noise((48, 40), 60).convert("RGB").save(tmp_path / "in.png")
    return tmp_path


def test_quality_from_the_environment_and_the_command_line_wins(picture):
    for name, args, env in (("cli.jpg", ["--quality", "20"], {}), ("env.jpg", [], {"KERNELCLI_QUALITY": "20"}),
                            ("both.jpg", ["--quality", "92"], {"KERNELCLI_QUALITY": "20"}),
                            ("plain.jpg", [], {})):
        got = _run(["apply", "identity", "in.png", name, *args], picture, **env)
        assert got.returncode == 0, got.stderr
    read = {n: (picture / n).read_bytes() for n in ("cli.jpg", "env.jpg", "both.jpg", "plain.jpg")}
    assert read["env.jpg"] == read["cli.jpg"] != read["plain.jpg"]
    assert read["both.jpg"] == read["plain.jpg"]


def test_max_pixels_and_jobs_from_the_environment(picture):
    got = _run(["apply", "identity", "in.png", "out.png"], picture, KERNELCLI_MAX_PIXELS="100")
    assert got.returncode == 1 and b"over the limit of 100" in got.stderr
    got = _run(["apply", "identity", "in.png", "out.png"], picture, KERNELCLI_JOBS="2")  # one file: ignored
    assert got.returncode == 0, got.stderr
    got = _run(["apply", "identity", "in.png", "out.png"], picture, KERNELCLI_JOBS="many")
    assert got.returncode == 2 and b"KERNELCLI_JOBS" in got.stderr


def test_help_names_the_variables(picture):
    text = _run(["apply", "--help"], picture).stdout.decode()
    for name in ("KERNELCLI_JOBS", "KERNELCLI_QUALITY", "KERNELCLI_PNG_LEVEL", "KERNELCLI_MAX_PIXELS"):
        assert name in text
