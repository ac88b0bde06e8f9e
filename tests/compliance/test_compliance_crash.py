"""Crash safety: a writer killed with SIGKILL at random times never loses an
acknowledged entry and never leaves a log that fails verification."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from fedcollab.common.keys import Signer
from fedcollab.compliance import merkle
from fedcollab.compliance.log import AuditLog

ORIGIN = "fedcollab.test/crash"
REPO = Path(__file__).resolve().parents[2]

WRITER = rf"""
import random, sys
from fedcollab.common.keys import Signer
from fedcollab.compliance.log import AuditLog

db, key, run = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = random.Random(run)
log = AuditLog.open(db, origin={ORIGIN!r}, signer=Signer.load(key))
print("ready", flush=True)
seq = 0
while True:
    k = rng.choice([1, 1, 5, 50, 300])
    events = [{{"run": run, "seq": seq + j}} for j in range(k)]
    if k == 1:
        indices = [log.append(events[0])]
    else:
        indices = log.append_many(events)
    for idx, ev in zip(indices, events):
        print(idx, ev["seq"], flush=False)
    sys.stdout.flush()
    seq += k
    if rng.random() < 0.2:
        log.checkpoint()
"""


def _run_and_kill(db: Path, key: Path, run: int, rng: random.Random) -> list[tuple[int, int]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db), str(key), str(run)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    acked: list[tuple[int, int]] = []
    assert proc.stdout.readline().strip() == b"ready"

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            parts = line.split()
            if len(parts) == 2:  # a line cut by the kill was never fully acknowledged
                acked.append((int(parts[0]), int(parts[1])))

    t = threading.Thread(target=reader)
    t.start()
    time.sleep(rng.uniform(0.02, 0.35))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    t.join()
    return acked


def test_sigkill_never_loses_acknowledged_entries(tmp_path: Path) -> None:
    db, key = tmp_path / "audit.db", tmp_path / "log.pem"
    signer = Signer.generate(key)
    rng = random.Random(1234)
    expected: dict[int, dict[str, int]] = {}
    for run in range(15):
        for idx, seq in _run_and_kill(db, key, run, rng):
            expected[idx] = {"run": run, "seq": seq}
        with AuditLog.open(db, origin=ORIGIN, signer=signer) as log:
            log.verify()  # leaves, root recomputed from entries, checkpoints and consistency
            assert log.size >= len(expected)
            data = list(log.entries())
            assert merkle.mth([merkle.leaf_hash(d) for d in data]) == log.root()
            for idx, ev in expected.items():
                assert json.loads(data[idx]) == ev, f"acknowledged entry {idx} lost"
            cps = log.checkpoints()
            last = cps[-1].checkpoint if cps else None
            if last is not None and last.size > 0:
                proof = log.consistency_proof(last.size, log.size)
                merkle.verify_consistency(last.size, log.size, last.root, log.root(), proof)
    assert len(expected) > 100
