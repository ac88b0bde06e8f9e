"""Benchmark of the ring ECDH-PSI on X25519 (:mod:`protocols.psi`), end to end.

    .venv/bin/python -m experiments.bench_psi --out results/experiments
    .venv/bin/python -m experiments.bench_psi --n 1000000 --overlap 0.5 --sizes 10000,100000

Not a test: prints a table and a met/not-met line for the target, and writes
``<out>/bench_psi.json`` and ``<out>/psi_scaling.png`` (wall time vs set size).

What is measured: every party runs here, in this process, one after the
other, each blinding over a process pool of ``--workers`` processes (default:
the CPUs available), with the same public calls as
:func:`protocols.psi.run_psi_local`, timed per phase:

- *own*: hashing, shuffling and the first blinding of each party's ids
  (:meth:`protocols.psi.PsiParty.blind_own`);
- *hops*: the other parties' blindings round the ring
  (:meth:`protocols.psi.PsiParty.blind`);
- *intersect*: the label holder's intersection (:func:`protocols.psi.intersect`);
- *map back*: every party's rows (:func:`protocols.psi.aligned_rows`);
- *seal*: every set handed to the next hop (and the fully blinded sets to the
  label holder) sealed and signed by the sender, opened and checked by the
  recipient (:mod:`privacy.envelope`, HPKE + Ed25519), as the hardened protocol
  does; ids are hashed with a per-run salt (:attr:`protocols.psi.PsiConfig.salt`).

Wall = the sum of the phases (n parties x n scalar multiplications per id).
``rows/s per core = (ids of all parties) / (wall x cores used)``, the unit in
which FATE and SecretFlow report their PSI throughput. The machine is shared,
so the CPU time of this process and its blinding workers is recorded too:
``CPU s / cores`` is what the run would take with the cores to itself, and
``CPU use = CPU s / (wall x cores)`` shows how much of them it got. Every run checks that
each party's rows are exactly the true intersection, in the same order.

The *floor* is what the scalar multiplications alone cost on the cores used:
``(n parties x total ids) x (µs per multiplication, measured here) / cores``;
``openssl speed ecdhx25519`` is recorded beside it when ``openssl`` is on the
PATH. Not measured: the network and Flower's messages; in a deployment each party has its own
machine, so hops of different sets could run in parallel.

Notes
-----
Anchors, rows/s per core: FATE 2.0 ECDH-PSI ~2,000; SecretFlow ECDH-PSI on
Curve25519 ~4,700 (their published benchmarks). Target: 1M x 1M ids, two
parties, in at most 60 s on this 2-core machine. Ids are synthetic
(``cust-<9 digits>``) with a fraction ``--overlap`` shared, each party's list
in its own random order (``--seed``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from fedcollab.protocols.psi import (
    POOL_THRESHOLD,
    SALT_BYTES,
    PsiConfig,
    PsiParty,
    aligned_rows,
    intersect,
    ring_route,
)

DEFAULT_N = 1_000_000
DEFAULT_SIZES = (10_000, 100_000, 1_000_000)
DEFAULT_THREE_PARTY_N = 100_000
TARGET_SECONDS, TARGET_N = 60.0, 1_000_000
ANCHORS_ROWS_PER_S_PER_CORE = {
    "FATE 2.0 ECDH-PSI": 2_000,
    "SecretFlow ECDH-PSI (Curve25519)": 4_700,
}
CALIBRATION_VALUES = 20_000
OPENSSL_SECONDS = 2


def make_sets(n: int, overlap: float, parties: int, seed: int) -> dict[str, list[str]]:
    """``parties`` lists of ``n`` distinct ids; ``overlap * n`` ids are in every list."""
    shared = round(overlap * n)
    own = n - shared
    rng = np.random.default_rng(seed)
    universe = rng.permutation(shared + parties * own)
    ids = [f"cust-{v:09d}" for v in universe.tolist()]
    sets = {}
    for p in range(parties):
        mine = ids[:shared] + ids[shared + p * own : shared + (p + 1) * own]
        sets[f"p{p}"] = [mine[i] for i in rng.permutation(n).tolist()]
    return sets


class _Sealing:
    """Each party's signing key and per-run transport key, pinned at every other party:
    every set passed from one party to the next is sealed and signed by the sender and
    opened and checked by the recipient (:mod:`privacy.envelope`), as a deployment does."""

    def __init__(self, names: Sequence[str]) -> None:
        from fedcollab.common.keys import Signer
        from fedcollab.privacy.key_transport import PeerKeys, TransportKey

        self.signers = {n: Signer.generate() for n in names}
        self.keys = {n: TransportKey.generate() for n in names}
        self.peers = PeerKeys({n: s.public_key for n, s in self.signers.items()})

    def hand_over(self, blob: bytes, *, sender: str, recipient: str, topic: str) -> bytes:
        from fedcollab.privacy.envelope import open_envelope, seal

        sealed = seal(
            blob, run="bench", sender=sender, recipient=recipient, topic=topic,
            recipient_key=self.keys[recipient].public_bytes(), signer=self.signers[sender],
        ).to_bytes()  # fmt: skip
        return open_envelope(
            sealed, run="bench", me=recipient, sender=sender, topic=topic,
            key=self.keys[recipient], peers=self.peers,
        )  # fmt: skip


def run_timed(
    sets: Mapping[str, Sequence[str]], *, workers: int | None, seed: int
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """:func:`protocols.psi.run_psi_local`, step by step, with each phase timed; salted
    ids, and every hand-over sealed and signed (``seal``)."""
    names = tuple(sets)
    salt = os.urandom(SALT_BYTES)
    config = PsiConfig(run="bench", parties=names, label_holder=names[0], salt=salt)
    parties = {name: PsiParty(name, config, workers=workers) for name in config.parties}
    sealing = _Sealing(names)
    seconds = dict.fromkeys(("own", "hops", "seal", "intersect", "map_back"), 0.0)
    permutations: dict[str, np.ndarray] = {}
    full: dict[str, bytes] = {}
    for i, owner in enumerate(config.parties):
        t = time.perf_counter()
        blob, permutations[owner] = parties[owner].blind_own(sets[owner], seed=seed + i)
        seconds["own"] += time.perf_counter() - t
        route = ring_route(config, owner)
        for h in range(1, len(route) + 1):
            recipient = route[h] if h < len(route) else config.label_holder
            if recipient != route[h - 1]:  # the label holder keeps its own last hop
                t = time.perf_counter()
                blob = sealing.hand_over(blob, sender=route[h - 1], recipient=recipient,
                                         topic=f"psi/{owner}/hop-{h}")  # fmt: skip
                seconds["seal"] += time.perf_counter() - t
            if h < len(route):
                t = time.perf_counter()
                blob = parties[route[h]].blind(blob)
                seconds["hops"] += time.perf_counter() - t
        full[owner] = blob
    t = time.perf_counter()
    positions = intersect(full)
    seconds["intersect"] = time.perf_counter() - t
    t = time.perf_counter()
    rows = {name: aligned_rows(positions[name], permutations[name]) for name in config.parties}
    seconds["map_back"] = time.perf_counter() - t
    seconds["wall"] = sum(seconds.values())
    return rows, seconds


def check(sets: Mapping[str, Sequence[str]], rows: Mapping[str, np.ndarray]) -> bool:
    """Every party's rows are the true intersection, in one and the same order."""
    aligned = [[ids[i] for i in rows[name].tolist()] for name, ids in sets.items()]
    truth = set.intersection(*(set(ids) for ids in sets.values()))
    return len(aligned[0]) == len(truth) == len(set(aligned[0]) & truth) and all(
        a == aligned[0] for a in aligned
    )


def cores_used(n: int, workers: int | None) -> int:
    """Blinding processes for batches of ``n`` values (one below the pool threshold)."""
    if n < POOL_THRESHOLD:
        return 1
    return PsiParty("p0", PsiConfig("x", ("p0", "p1"), "p0"), workers=workers).workers


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the spawned blinding workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(n: int, overlap: float, parties: int, workers: int | None, seed: int) -> dict[str, Any]:
    """One end-to-end run of ``parties`` sets of ``n`` ids, timed and checked."""
    sets = make_sets(n, overlap, parties, seed)
    cpu = _cpu_seconds()
    load = os.getloadavg()[0]
    rows, seconds = run_timed(sets, workers=workers, seed=seed)
    cpu = _cpu_seconds() - cpu
    cores = cores_used(n, workers)
    total_ids = n * parties
    return {
        "n_per_party": n,
        "parties": parties,
        "overlap": overlap,
        "intersection": int(rows["p0"].size),
        "correct": check(sets, rows),
        "cores_used": cores,
        "scalar_mults": parties * total_ids,
        "seconds": seconds,
        "rows_per_s_per_core": total_ids / (seconds["wall"] * cores),
        # On a shared machine other processes take turns on our cores: CPU time / cores is
        # what the run would take with the cores to itself (perfect parallelism assumed).
        "cpu_seconds": cpu,
        "cpu_utilisation": cpu / (seconds["wall"] * cores),
        "cpu_seconds_per_core": cpu / cores,
        "loadavg_1min_before": load,
        "peak_rss_mb_after": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def calibrate(
    values: int = CALIBRATION_VALUES, openssl_seconds: int = OPENSSL_SECONDS
) -> dict[str, Any]:
    """µs per X25519 multiplication on one core, through the module (Python overhead included).

    CPU time, not wall time: other processes on a shared machine do not inflate it.
    """
    config = PsiConfig("calibration", ("p0", "p1"), "p0")
    blob, _ = PsiParty("p0", config, workers=1).blind_own([str(i) for i in range(values)], seed=0)
    party = PsiParty("p1", config, workers=1)
    t, cpu = time.perf_counter(), time.process_time()
    party.blind(blob)
    cpu, t = time.process_time() - cpu, time.perf_counter() - t
    return {
        "values": values,
        "module_us_per_mult_one_core": cpu / values * 1e6,
        "module_us_per_mult_one_core_wall": t / values * 1e6,
        "openssl_speed_us": _openssl_speed(openssl_seconds),
    }


def _openssl_speed(seconds: int) -> float | None:
    """µs per X25519 from ``openssl speed ecdhx25519`` (None if unavailable or ``seconds`` 0)."""
    if seconds <= 0 or shutil.which("openssl") is None:
        return None
    try:
        out = subprocess.run(
            ["openssl", "speed", "-seconds", str(seconds), "ecdhx25519"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"X25519\)\s+([\d.]+)s\s+([\d.]+)", out)
    return None if match is None else 1e6 / float(match.group(2))


def floor_seconds(scalar_mults: int, us_per_mult: float, cores: int) -> float:
    return scalar_mults * us_per_mult * 1e-6 / cores


def summarise(main: Mapping[str, Any], calibration: Mapping[str, Any]) -> dict[str, Any]:
    """Target, floor and anchors for the main (two-party) run."""
    cores = main["cores_used"]
    floor = floor_seconds(main["scalar_mults"], calibration["module_us_per_mult_one_core"], cores)
    openssl = calibration["openssl_speed_us"]
    wall = main["seconds"]["wall"]
    rate = main["rows_per_s_per_core"]
    return {
        "target": {
            "goal": f"{TARGET_N:,} x {TARGET_N:,} ids, 2 parties, <= {TARGET_SECONDS:g} s",
            "applies": main["n_per_party"] == TARGET_N and main["parties"] == 2,
            "wall_seconds": wall,
            "met": wall <= TARGET_SECONDS,
        },
        "floor_seconds": floor,
        "floor_seconds_openssl_speed": (
            None if openssl is None else floor_seconds(main["scalar_mults"], openssl, cores)
        ),
        "wall_over_floor": wall / floor,
        "anchors_rows_per_s_per_core": dict(ANCHORS_ROWS_PER_S_PER_CORE),
        "speedup_vs_anchors": {k: rate / v for k, v in ANCHORS_ROWS_PER_S_PER_CORE.items()},
    }


def render(results: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(title="ECDH-PSI on X25519, all parties on this machine", expand=True)
    for col in ("parties", "ids/party", "overlap", "found", "ok", "own", "hops", "seal",
                "intersect", "map back", "wall", "rows/s/core", "CPU s / cores",
                "CPU use"):  # fmt: skip
        table.add_column(col, justify="right")
    for r in results:
        s = r["seconds"]
        table.add_row(
            str(r["parties"]),
            f"{r['n_per_party']:,}",
            f"{r['overlap']:g}",
            f"{r['intersection']:,}",
            "yes" if r["correct"] else "NO",
            *(f"{s[k]:.2f} s" for k in ("own", "hops", "seal", "intersect", "map_back", "wall")),
            f"{r['rows_per_s_per_core']:,.0f}",
            f"{r['cpu_seconds_per_core']:.2f} s",
            f"{r['cpu_utilisation']:.0%}",
        )
    return table


def plot(results: Sequence[Mapping[str, Any]], us_per_mult: float, path: Path) -> Path:
    """Wall time vs ids per party (two parties), with the scalar-multiplication floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    two = sorted((r for r in results if r["parties"] == 2), key=lambda r: r["n_per_party"])
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    if two:
        sizes = [r["n_per_party"] for r in two]
        ax.plot(sizes, [r["seconds"]["wall"] for r in two], "o-", label="2 parties, end to end")
        floors = [floor_seconds(r["scalar_mults"], us_per_mult, r["cores_used"]) for r in two]
        ax.plot(sizes, floors, "k:", label=f"floor: 4 mults/id pair x {us_per_mult:.1f} µs / cores")
    for r in results:
        if r["parties"] != 2:
            ax.plot(r["n_per_party"], r["seconds"]["wall"], "s", color="C3",
                    label=f"{r['parties']} parties")  # fmt: skip
    ax.axhline(TARGET_SECONDS, color="C2", ls="--", lw=1, label="target for 1M x 1M (60 s)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("ids per party")
    ax.set_ylabel("wall seconds")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _sizes(text: str) -> list[int]:
    sizes = [int(s) for s in text.split(",") if s.strip()]
    if min(sizes, default=0) < 1:
        raise argparse.ArgumentTypeError("sizes must be positive integers, comma separated")
    return sizes


def _cpu_model() -> str | None:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return None if match is None else match.group(1).strip()


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("results/experiments"), help="output folder")
    ap.add_argument("--n", type=int, default=DEFAULT_N, help="ids per party, main 2-party run")
    ap.add_argument("--overlap", type=float, default=0.5, help="fraction of ids in every set")
    ap.add_argument(
        "--sizes", type=_sizes, default=list(DEFAULT_SIZES), help="2-party scaling series"
    )
    ap.add_argument("--three-party-n", type=int, default=DEFAULT_THREE_PARTY_N)
    ap.add_argument("--workers", type=int, default=None, help="blinding processes per step")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--calibration-values", type=int, default=CALIBRATION_VALUES)
    ap.add_argument("--openssl-seconds", type=int, default=OPENSSL_SECONDS, help="0: skip")
    args = ap.parse_args(argv)
    if not 0.0 <= args.overlap <= 1.0:
        ap.error("--overlap must be in [0, 1]")
    given = list(sys.argv[1:] if argv is None else argv)
    console = Console() if sys.stdout.isatty() else Console(width=160)
    res: dict[str, Any] = {
        "benchmark": "bench_psi",
        "command": ["python", "-m", "experiments.bench_psi", *given],
        "machine": {
            "cpus": os.cpu_count(),
            "cpus_available": len(os.sched_getaffinity(0)),
            "cpu_model": _cpu_model(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cryptography": version("cryptography"),
            "numpy": np.__version__,
            "loadavg_at_start": list(os.getloadavg()),
        },
        "workers": args.workers,
        "seed": args.seed,
    }
    res["calibration"] = calibrate(args.calibration_values, args.openssl_seconds)
    us = res["calibration"]["module_us_per_mult_one_core"]
    wall_us = res["calibration"]["module_us_per_mult_one_core_wall"]
    console.print(
        f"X25519 on one core through protocols.psi: {us:.1f} µs CPU ({wall_us:.1f} µs wall) "
        "per multiplication"
    )

    runs: list[tuple[int, int]] = [(args.n, 2)]
    runs += [(n, 2) for n in args.sizes if n != args.n]
    if args.three_party_n > 0:
        runs.append((args.three_party_n, 3))
    results: list[dict[str, Any]] = []
    for n, parties in runs:
        t = time.perf_counter()
        results.append(measure(n, args.overlap, parties, args.workers, args.seed))
        console.print(f"{parties} parties x {n:,} ids measured in {time.perf_counter() - t:.1f} s")
    res["machine"]["loadavg_at_end"] = list(os.getloadavg())
    res["results"] = results
    res["main"] = results[0]
    res["summary"] = summarise(results[0], res["calibration"])

    console.print(render(results))
    s, m = res["summary"], results[0]
    target = s["target"]
    mark = "[green]MET[/]" if target["met"] else "[red]NOT MET[/]"
    scope = "" if target["applies"] else f" (main run has {m['n_per_party']:,} ids: not the goal)"
    console.print(f"{mark} target {target['goal']}: {target['wall_seconds']:.1f} s{scope}")
    line = f"floor ({m['scalar_mults']:,} mults x {us:.1f} µs / {m['cores_used']} cores)"
    console.print(f"{line}: {s['floor_seconds']:.1f} s; wall / floor {s['wall_over_floor']:.2f}")
    if s["floor_seconds_openssl_speed"] is not None:
        openssl = res["calibration"]["openssl_speed_us"]
        floor = s["floor_seconds_openssl_speed"]
        console.print(f"floor with `openssl speed` ({openssl:.1f} µs): {floor:.1f} s")
    for name, anchor in ANCHORS_ROWS_PER_S_PER_CORE.items():
        ratio = s["speedup_vs_anchors"][name]
        console.print(f"vs {name} (~{anchor:,} rows/s per core): {ratio:.2f}x")
    console.print(f"load average at start {res['machine']['loadavg_at_start']}, "
                  f"at end {res['machine']['loadavg_at_end']}")  # fmt: skip
    if not all(r["correct"] for r in results):
        console.print("[red]WRONG RESULT[/]: some run's rows are not the true intersection")

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "bench_psi.json"
    path.write_text(json.dumps(res, indent=2) + "\n")
    png = plot(results, us, args.out / "psi_scaling.png")
    console.print(f"wrote {path} and {png}")


if __name__ == "__main__":
    main()
