"""A partner node with bad data stops before connecting: typed error, exit code, no traffic.

Each case starts ``fedcollab node start`` against a sentinel TCP listener
standing in for the coordinator; the listener counts connection attempts,
and must count none.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from coordinator.workspace import Workspace
from tests.integration.support import BIN, SCHEMA

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


@pytest.fixture
def sentinel() -> Iterator[tuple[int, list[object]]]:
    """A TCP listener that records every connection made to it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    seen: list[object] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, addr = server.accept()
            except TimeoutError:
                continue
            seen.append(addr)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], seen
    stop.set()
    thread.join(timeout=2)
    server.close()


@pytest.fixture(scope="module")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    ws = Workspace.create(tmp_path_factory.mktemp("ws") / "ws", name="t", partners=("acme",))
    return ws.ca_cert, ws.node_dir("acme") / "node.key"


@pytest.mark.parametrize(("case", "lines", "code", "needle"), CASES, ids=[c[0] for c in CASES])
def test_bad_data_stops_the_node_before_any_connection(
    case: str,
    lines: list[str],
    code: int,
    needle: str,
    tmp_path: Path,
    sentinel: tuple[int, list[object]],
    credentials: tuple[Path, Path],
) -> None:
    port, seen = sentinel
    ca, key = credentials
    data = tmp_path / "shop.csv"
    data.write_text("\n".join(lines) + ("\n" if lines else ""))
    schema = tmp_path / "shop.schema.json"
    schema.write_text(json.dumps(SCHEMA))
    proc = subprocess.run(
        [str(BIN / "fedcollab"), "node", "start", "--partner", "acme", "--data", str(data),
         "--schema", str(schema), "--ca", str(ca), "--key", str(key),
         "--superlink", f"127.0.0.1:{port}", "--port", "0"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "DataValidationError" in proc.stderr
    assert needle in proc.stderr
    assert "What to do:" in proc.stderr
    assert seen == [], f"{case}: the node connected to the coordinator"


def test_schema_mismatch_is_a_schema_error(
    tmp_path: Path, sentinel: tuple[int, list[object]], credentials: tuple[Path, Path]
) -> None:
    port, seen = sentinel
    ca, key = credentials
    data = tmp_path / "shop.csv"
    data.write_text("\n".join(GOOD) + "\n")
    schema = tmp_path / "shop.schema.json"
    schema.write_text(json.dumps({**SCHEMA, "features": "not-a-list"}))
    proc = subprocess.run(
        [str(BIN / "fedcollab"), "node", "start", "--partner", "acme", "--data", str(data),
         "--schema", str(schema), "--ca", str(ca), "--key", str(key),
         "--superlink", f"127.0.0.1:{port}"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 11, proc.stdout + proc.stderr
    assert "SchemaError" in proc.stderr
    assert seen == []
