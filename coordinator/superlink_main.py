"""``flower-superlink`` whose SQLite store waits out a busy writer instead of failing.

    python -m fedcollab.coordinator.superlink_main <flower-superlink options>

Flower 1.41 keeps the SuperLink's state (runs, messages, the object store that
holds every message's content) in one SQLite file when started with
``--database``, with ``PRAGMA busy_timeout = 5000`` on every connection
(``flwr/supercore/constant.py``, ``SQLITE_PRAGMAS``). The SuperLink serves the
Fleet, ServerAppIo and Control APIs from many threads of one process, and each
write takes SQLite's single writer lock. On a loaded 2-core machine a writer can
hold that lock for more than 5 s (its thread waits for the CPU and for the GIL
while it holds the lock), and then the next writer gets ``database is locked``:
in a fresh-clone ``make demo`` at load average 10 one partner's reply could not be
stored in round 6 ("Failed to store object ...: database is locked"), the partner's
push failed, and the round lost that partner. A busy writer is a transient
condition, not an error: waiting for it is what a longer busy timeout does.

This launcher runs Flower's own ``flower-superlink`` entry point unchanged except
for that one pragma, raised to :data:`BUSY_TIMEOUT_MS`. Nothing else changes: same
TLS, same authentication, same database file and schema. If Flower's modules no
longer have the names this relies on, the SuperLink runs unpatched and says so on
stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["BUSY_TIMEOUT_MS", "install", "main", "patched_pragmas"]

#: How long a SuperLink writer waits for SQLite's write lock before it gives up.
BUSY_TIMEOUT_MS = 120_000

_PRAGMA_MODULES = ("flwr.supercore.constant", "flwr.supercore.sql_mixin")


def patched_pragmas(
    pragmas: Sequence[tuple[str, str]], busy_timeout_ms: int = BUSY_TIMEOUT_MS
) -> tuple[tuple[str, str], ...]:
    """``pragmas`` with ``busy_timeout`` set to ``busy_timeout_ms`` (added if absent)."""
    out = [(name, value) for name, value in pragmas if name != "busy_timeout"]
    # busy_timeout first: it must hold before journal_mode=WAL takes its lock.
    return (("busy_timeout", str(busy_timeout_ms)), *out)


def install(busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> bool:
    """Raise the busy timeout in Flower's SQLite pragmas; False if Flower changed shape."""
    import importlib

    done = False
    for name in _PRAGMA_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        current = getattr(module, "SQLITE_PRAGMAS", None)
        if not isinstance(current, tuple):
            continue
        module.SQLITE_PRAGMAS = patched_pragmas(current, busy_timeout_ms)  # type: ignore[attr-defined]
        done = True
    if not done:
        print(
            "fedcollab: Flower's SQLITE_PRAGMAS not found; the SuperLink runs with "
            "Flower's own SQLite busy timeout",
            file=sys.stderr,
        )
    return done


def main() -> None:
    """Run ``flower-superlink`` with the patched pragmas and this process's arguments."""
    install()
    from flwr.superlink.cli import flower_superlink

    sys.argv[0] = "flower-superlink"
    flower_superlink()


if __name__ == "__main__":  # pragma: no cover - exercised as a subprocess
    main()
