"""Benchmark of the two-party CM20 PSI (:mod:`protocols.psi_oprf`), beside the ring ECDH-PSI.

    .venv/bin/python -m experiments.bench_psi_oprf --out results/experiments
    .venv/bin/python -m experiments.bench_psi_oprf --n 1000000 --compare-n 100000

Not a test: prints a table and a met/not-met line for issue 15's target (1M x 1M
ids, two parties, at most 60 s on this 2-core machine) and writes
``<out>/bench_psi_oprf.json``.

What is measured, all in this process, both parties on this machine, one after
the other (the OPRF PSI runs on one core; the ECDH PSI blinds over a process pool
of all available cores, as :mod:`experiments.bench_psi` runs it):

- *hash ids*: both parties' H1 of their ids, with a per-run salt
  (:class:`protocols.psi_oprf.OprfPsiSender` / ``OprfPsiReceiver``);
- *base OT*: steps 1-2 (the receiver's parameters and ``A``, the sender's PRF key
  and ``w`` OT points); the OT's last step, ``w`` multiplications at the
  receiver (~0.06 s), runs inside the next phase;
- *matrix*: step 3 at the receiver: ``F_k`` of its ids, the matrix ``D``, the
  ``w`` columns ``Delta`` and its own OPRF values;
- *sender OPRF*: step 4: ``F_k`` of the sender's ids, ``C``, H2, the shuffle;
- *receiver check*: step 5: the intersection of the OPRF values;
- *map back*: the sender's rows from the receiver's positions (optional step);
- *seal*: each of the messages sealed and signed by its sender and opened and
  checked by its recipient (:mod:`privacy.envelope`), as a deployment's relay
  hops would be (``bench_psi``'s ``_Sealing``).

Wall = the sum of the phases. Every run checks that the receiver's rows are
exactly the true intersection and that the sender's rows are aligned with them.
The same invocation measures the ECDH PSI (:func:`experiments.bench_psi.measure`)
and the OPRF PSI at ``--compare-n`` ids per party, so the ratio comes from one
run on one machine state; the load average (1 min) is recorded before each run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import secrets
import sys
import time
from collections.abc import Mapping, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from experiments.bench_psi import _cpu_model, _Sealing, make_sets
from experiments.bench_psi import measure as measure_ecdh
from fedcollab.protocols.psi_oprf import (
    SALT_BYTES,
    OprfPsiConfig,
    OprfPsiReceiver,
    OprfPsiSender,
)

DEFAULT_N = 1_000_000
DEFAULT_COMPARE_N = 100_000
TARGET_SECONDS, TARGET_N = 60.0, 1_000_000
PHASES = ("hash_ids", "base_ot", "matrix", "sender_oprf", "receiver_check", "map_back", "seal")


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def run_timed(
    sender_ids: Sequence[str], receiver_ids: Sequence[str], *, seed: int
) -> tuple[dict[str, np.ndarray], dict[str, float], dict[str, int]]:
    """The CM20 protocol step by step, each phase timed; every message sealed."""
    config = OprfPsiConfig(
        "bench", len(sender_ids), len(receiver_ids), salt=secrets.token_bytes(SALT_BYTES)
    )
    sealing = _Sealing(("sender", "receiver"))
    seconds = dict.fromkeys(PHASES, 0.0)
    sizes: dict[str, int] = {}

    def hand_over(blob: bytes, name: str, sender: str, recipient: str) -> bytes:
        sizes[name] = len(blob)
        t = time.perf_counter()
        out = sealing.hand_over(blob, sender=sender, recipient=recipient, topic=f"psi/{name}")
        seconds["seal"] += time.perf_counter() - t
        return out

    t = time.perf_counter()
    sender = OprfPsiSender(config, sender_ids, seed=seed)
    receiver = OprfPsiReceiver(config, receiver_ids)
    seconds["hash_ids"] = time.perf_counter() - t

    t = time.perf_counter()
    first = receiver.start()
    seconds["base_ot"] += time.perf_counter() - t
    first = hand_over(first, "setup", "receiver", "sender")
    t = time.perf_counter()
    reply = sender.answer(first)
    seconds["base_ot"] += time.perf_counter() - t
    reply = hand_over(reply, "reply", "sender", "receiver")

    t = time.perf_counter()
    matrix = receiver.answer(reply)
    seconds["matrix"] = time.perf_counter() - t
    matrix = hand_over(matrix, "matrix", "receiver", "sender")

    t = time.perf_counter()
    values = sender.evaluate(matrix)
    seconds["sender_oprf"] = time.perf_counter() - t
    values = hand_over(values, "values", "sender", "receiver")

    t = time.perf_counter()
    result = receiver.finish(values)
    seconds["receiver_check"] = time.perf_counter() - t
    positions = result.sender_positions.astype("<i8").tobytes()
    positions_back = np.frombuffer(hand_over(positions, "positions", "receiver", "sender"), "<i8")

    t = time.perf_counter()
    sender_rows = sender.rows(positions_back)
    seconds["map_back"] = time.perf_counter() - t
    seconds["wall"] = sum(seconds[p] for p in PHASES)
    return {"sender": sender_rows, "receiver": result.rows}, seconds, sizes


def check(
    sender_ids: Sequence[str], receiver_ids: Sequence[str], rows: Mapping[str, np.ndarray]
) -> bool:
    """The receiver's rows are the true intersection; the sender's rows hold the same ids."""
    mine = [receiver_ids[i] for i in rows["receiver"].tolist()]
    theirs = [sender_ids[i] for i in rows["sender"].tolist()]
    truth = set(sender_ids) & set(receiver_ids)
    return len(mine) == len(truth) == len(set(mine) & truth) and mine == theirs


def measure_oprf(n: int, overlap: float, seed: int) -> dict[str, Any]:
    """One end-to-end CM20 run of two sets of ``n`` ids, timed and checked."""
    sets = make_sets(n, overlap, 2, seed)
    sender_ids, receiver_ids = sets["p1"], sets["p0"]  # p0, the label holder, receives
    cpu, load = _cpu_seconds(), os.getloadavg()[0]
    rows, seconds, sizes = run_timed(sender_ids, receiver_ids, seed=seed)
    cpu = _cpu_seconds() - cpu
    params = OprfPsiConfig("x", n, n).params
    return {
        "protocol": "oprf-cm20",
        "n_per_party": n,
        "overlap": overlap,
        "intersection": int(rows["receiver"].size),
        "correct": check(sender_ids, receiver_ids, rows),
        "params": {"m": params.height, "w": params.width, "l2_bytes": params.hash_bytes},
        "message_bytes": sizes,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "loadavg_1min_before": load,
        "peak_rss_mb_after": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def render(results: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(title="Two-party PSI, both parties on this machine (seconds)", expand=True)
    for col in ("protocol", "ids/party", "found", "ok", "hash ids", "base OT", "matrix",
                "sender OPRF", "receiver check", "map back", "seal", "wall", "CPU s",
                "load before"):  # fmt: skip
        table.add_column(col, justify="right")
    for r in results:
        s = r["seconds"]
        if r["protocol"] == "oprf-cm20":
            phases = [s[p] for p in PHASES]
            cells = [f"{v:.2f}" for v in phases]
        else:  # ECDH: own + hops are its "OPRF" work; intersect is the check
            blind = f"{s['own'] + s['hops']:.2f} (blind)"
            cells = [
                "-",
                "-",
                "-",
                blind,
                *(f"{s[p]:.2f}" for p in ("intersect", "map_back", "seal")),
            ]
        table.add_row(
            r["protocol"],
            f"{r['n_per_party']:,}",
            f"{r['intersection']:,}",
            "yes" if r["correct"] else "NO",
            *cells,
            f"{s['wall']:.2f}",
            f"{r['cpu_seconds']:.1f}",
            f"{r['loadavg_1min_before']:.2f}",
        )
    return table


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("results/experiments"), help="output folder")
    ap.add_argument("--n", type=int, default=DEFAULT_N, help="ids per party, main OPRF run")
    ap.add_argument("--compare-n", type=int, default=DEFAULT_COMPARE_N,
                    help="ids per party of the side-by-side runs (0: skip)")  # fmt: skip
    ap.add_argument("--overlap", type=float, default=0.5, help="fraction of ids in both sets")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if not 0.0 <= args.overlap <= 1.0:
        ap.error("--overlap must be in [0, 1]")
    given = list(sys.argv[1:] if argv is None else argv)
    console = Console() if sys.stdout.isatty() else Console(width=180)
    res: dict[str, Any] = {
        "benchmark": "bench_psi_oprf",
        "command": ["python", "-m", "experiments.bench_psi_oprf", *given],
        "machine": {
            "cpus": os.cpu_count(),
            "cpus_available": len(os.sched_getaffinity(0)),
            "cpu_model": _cpu_model(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cryptography": version("cryptography"),
            "pynacl": version("pynacl"),
            "numpy": np.__version__,
            "loadavg_at_start": list(os.getloadavg()),
        },
        "seed": args.seed,
    }
    results: list[dict[str, Any]] = []
    t = time.perf_counter()
    results.append(measure_oprf(args.n, args.overlap, args.seed))
    console.print(f"CM20 PSI, 2 x {args.n:,} ids measured in {time.perf_counter() - t:.1f} s")
    if args.compare_n > 0:
        if args.compare_n != args.n:
            results.append(measure_oprf(args.compare_n, args.overlap, args.seed))
        t = time.perf_counter()
        ecdh = measure_ecdh(args.compare_n, args.overlap, 2, None, args.seed)
        ecdh["protocol"] = "ecdh-x25519"
        results.append(ecdh)
        console.print(f"ECDH PSI, 2 x {args.compare_n:,} ids in {time.perf_counter() - t:.1f} s")
    res["machine"]["loadavg_at_end"] = list(os.getloadavg())
    res["results"] = results
    main_run = results[0]
    wall = main_run["seconds"]["wall"]
    res["target"] = {
        "goal": f"{TARGET_N:,} x {TARGET_N:,} ids, 2 parties, <= {TARGET_SECONDS:g} s",
        "applies": main_run["n_per_party"] == TARGET_N,
        "wall_seconds": wall,
        "met": wall <= TARGET_SECONDS,
    }
    same = [r for r in results if r["n_per_party"] == args.compare_n]
    if args.compare_n > 0 and len(same) == 2:
        oprf, ecdh = same
        res["side_by_side"] = {
            "n_per_party": args.compare_n,
            "ecdh_wall_over_oprf_wall": ecdh["seconds"]["wall"] / oprf["seconds"]["wall"],
            "ecdh_cpu_over_oprf_cpu": ecdh["cpu_seconds"] / oprf["cpu_seconds"],
        }

    console.print(render(results))
    target = res["target"]
    mark = "[green]MET[/]" if target["met"] else "[red]NOT MET[/]"
    scope = "" if target["applies"] else f" (main run has {args.n:,} ids: not the goal)"
    console.print(f"{mark} target {target['goal']}: {wall:.1f} s{scope}")
    if "side_by_side" in res:
        sbs = res["side_by_side"]
        console.print(
            f"at {args.compare_n:,} x {args.compare_n:,}: ECDH / CM20 wall "
            f"{sbs['ecdh_wall_over_oprf_wall']:.1f}x, CPU {sbs['ecdh_cpu_over_oprf_cpu']:.1f}x"
        )
    console.print(f"load average at start {res['machine']['loadavg_at_start']}, "
                  f"at end {res['machine']['loadavg_at_end']}")  # fmt: skip
    if not all(r["correct"] for r in results):
        console.print("[red]WRONG RESULT[/]: some run's rows are not the true intersection")

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "bench_psi_oprf.json"
    path.write_text(json.dumps(res, indent=2) + "\n")
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
