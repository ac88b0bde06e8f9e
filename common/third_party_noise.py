"""Keeping third-party chatter out of a user's normal output, and its colours out of logs.

Flower's ``run_simulation`` logs a "DEPRECATED FEATURE" banner at WARNING and
Ray warns (``FutureWarning``) about accelerator environment variables on every
start. Neither is something a fedcollab user can act on, so commands run them
inside :func:`quiet_third_party`, which silences them unless the user asked
for detail (``fedcollab -v`` or ``--verbose``). Our own modules log through
``logging.getLogger(__name__)`` (names under ``fedcollab.``) and are not affected.

Flower's console handler writes its level names in ANSI colours whatever the stream,
so node and coordinator log files held ``ESC[92mINFO ESC[0m`` lines without a time.
The long-running processes call :func:`plain_flower_logs`: in a file, Flower's lines
get a timestamp and no colour codes; on a terminal they stay as Flower writes them.
Flower's SuperExec, a process the SuperLink starts itself, keeps its one coloured
start-up line.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

__all__ = [
    "THIRD_PARTY_LOGGERS",
    "plain_flower_logs",
    "quiet_third_party",
    "set_verbose",
    "verbose_requested",
]

#: Loggers of libraries whose warnings are noise to a user (errors still show).
THIRD_PARTY_LOGGERS = ("flwr", "ray")
#: Modules whose Python warnings are hidden (a regex on the warning's module).
_WARNING_MODULES = r"(flwr|ray|grpc|google)(\.|$)"

_verbose = False


def set_verbose(verbose: bool) -> None:
    """Record the global ``-v`` flag and configure logging for it."""
    global _verbose
    _verbose = verbose
    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger("fedcollab").setLevel(logging.DEBUG)


def verbose_requested() -> bool:
    """True when the user passed ``fedcollab -v``."""
    return _verbose


@contextmanager
def quiet_third_party(verbose: bool = False) -> Iterator[None]:
    """Within the block, third-party warnings and deprecation banners are hidden
    (unless ``verbose`` or ``fedcollab -v``)."""
    if verbose or _verbose:
        yield
        return
    loggers = [logging.getLogger(name) for name in THIRD_PARTY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            for category in (FutureWarning, DeprecationWarning, UserWarning):
                warnings.filterwarnings("ignore", category=category, module=_WARNING_MODULES)
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def plain_flower_logs(stream: TextIO | None = None) -> bool:
    """Flower's console lines with a timestamp and without ANSI colours when ``stream``
    (default stderr, where Flower's handler writes) is not a terminal; True if changed."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    if callable(isatty) and isatty():
        return False
    try:
        from flwr.supercore.logger import update_console_handler
    except ImportError:  # another Flower: its lines keep their format
        return False
    update_console_handler(timestamps=True, colored=False)
    return True
