"""Checks shared by tests of what the CLI tells a user."""

from __future__ import annotations

import re

import click
import typer.main

from fedcollab.cli.app import app

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
