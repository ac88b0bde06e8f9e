"""A partner node with bad data stops before connecting: typed error, exit code, no traffic.

Each case starts ``fedcollab node start`` in its own process against its own sentinel
TCP listener standing in for the coordinator; the listener counts connection attempts,
and must count none. The processes are independent, so the module starts them all at
once (most of each one's time is interpreter and library start-up) and each test checks
its own case's outcome.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fedcollab.coordinator.workspace import Workspace
from tests.support.integration import BIN, SCHEMA

pytestmark = pytest.mark.integration

HEADER = "customer_id,visits,basket_value,channel,member,purchased"
GOOD = [HEADER, "c1,3,10.5,web,1,0", "c2,5,,app,0,1", "c3,1,7.25,store,1,0"]

# (case id, file lines, expected exit code, text the error must contain)
CASES = [
    ("wrong-delimiter", [line.replace(",", ";") for line in GOOD], 10, "delimiter"),
    ("missing-column", [",".join(x.split(",")[:-2] + x.split(",")[-1:]) for x in GOOD], 10,
     "'member'"),
    ("extra-column", [GOOD[0] + ",coupon", *(x + ",1" for x in GOOD[1:])], 10, "unexpected column"),
    ("non-numeric", [*GOOD[:2], "c2,five,3.0,app,0,1"], 10, "row 3, column 'visits'"),
    ("nan-not-allowed", [*GOOD[:2], "c2,nan,3.0,app,0,1"], 10, "row 3, column 'visits'"),
    ("inf-not-allowed", [*GOOD[:2], "c2,inf,3.0,app,0,1"], 10, "row 3, column 'visits'"),
    ("duplicate-id", [*GOOD, "c1,2,3.0,web,0,1"], 10, "c1"),
    ("empty-file", [], 10, "shop.csv"),
    ("header-only", [HEADER], 10, "no data rows"),
    ("label-not-binary", [*GOOD[:2], "c2,2,3.0,app,0,2"], 10, "column 'purchased'"),
]  # fmt: skip

SCHEMA_MISMATCH = "schema-mismatch"
#: For all of them together: generous, as they start at once on a possibly loaded
#: 2-core machine (and within pytest-timeout's 600 s for the first test's set-up).
_TIMEOUT_S = 540.0


class Sentinel:
    """A TCP listener that records every connection made to it."""

    def __init__(self) -> None:
        self._server = socket.socket()
        self._server.bind(("127.0.0.1", 0))
        self._server.listen()
        self._server.settimeout(0.2)
        self.port: int = self._server.getsockname()[1]
        self.seen: list[object] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, addr = self._server.accept()
            except TimeoutError:
                continue
            self.seen.append(addr)
            conn.close()

    def close(self) -> list[object]:
        """Stop listening; also counts connections still waiting in the backlog."""
        if self._stop.is_set():
            return self.seen
        self._stop.set()
        self._thread.join(timeout=2)
        self._server.setblocking(False)
        while True:
            try:
                conn, addr = self._server.accept()
            except BlockingIOError:
                break
            self.seen.append(addr)
            conn.close()
        self._server.close()
        return self.seen


@dataclass(frozen=True)
class Outcome:
    returncode: int
    stdout: str
    stderr: str
    seen: list[object]


def _command(data: Path, schema: Path, ca: Path, key: Path, port: int, *, case: str) -> list[str]:
    cmd = [str(BIN / "fedcollab"), "node", "start", "--partner", "acme", "--data", str(data),
           "--schema", str(schema), "--ca", str(ca), "--key", str(key),
           "--superlink", f"127.0.0.1:{port}"]  # fmt: skip
    return cmd if case == SCHEMA_MISMATCH else [*cmd, "--port", "0"]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Outcome]]:
    """Run every case's node process concurrently; case id -> how it ended."""
    ws = Workspace.create(tmp_path_factory.mktemp("ws") / "ws", name="t", partners=("acme",))
    ca, key = ws.ca_cert, ws.node_dir("acme") / "node.key"
    inputs: dict[str, tuple[str, dict[str, object]]] = {
        case: ("\n".join(lines) + ("\n" if lines else ""), SCHEMA)
        for case, lines, _code, _needle in CASES
    }
    inputs[SCHEMA_MISMATCH] = ("\n".join(GOOD) + "\n", {**SCHEMA, "features": "not-a-list"})
    running: dict[str, tuple[subprocess.Popen[str], Sentinel]] = {}
    try:
        for case, (text, schema_doc) in inputs.items():
            folder = tmp_path_factory.mktemp(case)
            data = folder / "shop.csv"
            data.write_text(text)
            schema = folder / "shop.schema.json"
            schema.write_text(json.dumps(schema_doc))
            sentinel = Sentinel()
            proc = subprocess.Popen(
                _command(data, schema, ca, key, sentinel.port, case=case),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            running[case] = (proc, sentinel)
        deadline = time.monotonic() + _TIMEOUT_S
        ended = {
            case: proc.communicate(timeout=max(deadline - time.monotonic(), 1.0))
            for case, (proc, _s) in running.items()
        }
        # Every process has exited: whatever reached a sentinel is in its list now.
        yield {
            case: Outcome(proc.returncode, *ended[case], sentinel.close())
            for case, (proc, sentinel) in running.items()
        }
    finally:
        for proc, sentinel in running.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
            sentinel.close()


@pytest.mark.parametrize(("case", "code", "needle"), [(c[0], c[2], c[3]) for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_bad_data_stops_the_node_before_any_connection(
    case: str, code: int, needle: str, outcomes: dict[str, Outcome]
) -> None:
    out = outcomes[case]
    assert out.returncode == code, out.stdout + out.stderr
    assert "DataValidationError" in out.stderr
    assert needle in out.stderr
    assert "What to do:" in out.stderr
    assert out.seen == [], f"{case}: the node connected to the coordinator"


def test_schema_mismatch_is_a_schema_error(outcomes: dict[str, Outcome]) -> None:
    out = outcomes[SCHEMA_MISMATCH]
    assert out.returncode == 11, out.stdout + out.stderr
    assert "SchemaError" in out.stderr
    assert out.seen == []
