"""The README's list of exit codes is the one ``common/errors.py`` defines.

New-user review (2026-12-06): 17, 20, 30 and 40 were missing from the README, and 30
(``ComplianceError``) is what the commonest audit mistakes return.
"""

from __future__ import annotations

import re
from pathlib import Path

from fedcollab.common import errors

README = Path(__file__).resolve().parents[2] / "README.md"


def _codes() -> set[int]:
    found = set()
    for value in vars(errors).values():
        if isinstance(value, type) and issubclass(value, errors.FedcollabError):
            found.add(value.exit_code)
    return found - {errors.FedcollabError.exit_code}


def test_the_readme_lists_every_exit_code() -> None:
    text = " ".join(README.read_text(encoding="utf-8").split())
    start = text.index("each class has its own exit code")
    listed = {int(n) for n in re.findall(r"\b(\d\d) [a-z]", text[start : start + 600])}
    assert listed == _codes(), (sorted(listed), sorted(_codes()))
