"""No product module over ~400 lines without a reason written at its top (issue 17).

A module grows past 400 lines only when its docstring says why, in a paragraph that
starts ``Long module:`` within its first lines (why it is one concept, or which split
is planned). A new long module without one fails this test; so does a module that
keeps the paragraph after it shrank below the limit (the reasons only go away).
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.test_layers import LAYERS

ROOT = Path(__file__).resolve().parents[1]
#: The product packages, as the layer contract lists them (lowest first).
PACKAGES = tuple(LAYERS)
LIMIT = 400
MARKER = "Long module:"
#: The reason must be readable without scrolling: within this many docstring lines.
TOP_LINES = 12


def _modules() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def _reason(path: Path) -> str | None:
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    for line in doc.splitlines()[:TOP_LINES]:
        if line.startswith(MARKER):
            return line[len(MARKER) :].strip()
    return None


def _lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def test_long_modules_have_a_reason_at_their_top() -> None:
    missing = [
        p.relative_to(ROOT).as_posix() for p in _modules() if _lines(p) > LIMIT and not _reason(p)
    ]
    assert missing == [], (
        f"modules over {LIMIT} lines need a '{MARKER} <why>' paragraph at the top of their "
        f"docstring, or a split: {missing}"
    )


def test_short_modules_carry_no_stale_reason() -> None:
    stale = [
        p.relative_to(ROOT).as_posix() for p in _modules() if _lines(p) <= LIMIT and _reason(p)
    ]
    assert stale == [], f"these modules are short now: remove their '{MARKER}' paragraph: {stale}"


def test_the_check_sees_a_long_module_without_a_reason(tmp_path: Path) -> None:
    long = tmp_path / "long.py"
    long.write_text('"""A module."""\n' + "x = 1\n" * (LIMIT + 1), encoding="utf-8")
    assert _lines(long) > LIMIT and _reason(long) is None
    long.write_text(f'"""A module.\n\n{MARKER} one concept.\n"""\n', encoding="utf-8")
    assert _reason(long) == "one concept."
