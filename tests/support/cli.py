"""Checks shared by tests of what the CLI tells a user."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click
import pytest
import typer.main

from fedcollab.cli.app import app
from fedcollab.cli.app import main as cli_main

__all__ = ["check"]


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


def run_cli(monkeypatch: pytest.MonkeyPatch, *args: str | Path) -> int:
    """``fedcollab ARGS`` in this process, through the real entry point; its exit code
    as a shell sees it (typed errors mapped to their codes by ``cli.app.main``)."""
    monkeypatch.setattr(sys, "argv", ["fedcollab", *map(str, args)])
    try:
        cli_main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
