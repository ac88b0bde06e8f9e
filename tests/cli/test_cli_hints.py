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

import pytest

from tests.support.cli import check

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
