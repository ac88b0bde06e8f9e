"""Benchmark of the audit log: durable appends, proofs, export and offline verification.

    .venv/bin/python -m experiments.bench_audit --events 1000000 --out results/bench_audit.json

Not a test: prints a table and writes JSON.  All appends are durable (WAL,
synchronous=FULL, each call returns after COMMIT).  Event signing is timed
separately because in production each partner signs its own events.  The load
average is recorded at start, before verification and at the end, with the CPU
time verification used (``verify_cpu_s``): on a shared machine wall times
depend on the load, CPU time much less.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import random
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from rich.console import Console
from rich.table import Table

from fedcollab.common.keys import Signer
from fedcollab.compliance import merkle
from fedcollab.compliance.bundle import export_bundle, verify_bundle
from fedcollab.compliance.events import make_event
from fedcollab.compliance.log import AuditLog
from fedcollab.compliance.trust import TrustPolicy

ORIGIN = "bench.fedcollab/audit"
ACTORS = [f"partner-{i}" for i in range(1, 5)]


_TIME = datetime(2026, 1, 1, tzinfo=UTC)


def _seed(name: str) -> bytes:
    return name.encode().ljust(32, b"\0")[:32]


def _make_events(args: tuple[int, int]) -> list[dict[str, Any]]:
    start, count = args
    signers = {a: Signer.from_private_bytes(_seed(a)) for a in ACTORS}
    out = []
    for i in range(start, start + count):
        actor = ACTORS[i % len(ACTORS)]
        body = {"job": f"job-{i // 1000}", "round": i % 1000, "dataset": f"ds-{i % 7}"}
        # One time for all: appends from many threads keep times non-decreasing
        # (the log refuses an event older than its newest).
        out.append(make_event(signers[actor], actor, "training.round", body, time=_TIME))
    return out


def _events(n: int, start: int, workers: int) -> list[dict[str, Any]]:
    chunk = 10_000
    jobs = [(s, min(chunk, start + n - s)) for s in range(start, start + n, chunk)]
    if workers <= 1 or n < 2 * chunk:
        return [e for j in jobs for e in _make_events(j)]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        return [e for part in pool.imap(_make_events, jobs) for e in part]


def _ed25519_verify_cpu_us(samples: int = 20_000) -> float:
    """CPU microseconds of one bare Ed25519 verification of an event-sized message."""
    signer = Signer.from_private_bytes(_seed(ACTORS[0]))
    event = _make_events((0, 1))[0]
    message = json.dumps(event, sort_keys=True, separators=(",", ":")).encode()
    signature = Ed25519PrivateKey.from_private_bytes(_seed(ACTORS[0])).sign(message)
    key = Ed25519PublicKey.from_public_bytes(signer.public_key)
    cpu = time.process_time()
    for _ in range(samples):
        key.verify(signature, message)
    return (time.process_time() - cpu) / samples * 1e6


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=1000, help="append_many batch size")
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--out", type=Path, default=Path("results/bench_audit.json"))
    ap.add_argument("--dir", type=Path, default=None, help="working folder (default: temp)")
    args = ap.parse_args(argv)
    given = list(sys.argv[1:] if argv is None else argv)
    n = args.events
    work = Path(args.dir or tempfile.mkdtemp(prefix="bench_audit_"))
    work.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {
        "command": ["python", "-m", "experiments.bench_audit", *given],
        "events": n,
        "batch": args.batch,
        "workers": args.workers,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg_1min_at_start": os.getloadavg()[0],
    }
    console = Console()
    log_key = Signer.generate()
    pubs = {a: Signer.from_private_bytes(_seed(a)).public_key for a in ACTORS}

    t = time.perf_counter()
    events = _events(n, 0, args.workers)
    res["sign_events_s"] = time.perf_counter() - t
    console.print(f"signed {n} events in {res['sign_events_s']:.1f} s")

    with AuditLog.open(work / "audit.db", origin=ORIGIN, signer=log_key) as log:
        single = min(2000, n)
        t = time.perf_counter()
        for e in events[:single]:
            log.append(e)
        res["append_single_per_s"] = _rate(single, time.perf_counter() - t)

        threads, per = 16, min(500, max(1, (n - single) // 32))
        pos = single

        def work_thread(k: int) -> None:
            for e in events[pos + k * per : pos + (k + 1) * per]:
                log.append(e)

        ts = [threading.Thread(target=work_thread, args=(k,)) for k in range(threads)]
        t = time.perf_counter()
        for th in ts:
            th.start()
        for th in ts:
            th.join()
        res["append_concurrent_16_threads_per_s"] = _rate(threads * per, time.perf_counter() - t)
        pos += threads * per

        checkpoints_at = {pos + (n - pos) * k // 4 for k in range(1, 5)}
        t = time.perf_counter()
        bulk = 0
        while pos < n:
            end = min(n, pos + args.batch)
            if any(pos < c <= end for c in checkpoints_at):
                end = min(c for c in checkpoints_at if pos < c <= end)
            log.append_many(events[pos:end])
            bulk += end - pos
            pos = end
            if pos in checkpoints_at:
                log.checkpoint()
        res[f"append_many_batch_{args.batch}_per_s"] = _rate(bulk, time.perf_counter() - t)
        log.checkpoint()
        events.clear()  # free memory before the proof and export phases

        size, root = log.size, log.root()
        rng = random.Random(0)
        idxs = [rng.randrange(size) for _ in range(1000)]
        leaves = {i: merkle.leaf_hash(next(iter(log.entries(i, i + 1)))) for i in idxs}
        t = time.perf_counter()
        proofs = [log.inclusion_proof(i, size) for i in idxs]
        res["inclusion_proof_gen_us"] = (time.perf_counter() - t) / len(idxs) * 1e6
        t = time.perf_counter()
        for i, p in zip(idxs, proofs, strict=True):
            merkle.verify_inclusion(i, size, leaves[i], p, root)
        res["inclusion_proof_verify_us"] = (time.perf_counter() - t) / len(idxs) * 1e6
        ms = [rng.randrange(1, size + 1) for _ in range(1000)]
        t = time.perf_counter()
        cproofs = [log.consistency_proof(m, size) for m in ms]
        res["consistency_proof_gen_us"] = (time.perf_counter() - t) / len(ms) * 1e6
        old_roots = {m: log.root_at(m) for m in ms}
        t = time.perf_counter()
        for m, p in zip(ms, cproofs, strict=True):
            merkle.verify_consistency(m, size, old_roots[m], root, p)
        res["consistency_proof_verify_us"] = (time.perf_counter() - t) / len(ms) * 1e6
        res["proof_tree_size"] = size

        t = time.perf_counter()
        export_bundle(log, work / "bundle", public_keys=pubs)
        res["export_s"] = time.perf_counter() - t
    res["loadavg_1min_before_verify"] = os.getloadavg()[0]
    cpu0, t = os.times(), time.perf_counter()
    policy = TrustPolicy.from_keys({ORIGIN: log_key.public_key, **pubs})
    report = verify_bundle(work / "bundle", policy, workers=args.workers)
    res["verify_s"] = time.perf_counter() - t
    cpu1 = os.times()
    res["export_plus_verify_s"] = res["export_s"] + res["verify_s"]
    # CPU seconds of the verifier and its worker processes: the wall time it would
    # take on an idle machine is about this divided by the number of workers.
    res["verify_cpu_s"] = sum(
        getattr(cpu1, f) - getattr(cpu0, f)
        for f in ("user", "system", "children_user", "children_system")
    )
    res["verify_cpu_per_event_us"] = res["verify_cpu_s"] / max(n, 1) * 1e6
    res["loadavg_1min_at_end"] = os.getloadavg()[0]
    # The floor no verifier built on `cryptography` can beat: one Ed25519
    # verification per event, measured now, in this process, on this machine's load.
    res["ed25519_verify_cpu_us"] = _ed25519_verify_cpu_us()
    res["verify_cpu_over_ed25519"] = res["verify_cpu_per_event_us"] / res["ed25519_verify_cpu_us"]
    res["bundle_mb"] = sum(p.stat().st_size for p in (work / "bundle").rglob("*")) / 1e6
    assert report.size == n

    table = Table(title=f"audit log benchmark, {n:,} events, {args.workers} workers")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for k, v in res.items():
        table.add_row(k, f"{v:,.1f}" if isinstance(v, float) else str(v))
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    console.print(f"wrote {args.out} (work folder {work})")


if __name__ == "__main__":
    main()
