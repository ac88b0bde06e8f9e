"""Keeping third-party chatter out of a user's normal output.

Flower's ``run_simulation`` logs a "DEPRECATED FEATURE" banner at WARNING and
Ray warns (``FutureWarning``) about accelerator environment variables on every
start. Neither is something a fedcollab user can act on, so commands run them
inside :func:`quiet_third_party`, which silences them unless the user asked
for detail (``fedcollab -v`` or ``--verbose``). Our own modules log through
``logging.getLogger(__name__)`` (names under ``fedcollab.``) and are not affected.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["THIRD_PARTY_LOGGERS", "quiet_third_party", "set_verbose", "verbose_requested"]

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
