"""Third-party banners and warnings stay out of normal output and show with -v."""

from __future__ import annotations

import io
import logging
import re
import warnings

import pytest

from fedcollab.common import third_party_noise
from fedcollab.common.third_party_noise import quiet_third_party


def _emit() -> list[str]:
    """Flower's deprecation banner (a WARNING log) and Ray's FutureWarning, as emitted."""
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    flwr = logging.getLogger("flwr")
    handler = Collect()
    flwr.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with quiet_third_party(verbose=False):
                flwr.warning("DEPRECATED FEATURE: run_simulation")
                warnings.warn_explicit(
                    "Tip: In future versions of Ray", FutureWarning, "worker.py", 2051,
                    module="ray._private.worker",
                )  # fmt: skip
                warnings.warn_explicit(
                    "ours", FutureWarning, "x.py", 1, module="fedcollab.protocols.x"
                )
                logging.getLogger("fedcollab.protocols.x").error("ours too")
            seen += [str(w.message) for w in caught]
    finally:
        flwr.removeHandler(handler)
    return seen


def test_hidden_by_default() -> None:
    seen = _emit()
    assert not any("DEPRECATED" in s or "Ray" in s for s in seen), seen
    assert "ours" in seen  # our own warnings are not hidden
    assert logging.getLogger("flwr").level != logging.ERROR  # restored afterwards


def test_shown_with_verbose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(third_party_noise, "_verbose", True)
    seen = _emit()
    assert any("DEPRECATED FEATURE" in s for s in seen)
    assert any("In future versions of Ray" in s for s in seen)


def test_our_modules_log_under_their_own_names() -> None:
    """Every module logs through getLogger(__name__), so -v and filters work by package."""
    import re
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    named = re.compile(r"""getLogger\(\s*["']fedcollab\.""")
    offenders = [
        str(p.relative_to(repo))
        for folder in (
            "cli",
            "client",
            "common",
            "compliance",
            "coordinator",
            "federation",
            "privacy",
        )
        for p in (repo / folder).rglob("*.py")
        if named.search(p.read_text(encoding="utf-8"))
    ]
    # client/client_app.py belongs to another change in flight (issue 13); see the report.
    assert offenders in ([], ["client/client_app.py"])


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_flower_lines_in_a_log_file_carry_a_time_and_no_colour_codes() -> None:
    from flwr.supercore.logger import FLOWER_LOGGER, ConsoleHandler

    (handler,) = [h for h in FLOWER_LOGGER.handlers if isinstance(h, ConsoleHandler)]
    before = (handler.colored, handler.timestamps)
    record = logging.LogRecord("flwr", logging.INFO, "x.py", 1, "Starting", None, None)
    try:
        # Flower's own default (an in-process ServerApp of another test may have changed it)
        handler.colored, handler.timestamps = True, False
        assert "\x1b[" in handler.format(record)
        assert third_party_noise.plain_flower_logs(_Tty()) is False  # a terminal: as is
        assert "\x1b[" in handler.format(record)
        assert third_party_noise.plain_flower_logs(io.StringIO()) is True
        line = handler.format(record)
        assert "\x1b[" not in line
        assert re.match(r"INFO \d{4}-\d\d-\d\d [\d:,]+\s*:\s+Starting$", line), line
    finally:
        handler.colored, handler.timestamps = before
