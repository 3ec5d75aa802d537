"""The docs cannot drift from the code: kernel table, commands and options,
quickstart, links, and a README short enough to read."""

import re
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

from kernelcli.cli import cli
from kernelcli.kernels import get_kernel, library

ROOT = Path(__file__).resolve().parent.parent
README_PATH = ROOT / "README.md"
DOCS = ROOT / "docs"
README = README_PATH.read_text(encoding="utf-8")
COMMANDS = (DOCS / "commands.md").read_text(encoding="utf-8")
KERNELS = (DOCS / "kernels.md").read_text(encoding="utf-8")
CI = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
MARKDOWN = [README_PATH, *sorted(DOCS.glob("*.md")), ROOT / "benchmarks" / "README.md"]

README_MAX_LINES = 300


def _commands(group=cli, prefix="kernelcli"):
    """``{"kernelcli apply": command, ..., "kernelcli kernels show": command}``."""
    found = {}
    for name, command in sorted(group.commands.items()):
        path = f"{prefix} {name}"
        found[path] = command
        if isinstance(command, click.Group):
            found.update(_commands(command, path))
    return found


ALL_COMMANDS = _commands()


def _sections(text):
    """Level-2 sections of a Markdown text: ``{heading: body}`` (code blocks skipped)."""
    sections, heading, body, fenced = {}, None, [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("## "):
            if heading is not None:
                sections[heading] = "\n".join(body)
            heading, body = line[3:].strip(), []
        elif heading is not None:
            body.append(line)
    if heading is not None:
        sections[heading] = "\n".join(body)
    return sections


def _command_section(path):
    """The section of docs/commands.md headed ``## `kernelcli NAME` ``; subcommands
    (``kernelcli kernels show``) are documented in their group's section."""
    sections = _sections(COMMANDS)
    words = path.split()
    while len(words) > 1:
        heading = f"`{' '.join(words)}`"
        if heading in sections:
            return sections[heading]
        words = words[:-1]
    raise AssertionError(f"docs/commands.md has no section '## `{path}`'")


def _documented(opt, text):
    """An option counts as documented where it starts a code span (`--stride`,
    `-s, --stride S`) or follows its short form (`-s, --stride`)."""
    return re.search(rf"`{re.escape(opt)}(?![\w-])", text) or re.search(rf", {re.escape(opt)}(?![\w-])", text)


# --------------------------------------------------------------------------
# kernels


def _table_rows(text):
    rows = {}
    for line in text.splitlines():
        m = re.match(r"^\| `([a-z0-9-]+)` \| `([^`]+)` \| ([-0-9/]+) \|", line)
        if m:
            rows[m.group(1)] = (m.group(2), m.group(3))
    return rows


def test_every_named_kernel_is_in_the_kernels_table_with_its_values():
    rows = _table_rows(KERNELS)
    assert set(rows) == set(library()), "docs/kernels.md's kernel table and kernels/ differ"
    for name, (matrix, scale) in rows.items():
        documented = get_kernel(matrix).values * float(eval(scale, {}, {}))  # noqa: S307 (digits and / only)
        np.testing.assert_allclose(documented, library()[name].values * library()[name].scale, err_msg=name)


def test_the_kernel_table_lives_only_in_docs_kernels():
    assert not _table_rows(README), "the README repeats the kernel table: link to docs/kernels.md instead"


# --------------------------------------------------------------------------
# commands and options


@pytest.mark.parametrize("path", sorted(ALL_COMMANDS))
def test_every_command_has_help_and_is_documented(path):
    command = ALL_COMMANDS[path]
    assert command.help, path
    assert path in README, f"'{path}' is not named in README.md"
    assert path in COMMANDS, f"'{path}' is not named in docs/commands.md"
    result = CliRunner().invoke(cli, [*path.split()[1:], "--help"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("path", sorted(ALL_COMMANDS))
def test_every_option_is_documented_in_its_command_section(path):
    section = _command_section(path)
    options = [p for p in ALL_COMMANDS[path].params if isinstance(p, click.Option)]
    missing = [opt for p in options for opt in [*p.opts, *p.secondary_opts] if not _documented(opt, section)]
    assert not missing, f"{path}: options missing from docs/commands.md: {missing}"


def test_every_global_option_is_documented():
    section = _sections(COMMANDS)["Global options"]
    missing = [opt for p in cli.params if isinstance(p, click.Option)
               for opt in [*p.opts, *p.secondary_opts] if not _documented(opt, section)]
    assert not missing, f"global options missing from docs/commands.md: {missing}"


@pytest.mark.parametrize("path", sorted(ALL_COMMANDS))
def test_every_documented_option_exists(path):
    """Each option row of a command's tables names an option the command has."""
    section = _command_section(path)
    real = {opt for p in ALL_COMMANDS[path].params for opt in [*p.opts, *p.secondary_opts]}
    documented = set()
    for line in section.splitlines():
        cell = line.split("|")[1] if line.startswith("| `-") else ""
        documented.update(re.findall(r"(?<![\w-])(--?[a-z][a-z0-9-]*)", cell))
    assert documented <= real, f"{path}: docs/commands.md documents options it lacks: {sorted(documented - real)}"


def test_every_command_section_names_a_command():
    for heading in _sections(COMMANDS):
        if heading.startswith("`kernelcli "):
            assert heading.strip("`") in ALL_COMMANDS, f"docs/commands.md documents '{heading}', no such command"


# --------------------------------------------------------------------------
# quickstart, links, length


def test_quickstart_has_the_two_commands_and_ci_runs_the_test_one():
    assert "pip install . && kernelcli apply sharpen samples/photo.jpg sharpened.jpg" in README
    marker = README.index("<!-- test-command -->")
    block = README[marker:].split("```")[1].strip()
    assert block == "pip install '.[test]' && python -m pytest -q"
    assert "test-command" in CI


def _slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(text):
    anchors, seen, fenced = set(), {}, False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        m = None if fenced else re.match(r"^#{1,6} (.+)$", line)
        if m:
            slug = _slug(m.group(1))
            anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return anchors


def _links(text):
    without_code = re.sub(r"```.*?```", "", text, flags=re.S)
    return re.findall(r"\]\(([^)\s]+)\)", without_code)


@pytest.mark.parametrize("doc", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_to_a_file_and_heading_that_exist(doc):
    links = [link for link in _links(doc.read_text(encoding="utf-8")) if not re.match(r"[a-z]+:", link)]
    for link in links:
        path, _, anchor = link.partition("#")
        target = (doc.parent / path).resolve() if path else doc
        assert target.exists(), f"{doc.name}: link to missing file {link}"
        if anchor:
            assert target.suffix == ".md", f"{doc.name}: anchor into a file that is not Markdown: {link}"
            assert anchor in _anchors(target.read_text(encoding="utf-8")), f"{doc.name}: no heading for {link}"


def test_the_link_checker_sees_links_and_anchors():
    assert "docs/feature-maps.png" in _links(README)
    assert "arrays-larger-than-memory" in _anchors(COMMANDS)
    assert "kernelcli-apply" in _anchors(COMMANDS)


def test_readme_is_short():
    lines = len(README.splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move reference material into docs/"


#: Parameters of public functions that the commands use and the API page leaves out.
INTERNAL_PARAMETERS = {("read_image", "integers"), ("read_image", "on_header")}


def test_the_python_api_table_gives_each_function_s_signature():
    """docs/python-api.md's table states each public function's parameters
    and defaults as the code has them."""
    import inspect

    import kernelcli

    text = (DOCS / "python-api.md").read_text(encoding="utf-8")
    for name in ("convolve", "relu", "pool", "get_kernel", "read_image", "write_image", "warm_up", "release_memory"):
        shown = re.search(rf"^\| `{name}\((.*?)\)` \|", text, re.M)
        assert shown, f"{name} is not in docs/python-api.md's table"
        params = [p for p in inspect.signature(getattr(kernelcli, name)).parameters.values()
                  if (name, p.name) not in INTERNAL_PARAMETERS]
        code = ", ".join(p.name if p.default is inspect.Parameter.empty else f"{p.name}={p.default!r}".replace("'", '"')
                         for p in params)
        assert shown.group(1) == code, name
