"""The docs site (mkdocs.yml + docs/) builds with zero warnings, lists every page, documents
every CLI command, and the README stays a short landing page that links into it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import click
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
README_MAX_LINES = 150


def nav_pages(nav) -> list[str]:
    """Every page path in a mkdocs ``nav`` (nested lists of ``{title: path or list}``)."""
    pages = []
    for item in nav:
        if isinstance(item, str):
            pages.append(item)
        elif isinstance(item, dict):
            for value in item.values():
                pages += nav_pages(value) if isinstance(value, list) else [value]
    return pages


def first_h2_section(text: str) -> tuple[list[str], list[str]]:
    """(lines before the first ``## `` heading, lines of that section up to the next one)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("## "))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return lines[:start], lines[start:end]


def test_mkdocs_build_is_strict_clean(tmp_path):
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=540)
    if proc.returncode != 0:
        print(proc.stderr)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stderr[-4000:]}"
    warnings = [line for line in proc.stderr.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert not warnings, "\n".join(warnings)
    assert (tmp_path / "site" / "reference" / "hooks" / "index.html").read_text().count("augforge_run_start") > 0


def test_every_docs_page_is_in_the_nav():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    nav = set(nav_pages(config["nav"]))
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert pages, "docs/ has no pages"
    assert not pages - nav, f"pages missing from mkdocs.yml nav: {sorted(pages - nav)}"
    assert not nav - pages, f"nav entries without a page: {sorted(nav - pages)}"


def test_every_cli_command_has_a_heading_in_cli_md():
    from augforge.cli import cli

    commands = cli.list_commands(click.Context(cli))
    assert {"train", "evaluate", "export", "generate", "demo"} <= set(commands), commands
    headings = set(re.findall(r"^## (augforge [\w-]+)\s*$", (DOCS / "cli.md").read_text(), flags=re.M))
    missing = [name for name in commands if f"augforge {name}" not in headings]
    assert not missing, f"docs/cli.md lacks a '## augforge <command>' heading for: {missing}"


def test_readme_is_a_short_landing_page_starting_with_the_two_commands():
    text = README.read_text()
    n = len(text.splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines (at most {README_MAX_LINES}): move detail into docs/"
    before, section = first_h2_section(text)
    assert [line for line in before if line.strip()] == ["# augforge"], "the first ## section must follow the title"
    body = "\n".join(section)
    assert "make demo" in body and "make test" in body, "README's first section must give `make demo` and `make test`"


def test_readme_links_resolve_and_reach_every_docs_page():
    text = README.read_text()
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if "://" not in t]
    broken = [t for t in local if not (ROOT / t).exists()]
    assert not broken, f"README links to missing files: {broken}"
    linked = {(ROOT / t).resolve() for t in local}
    unlinked = [p.relative_to(ROOT).as_posix() for p in DOCS.rglob("*.md") if p.resolve() not in linked]
    assert not unlinked, f"README does not link these docs pages: {unlinked}"
    assert (ROOT / "benchmarks" / "README.md").resolve() in linked


def test_cli_md_shows_each_commands_current_help():
    """The option tables in docs/cli.md are each command's `--help` (100 columns), verbatim."""
    from click.testing import CliRunner

    from augforge.cli import cli

    text = (DOCS / "cli.md").read_text()
    blocks = re.findall(r"^## augforge ([\w-]+)\n.*?```text\n(.*?)```", text, flags=re.M | re.S)
    assert len(blocks) >= 10
    for name, shown in blocks:
        help_text = CliRunner().invoke(cli, [name, "--help"], terminal_width=100).output.replace("Usage: cli ", "Usage: augforge ")
        assert shown == help_text, f"docs/cli.md: the help of `augforge {name}` is out of date; paste `augforge {name} --help`"
