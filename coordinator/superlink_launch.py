"""``flower-superlink`` with a longer SQLite busy timeout for its state database.

    python -m fedcollab.coordinator.superlink_launch <flower-superlink options>

Flower 1.41 opens the SuperLink's state (``--database``) with ``PRAGMA busy_timeout
= 5000`` (``flwr/supercore/constant.py``, ``SQLITE_PRAGMAS``, applied on every new
connection by ``flwr/supercore/sql_mixin.py``): a request that waits more than 5 s
for SQLite's write lock fails with "database is locked", which the Fleet API
answers as HTTP 500. On a loaded machine (a ``ckks+masked`` demo, 2 cores shared)
a WAL checkpoint or a large object write held the lock that long at round 12, and
every SuperNode exited (client/fleet_poll.py now retries such answers).

This launcher runs Flower's own entry point unchanged except for that pragma:
:data:`BUSY_TIMEOUT_MS` (SQLite retries the lock for up to that long:
https://www.sqlite.org/pragma.html#pragma_busy_timeout). The state stays on disk
(``--database``): node registrations (``--enable-supernode-auth``) and runs must
survive a coordinator restart, which the in-memory state would not. If Flower's
module no longer has the name this relies on, the SuperLink runs with Flower's
5 s and says so on stderr.
"""

from __future__ import annotations

import sys
import types

__all__ = ["BUSY_TIMEOUT_MS", "install", "main"]

#: How long a SuperLink request waits for SQLite's lock before "database is locked".
BUSY_TIMEOUT_MS = 120_000


def install(module: types.ModuleType, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> bool:
    """Set ``busy_timeout`` in ``module.SQLITE_PRAGMAS``; False (nothing changed) if absent."""
    pragmas = getattr(module, "SQLITE_PRAGMAS", None)
    if not isinstance(pragmas, tuple) or not any(
        isinstance(p, tuple) and len(p) == 2 and p[0] == "busy_timeout" for p in pragmas
    ):
        return False
    module.SQLITE_PRAGMAS = tuple(  # type: ignore[attr-defined]
        (name, str(busy_timeout_ms)) if name == "busy_timeout" else (name, value)
        for name, value in pragmas
    )
    return True


def main() -> int:
    from flwr.supercore import sql_mixin
    from flwr.superlink.cli import flower_superlink

    if not install(sql_mixin):
        print(
            "fedcollab: flwr.supercore.sql_mixin has changed; the SuperLink's SQLite state "
            "keeps Flower's busy timeout (5 s)",
            file=sys.stderr,
        )
    sys.argv[0] = "flower-superlink"
    flower_superlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
