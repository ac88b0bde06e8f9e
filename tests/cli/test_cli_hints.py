"""Every ``fedcollab ...`` command that a hint, docstring or doc names exists.

A hint that sends a user to a command that is not there (``fedcollab node
budget set`` did, for ``fedcollab budget set``) is worse than no hint. This
test collects each backquoted ```fedcollab ...``` from the product's sources
(common/errors.py and every other module that raises with a hint), README.md
and docs/, walks the CLI's command tree and checks each subcommand and
``--option`` it names.
"""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
import typer.main

from fedcollab.cli.app import app

REPO = Path(__file__).resolve().parents[2]
_FOLDERS = (
    "cli",
    "client",
    "common",
    "compliance",
    "coordinator",
    "federation",
    "privacy",
    "protocols",
)
_MENTION = re.compile(r"`(fedcollab(?: [^`\n]*)?)`")


def _mentions() -> list[tuple[str, str]]:
    files = [p for folder in _FOLDERS for p in sorted((REPO / folder).rglob("*.py"))]
    files += [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    found: dict[str, str] = {}
    for path in files:
        for match in _MENTION.finditer(path.read_text(encoding="utf-8")):
            found.setdefault(match.group(1).strip(), str(path.relative_to(REPO)))
    return sorted(found.items())


MENTIONS = _mentions()


def check(command_line: str) -> None:
    """Raise AssertionError if ``command_line`` names a command or option the CLI lacks."""
    command: click.Command = typer.main.get_command(app)
    words = command_line.split()[1:]
    path = ["fedcollab"]
    i = 0
    while i < len(words) and isinstance(command, click.Group):
        word = words[i]
        if word.startswith("-") or not re.fullmatch(r"[a-z][a-z-]*", word):
            break
        sub = command.commands.get(word)
        assert sub is not None, f"`{command_line}`: {' '.join(path)} has no command {word!r}"
        command, path = sub, [*path, word]
        i += 1
    options = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
    options.add("--help")
    for word in words[i:]:
        if word.startswith("--"):
            option = word.split("=", 1)[0]
            assert option in options, f"`{command_line}`: {' '.join(path)} has no option {option}"


def test_mentions_were_found() -> None:
    assert len(MENTIONS) > 30
    assert any(line.startswith("fedcollab budget set") for line, _ in MENTIONS)


@pytest.mark.parametrize(("command_line", "where"), MENTIONS)
def test_every_named_command_exists(command_line: str, where: str) -> None:
    check(command_line)


@pytest.mark.parametrize(
    "wrong",
    ["fedcollab node budget set", "fedcollab run --budget-cap-eps 3", "fedcollab audit verfy"],
)
def test_the_check_catches_wrong_commands(wrong: str) -> None:
    with pytest.raises(AssertionError):
        check(wrong)
