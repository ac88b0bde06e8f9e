"""Benchmark of the audit log: durable appends, proofs, export and offline verification.

    .venv/bin/python -m experiments.bench_audit --events 1000000 --out results/bench_audit.json

Not a test: prints a table and writes JSON.  All appends are durable (WAL,
synchronous=FULL, each call returns after COMMIT).  Event signing is timed
separately (in production each party signs its events as they happen).

``--actors own`` (default) is a party's log as :class:`compliance.trail.Trail`
writes it: every event by the log's own party, signed with the log key, so
verification authenticates the events through the signed checkpoints and does
not verify each event's signature.  ``--actors partners`` puts events of four
other parties in the log (their signatures must each be verified).  The same
bundle is verified a second time with ``event_signatures="all"`` (every event
signature verified one by one, the verifier before checkpoint authentication)
with ``--compare-all``.

On a shared machine wall times depend on the load: the load average is
recorded at start, before verification and at the end, with the CPU time each
verification used, and one bare Ed25519 verification is timed in the same run
(CPU and wall): ``ed25519_floor_s`` is what verifying one signature per event
alone would take on ``workers`` cores at the measured CPU cost,
``ed25519_floor_now_s`` the same at the wall cost measured under the load of
the moment, and ``export_plus_verify_over_floor_now`` the ratio of the
measured export + verification to the latter.
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
from fedcollab.compliance.bundle import (
    EventSignatures,
    VerifiedBundle,
    export_bundle,
    verify_bundle,
)
from fedcollab.compliance.events import make_event
from fedcollab.compliance.log import AuditLog
from fedcollab.compliance.trust import TrustPolicy

ORIGIN = "bench.fedcollab/audit"
TARGET_EVENTS, TARGET_SECONDS = 1_000_000, 60.0  # issue 16
PARTNERS = [f"partner-{i}" for i in range(1, 5)]


_TIME = datetime(2026, 1, 1, tzinfo=UTC)


def _seed(name: str) -> bytes:
    return name.encode().ljust(32, b"\0")[:32]


def _actors(kind: str) -> list[str]:
    return [ORIGIN] if kind == "own" else PARTNERS


def _make_events(args: tuple[int, int, str]) -> list[dict[str, Any]]:
    start, count, kind = args
    actors = _actors(kind)
    signers = {a: Signer.from_private_bytes(_seed(a)) for a in actors}
    out = []
    for i in range(start, start + count):
        actor = actors[i % len(actors)]
        body = {"job": f"job-{i // 1000}", "round": i % 1000, "dataset": f"ds-{i % 7}"}
        # One time for all: appends from many threads keep times non-decreasing
        # (the log refuses an event older than its newest).
        out.append(make_event(signers[actor], actor, "training.round", body, time=_TIME))
    return out


def _events(n: int, start: int, workers: int, kind: str) -> list[dict[str, Any]]:
    chunk = 10_000
    jobs = [(s, min(chunk, start + n - s), kind) for s in range(start, start + n, chunk)]
    if workers <= 1 or n < 2 * chunk:
        return [e for j in jobs for e in _make_events(j)]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        return [e for part in pool.imap(_make_events, jobs) for e in part]


def _ed25519_verify_us(samples: int = 20_000) -> tuple[float, float]:
    """(CPU, wall) microseconds of one bare Ed25519 verification of an event-sized message."""
    signer = Signer.from_private_bytes(_seed(ORIGIN))
    event = _make_events((0, 1, "own"))[0]
    message = json.dumps(event, sort_keys=True, separators=(",", ":")).encode()
    signature = Ed25519PrivateKey.from_private_bytes(_seed(ORIGIN)).sign(message)
    key = Ed25519PublicKey.from_public_bytes(signer.public_key)
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(samples):
        key.verify(signature, message)
    return (
        (time.process_time() - cpu) / samples * 1e6,
        (time.perf_counter() - wall) / samples * 1e6,
    )


def _timed_verify(
    bundle: Path, policy: TrustPolicy, workers: int, mode: EventSignatures
) -> tuple[VerifiedBundle, float, float]:
    """The verified bundle, wall seconds and CPU seconds (this process and its workers)."""
    cpu0, t = os.times(), time.perf_counter()
    report = verify_bundle(bundle, policy, workers=workers, event_signatures=mode)
    wall = time.perf_counter() - t
    cpu1 = os.times()
    cpu = sum(
        getattr(cpu1, f) - getattr(cpu0, f)
        for f in ("user", "system", "children_user", "children_system")
    )
    return report, wall, cpu


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=1000, help="append_many batch size")
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--out", type=Path, default=Path("results/bench_audit.json"))
    ap.add_argument("--dir", type=Path, default=None, help="working folder (default: temp)")
    ap.add_argument(
        "--actors",
        choices=["own", "partners"],
        default="own",
        help="own: the log's own signed events (as every party's trail); partners: events "
        "signed by four other parties",
    )
    ap.add_argument(
        "--compare-all",
        action="store_true",
        help="verify the bundle a second time with every event signature verified",
    )
    args = ap.parse_args(argv)
    given = list(sys.argv[1:] if argv is None else argv)
    n = args.events
    work = Path(args.dir or tempfile.mkdtemp(prefix="bench_audit_"))
    work.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {
        "command": ["python", "-m", "experiments.bench_audit", *given],
        "events": n,
        "actors": args.actors,
        "batch": args.batch,
        "workers": args.workers,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg_1min_at_start": os.getloadavg()[0],
    }
    console = Console()
    log_key = Signer.from_private_bytes(_seed(ORIGIN))
    pubs = {a: Signer.from_private_bytes(_seed(a)).public_key for a in _actors(args.actors)}

    t = time.perf_counter()
    events = _events(n, 0, args.workers, args.actors)
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
    policy = TrustPolicy.from_keys({ORIGIN: log_key.public_key, **pubs})
    report, res["verify_s"], res["verify_cpu_s"] = _timed_verify(
        work / "bundle", policy, args.workers, "uncovered"
    )
    assert report.size == n
    res["checkpoint_authenticated_events"] = sum(
        c for a, c in report.actors if a in report.checkpoint_authenticated
    )
    res["export_plus_verify_s"] = res["export_s"] + res["verify_s"]
    # CPU seconds of the verifier and its worker processes: the wall time it would
    # take on an idle machine is about this divided by the number of workers.
    res["verify_cpu_per_event_us"] = res["verify_cpu_s"] / max(n, 1) * 1e6
    res["loadavg_1min_after_verify"] = os.getloadavg()[0]
    # One Ed25519 verification per event: the floor of any per-entry verifier on
    # `cryptography`, measured now, in this process, under this machine's load.
    res["ed25519_verify_cpu_us"], res["ed25519_verify_wall_us"] = _ed25519_verify_us()
    res["ed25519_floor_s"] = n * res["ed25519_verify_cpu_us"] / 1e6 / max(args.workers, 1)
    res["ed25519_floor_now_s"] = n * res["ed25519_verify_wall_us"] / 1e6 / max(args.workers, 1)
    res["export_plus_verify_over_floor_now"] = (
        res["export_plus_verify_s"] / res["ed25519_floor_now_s"]
    )
    res["verify_cpu_over_ed25519"] = res["verify_cpu_per_event_us"] / res["ed25519_verify_cpu_us"]
    if args.compare_all:
        res["loadavg_1min_before_verify_all"] = os.getloadavg()[0]
        again, res["verify_all_signatures_s"], res["verify_all_signatures_cpu_s"] = _timed_verify(
            work / "bundle", policy, args.workers, "all"
        )
        assert again.size == n and again.root_hex == report.root_hex
        res["verify_all_signatures_cpu_per_event_us"] = (
            res["verify_all_signatures_cpu_s"] / max(n, 1) * 1e6
        )
        res["export_plus_verify_all_signatures_s"] = (
            res["export_s"] + res["verify_all_signatures_s"]
        )
    res["loadavg_1min_at_end"] = os.getloadavg()[0]
    res["target"] = {
        "goal": f"{TARGET_EVENTS:,} events: export + verify <= {TARGET_SECONDS:g} s",
        "applies": n >= TARGET_EVENTS,
        "met": res["export_plus_verify_s"] <= TARGET_SECONDS,
    }
    res["bundle_mb"] = sum(p.stat().st_size for p in (work / "bundle").rglob("*")) / 1e6

    table = Table(title=f"audit log benchmark, {n:,} events, {args.workers} workers")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for k, v in res.items():
        if isinstance(v, float):
            table.add_row(k, f"{v:,.1f}" if abs(v) >= 10 else f"{v:.3g}")
        else:
            table.add_row(k, str(v))
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    console.print(f"wrote {args.out} (work folder {work})")


if __name__ == "__main__":
    main()
