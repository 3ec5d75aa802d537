"""Shell completion: click's bash script, sourced in a real bash, completes
commands, options, option choices and kernel names."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from kernelcli.kernels import names

BASH = shutil.which("bash")


def _complete(words: list[str], cword: int) -> list[str]:
    """COMPREPLY after the completion function runs on ``words`` (cursor on word ``cword``)."""
    command = shutil.which("kernelcli")
    script = ('eval "$(_KERNELCLI_COMPLETE=bash_source "$KC")" || exit 9\n'
              'complete -p kernelcli >&2 || exit 8\n'
              f'COMP_WORDS=({" ".join(_quote(w) for w in words)}); COMP_CWORD={cword}\n'
              '_kernelcli_completion "$KC"\n'
              'printf "%s\\n" "${COMPREPLY[@]}"\n')
    got = subprocess.run([BASH, "--norc", "--noprofile", "-c", script], capture_output=True, text=True,
                         timeout=60, env={"KC": command, "PATH": "/usr/bin:/bin"})
    assert got.returncode == 0, got.stderr
    assert "-F _kernelcli_completion kernelcli" in got.stderr
    return [line for line in got.stdout.splitlines() if line]


def _quote(word: str) -> str:
    return "'" + word.replace("'", "'\\''") + "'"


pytestmark = pytest.mark.skipif(BASH is None or shutil.which("kernelcli") is None,
                                reason="needs bash and the installed kernelcli")


@pytest.mark.parametrize("words, cword, expected", [
    (["kernelcli", "in"], 1, ["info"]),
    (["kernelcli", "kernels", "sh"], 2, ["show"]),
    (["kernelcli", "apply", "sharpen", "x.png", "--pad-mode", "reflect"], 5, ["reflect", "reflect101"]),
    (["kernelcli", "apply", "sharpen", "x.png", "--dry"], 4, ["--dry-run"]),
    (["kernelcli", "conv", "edge,sobel-"], 2, ["edge,sobel-x", "edge,sobel-y"]),
    (["kernelcli", "kernels", "show", "gau"], 3, sorted([n for n in names() if n.startswith("gau")] + ["gaussian:"])),
    (["kernelcli", "apply", "sob"], 2, ["sobel", "sobel-x", "sobel-y"]),
    (["kernelcli", "conv", "edge,kir"], 2, ["edge,kirsch"] + [f"edge,{n}" for n in names() if n.startswith("kir")]),
    (["kernelcli", "kernels", "show", "sob"], 3, ["sobel", "sobel-x", "sobel-y"]),
    (["kernelcli", "apply", "un"], 2, ["unsharp", "unsharp:"]),
    (["kernelcli", "explain", "lo"], 2, ["log:"]),
])
def test_bash_completes(words, cword, expected):
    assert sorted(_complete(words, cword)) == sorted(expected)


def test_bash_completes_every_kernel_name():
    assert set(names()) <= set(_complete(["kernelcli", "apply", ""], 2))


@pytest.mark.parametrize("shell, marker", [("zsh", "#compdef kernelcli"), ("fish", "complete --no-files --command kernelcli")])
def test_zsh_and_fish_scripts_are_generated(run_installed, shell, marker):
    import os

    got = subprocess.run([shutil.which("kernelcli")], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "_KERNELCLI_COMPLETE": f"{shell}_source"})
    assert got.returncode == 0 and marker in got.stdout, got.stdout + got.stderr
