"""Benchmark of one CKKS-encrypted aggregation round against the plaintext round.

    .venv/bin/python -m experiments.bench_he --out results/experiments
    .venv/bin/python -m experiments.bench_he --sizes 1000,100000,1000000 --partners 10 --repeats 3

Not a test: prints a table and pass/fail lines for the goals, and writes
``<out>/bench_he.json``.

What is measured, per model size, both modes in the same process run, on
random float64 updates shaped like FedAvg's (``n_examples * weights``,
magnitudes 1e2..1e3, fixed seed; McMahan et al. 2017, arXiv:1602.05629):

- *bytes on the wire*: one partner's reply serialised exactly as Flower
  serialises a message (:func:`common.serde.encode`, then
  ``flwr.common.serde.message_to_proto(...).SerializeToString()``), for the
  float64 plaintext vector and for the ciphertext; the float32 size (4 bytes
  per value) is the reference. As a cross-check the bytes of the content
  objects Flower >= 1.20 actually pushes (``deflate()`` of every nested
  object, arrays split in chunks) are recorded too.
- *encryption*: :meth:`privacy.ckks.SecretKeys.encrypt` (``compact``
  parameters) at each partner. Partners encrypt in parallel on their own
  machines, so a round pays one partner's time (the mean over partners).
- *transfer*: serialising a reply at a partner (one partner's time, parallel)
  plus parsing every reply at the coordinator (all partners, serial:
  ``ParseFromString``, ``message_from_proto``, :func:`common.serde.decode`);
  encrypted rounds add the aggregate message coordinator -> decrypting
  partner (serialise and parse).
- *aggregation*: the coordinator's streaming sum,
  :class:`protocols.vector_sum.VectorSum` or
  :class:`privacy.ckks.EncryptedSum` (``add`` checks each ciphertext's shape,
  and ``serialize`` of the aggregate is counted here).
- *decryption*: :meth:`privacy.ckks.SecretKeys.decrypt` at one partner
  (includes the contribution-slot check and the rounding grid).
- *accuracy*: max abs difference between the decrypted aggregate and the
  float64 sum of the same updates.
- *memory*: peak RSS of the process after each size (a high-water mark, so it
  never decreases from one size to the next).

Round time = encryption (one partner) + transfer + aggregation + decryption
for the encrypted round, transfer + aggregation for the plaintext round;
every phase is the median over ``--repeats`` rounds. Key generation is a
one-off per job (recorded, not part of the round).

What is *not* measured: network time, the Flower SuperLink/SuperNode
processes, their object store and HTTPS calls, and process start-up. The
deployment benchmark measures a real round; its figures go under the
``"deployment"`` key of the JSON, which this script leaves ``null``.

Notes
-----
Accuracy goals. The decrypting partner rounds every value to a grid of
2^-12 (``compact``; see :mod:`privacy.ckks` on decryption leakage), so the
error is about half a grid step (1.2e-4) whatever the magnitude; CKKS noise
(~1e-5 for 10 partners) must stay well below that, hence the goal ``max abs
error <= one grid step``. Relative to the aggregate's magnitude the goal is
``1e-6`` (six significant digits; FedAvg divides the sum by the example
count, which leaves the relative error unchanged). The error is also
reported in float32 ULPs at ``max|sum|``: from ``max|sum| >= 2^11`` a
float32 step is at least one grid step, so the error stays below one ULP.

Byte goals (15x, stretch 8x float32) are per reply. A fresh ``compact``
ciphertext holds 4096 values in one polynomial of 8192 64-bit coefficients and
the seed of the other (:mod:`privacy.ckks_wire`), so the floor is 4x, approached
only when the last ciphertext is full; a vector shorter than 4096 values still
costs one whole ciphertext.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Metadata, RecordDict
from flwr.app.message.message import Message, make_message
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.proto.message_pb2 import Message as ProtoMessage
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
from rich.console import Console
from rich.table import Table

from fedcollab.common import serde
from fedcollab.privacy.ckks import PARAMETER_SETS, CkksParameters, EncryptedSum, SecretKeys
from fedcollab.protocols.vector_sum import VectorSum

PARAMS = "compact"
DEFAULT_SIZES = (1_000, 100_000, 1_000_000)
BYTE_GOAL, BYTE_STRETCH = 15.0, 8.0
RELATIVE_ERROR_GOAL = 1e-6
COORDINATOR, DECRYPTOR = 0, 1


def _message(content: RecordDict, *, src: int, dst: int) -> Message:
    """A message with the metadata Flower fills in (ids are 64-hex sha256 on the wire)."""
    metadata = Metadata(
        run_id=1,
        message_id=f"{src:064x}",
        src_node_id=src,
        dst_node_id=dst,
        reply_to_message_id=f"{dst:064x}",
        group_id="1",
        created_at=time.time(),
        ttl=600.0,
        message_type="train",
    )
    return make_message(metadata, content)


def _serialise(msg: Message) -> bytes:
    raw: bytes = message_to_proto(msg).SerializeToString()
    return raw


def _parse(raw: bytes, *, expect_length: int | None = None) -> serde.Payload:
    proto = ProtoMessage()
    proto.ParseFromString(raw)
    return serde.decode(message_from_proto(proto).content, expect_length=expect_length)


def _object_bytes(msg: Message) -> int:
    """Bytes of the objects Flower pushes for ``msg`` (message, records, array chunks)."""
    return sum(len(obj.deflate()) for obj in get_all_nested_objects(msg).values())


@contextlib.contextmanager
def _native_stdout_silenced() -> Iterator[None]:
    """Hide TenSEAL's C++ warning (printed on every multi-ciphertext encryption)."""
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    libc.fflush(None)
    saved, devnull = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        yield
    finally:
        libc.fflush(None)
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _updates(size: int, partners: int, rng: np.random.Generator) -> list[np.ndarray]:
    """FedAvg-like summed updates: each partner's example count times weights in [-1, 1]."""
    counts = rng.integers(100, 1001, size=partners)
    return [float(n) * rng.uniform(-1.0, 1.0, size) for n in counts]


def _plaintext_round(updates: list[np.ndarray]) -> tuple[dict[str, float], dict[str, Any]]:
    size = updates[0].size
    serialise, parse, aggregation = [], 0.0, 0.0
    acc = VectorSum(size)
    reply_bytes = 0
    for p, vec in enumerate(updates, start=2):
        t = time.perf_counter()
        raw = _serialise(_message(serde.encode({"step": "fedavg"}, vec), src=p, dst=COORDINATOR))
        serialise.append(time.perf_counter() - t)
        reply_bytes = len(raw)
        t = time.perf_counter()
        payload = _parse(raw, expect_length=size)
        parse += time.perf_counter() - t
        t = time.perf_counter()
        acc.add(payload.array)
        aggregation += time.perf_counter() - t
    times = {
        "transfer_serialise_per_partner": statistics.fmean(serialise),
        "transfer_parse_all_replies": parse,
        "aggregation": aggregation,
    }
    return times, {"reply_bytes": reply_bytes, "total": acc.total}


def _encrypted_round(
    updates: list[np.ndarray], keys: SecretKeys
) -> tuple[dict[str, float], dict[str, Any]]:
    size, partners = updates[0].size, len(updates)
    encrypt, serialise, parse, aggregation = [], [], 0.0, 0.0
    acc = EncryptedSum(keys.public(), params=PARAMS, length=size)
    sizes: dict[str, Any] = {}
    for p, vec in enumerate(updates, start=2):
        with _native_stdout_silenced():
            t = time.perf_counter()
            blob = keys.encrypt(vec, params=PARAMS)
            encrypt.append(time.perf_counter() - t)
        t = time.perf_counter()
        raw = _serialise(
            _message(serde.encode({"step": "fedavg"}, ciphertext=blob), src=p, dst=COORDINATOR)
        )
        serialise.append(time.perf_counter() - t)
        sizes.update(ciphertext_bytes=len(blob), reply_bytes=len(raw))
        t = time.perf_counter()
        payload = _parse(raw)
        parse += time.perf_counter() - t
        assert payload.ciphertext is not None
        t = time.perf_counter()
        acc.add(payload.ciphertext)
        aggregation += time.perf_counter() - t
    t = time.perf_counter()
    aggregate = acc.serialize()
    aggregation += time.perf_counter() - t
    t = time.perf_counter()
    raw = _serialise(
        _message(serde.encode({"step": "decrypt"}, ciphertext=aggregate), src=0, dst=DECRYPTOR)
    )
    payload = _parse(raw)
    aggregate_transfer = time.perf_counter() - t
    sizes["aggregate_message_bytes"] = len(raw)
    assert payload.ciphertext is not None
    t = time.perf_counter()
    total = keys.decrypt(payload.ciphertext, params=PARAMS, length=size, contributors=partners)
    decryption = time.perf_counter() - t
    times = {
        "encryption_per_partner": statistics.fmean(encrypt),
        "encryption_all_partners_sequential": sum(encrypt),
        "transfer_serialise_per_partner": statistics.fmean(serialise),
        "transfer_parse_all_replies": parse,
        "transfer_aggregate_to_decryptor": aggregate_transfer,
        "aggregation": aggregation,
        "decryption": decryption,
    }
    return times, {**sizes, "total": total}


def _medians(rounds: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}


def measure_size(
    size: int, partners: int, repeats: int, rng: np.random.Generator
) -> dict[str, Any]:
    """Run ``repeats`` plaintext and encrypted rounds of ``partners`` updates of ``size`` values."""
    params = PARAMETER_SETS[PARAMS]
    t = time.perf_counter()
    keys = SecretKeys.generate()
    keygen = time.perf_counter() - t
    updates = _updates(size, partners, rng)
    exact = np.zeros(size)
    for vec in updates:
        exact += vec
    plain_rounds, enc_rounds = [], []
    for _ in range(repeats):
        plain_times, plain = _plaintext_round(updates)
        enc_times, enc = _encrypted_round(updates, keys)
        plain_rounds.append(plain_times)
        enc_rounds.append(enc_times)
    pt, et = _medians(plain_rounds), _medians(enc_rounds)
    pt["transfer"] = pt["transfer_serialise_per_partner"] + pt["transfer_parse_all_replies"]
    pt["round"] = pt["transfer"] + pt["aggregation"]
    et["encryption_all_partners_parallel"] = et["encryption_per_partner"]
    et["transfer"] = (
        et["transfer_serialise_per_partner"]
        + et["transfer_parse_all_replies"]
        + et["transfer_aggregate_to_decryptor"]
    )
    et["round"] = et["encryption_per_partner"] + et["transfer"] + et["aggregation"]
    et["round"] += et["decryption"]

    # Byte counts of the last round's messages (identical in every round).
    plain_msg = _message(serde.encode({"step": "fedavg"}, updates[0]), src=2, dst=COORDINATOR)
    with _native_stdout_silenced():
        blob = keys.encrypt(updates[0], params=PARAMS)
    enc_msg = _message(serde.encode({"step": "fedavg"}, ciphertext=blob), src=2, dst=COORDINATOR)
    float32 = 4 * size
    peak = float(np.max(np.abs(exact)))
    error = float(np.max(np.abs(enc["total"] - exact)))
    return {
        "size": size,
        "partners": partners,
        "repeats": repeats,
        "ciphertexts_per_reply": params.ciphertexts_for(size),
        "slots_filled": params.slots_for(size) / (params.ciphertexts_for(size) * params.slots),
        "bytes": {
            "float32_reference": float32,
            "plaintext_float64_reply": plain["reply_bytes"],
            "ciphertext": enc["ciphertext_bytes"],
            "ciphertext_reply": enc["reply_bytes"],
            "aggregate_message": enc["aggregate_message_bytes"],
            "plaintext_reply_flower_objects": _object_bytes(plain_msg),
            "ciphertext_reply_flower_objects": _object_bytes(enc_msg),
            "ratio_ciphertext_to_float32": enc["reply_bytes"] / float32,
            "ratio_ciphertext_to_float64_wire": enc["reply_bytes"] / plain["reply_bytes"],
        },
        "seconds": {
            "keygen_once_per_job": keygen,
            "plaintext": pt,
            "encrypted": et,
            "ratio_round_encrypted_to_plaintext": et["round"] / pt["round"],
        },
        "seconds_per_repeat": {"plaintext": plain_rounds, "encrypted": enc_rounds},
        "accuracy": {
            "max_abs_error_encrypted": error,
            "max_abs_error_plaintext": float(np.max(np.abs(plain["total"] - exact))),
            "max_abs_sum": peak,
            "max_abs_partner_value": max(float(np.max(np.abs(v))) for v in updates),
            "relative_error": error / peak,
            "error_in_float32_ulps_at_max_abs_sum": error / float(np.spacing(np.float32(peak))),
            "rounding_grid": params.rounding_grid,
        },
        "peak_rss_mb_after": _peak_rss_mb(),
    }


def _goal(name: str, size: int, value: float, target: float, note: str | None) -> dict[str, Any]:
    return {
        "goal": name,
        "size": size,
        "value": value,
        "target": target,
        "passed": value <= target,
        "note": note,
    }


def goals(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pass/fail of the byte and accuracy goals, one entry per size and goal."""
    slots = PARAMETER_SETS[PARAMS].slots
    out: list[dict[str, Any]] = []
    for r in results:
        size, ratio = r["size"], r["bytes"]["ratio_ciphertext_to_float32"]
        note = None
        if size + 1 <= slots:
            note = (
                f"{size} values fill {size + 1} of one ciphertext's {slots} slots: the ratio "
                "is the minimum ciphertext size over a short vector, not per-value overhead"
            )
        for name, target in (
            ("ciphertext reply <= 15x float32", BYTE_GOAL),
            ("stretch: ciphertext reply <= 8x float32", BYTE_STRETCH),
        ):
            out.append(_goal(name, size, ratio, target, note))
        acc = r["accuracy"]
        name = "max abs error <= one rounding-grid step"
        out.append(_goal(name, size, acc["max_abs_error_encrypted"], acc["rounding_grid"], None))
        name = "max abs error / max|sum| <= 1e-6"
        out.append(_goal(name, size, acc["relative_error"], RELATIVE_ERROR_GOAL, None))
    return out


def _b(n: int) -> str:
    return f"{n / 1e6:,.2f} MB" if n >= 1e6 else f"{n / 1e3:,.1f} kB"


def _x(x: float) -> str:
    return f"{x:.2f}x"


def _ulp(x: float) -> str:
    return f"{x:.2f} ULP"


def _s(x: float) -> str:
    return f"{x * 1e3:,.1f} ms" if x < 1 else f"{x:,.2f} s"


_ROWS: tuple[tuple[str, tuple[str, ...], Callable[[Any], str]], ...] = (
    ("partners", ("partners",), str),
    ("repeats (medians of)", ("repeats",), str),
    ("ciphertexts per reply", ("ciphertexts_per_reply",), str),
    ("float32 reference", ("bytes", "float32_reference"), _b),
    ("plaintext float64 reply", ("bytes", "plaintext_float64_reply"), _b),
    ("ciphertext reply", ("bytes", "ciphertext_reply"), _b),
    ("ciphertext / float32", ("bytes", "ratio_ciphertext_to_float32"), _x),
    ("ciphertext / float64 wire", ("bytes", "ratio_ciphertext_to_float64_wire"), _x),
    ("enc: encryption per partner", ("seconds", "encrypted", "encryption_per_partner"), _s),
    ("enc: transfer", ("seconds", "encrypted", "transfer"), _s),
    ("enc: aggregation", ("seconds", "encrypted", "aggregation"), _s),
    ("enc: decryption", ("seconds", "encrypted", "decryption"), _s),
    ("enc: round", ("seconds", "encrypted", "round"), _s),
    ("plain: transfer", ("seconds", "plaintext", "transfer"), _s),
    ("plain: aggregation", ("seconds", "plaintext", "aggregation"), _s),
    ("plain: round", ("seconds", "plaintext", "round"), _s),
    ("round time enc / plain", ("seconds", "ratio_round_encrypted_to_plaintext"), _x),
    ("max abs error (decrypted)", ("accuracy", "max_abs_error_encrypted"), "{:.2e}".format),
    ("max |sum|", ("accuracy", "max_abs_sum"), "{:.3g}".format),
    ("relative error", ("accuracy", "relative_error"), "{:.2e}".format),
    (
        "error in float32 ULPs at max|sum|",
        ("accuracy", "error_in_float32_ulps_at_max_abs_sum"),
        _ulp,
    ),
    ("peak RSS after", ("peak_rss_mb_after",), "{:,.0f} MB".format),
)


def render(results: Sequence[dict[str, Any]]) -> Table:
    """One column per model size, one row per measure."""
    table = Table(title=f"CKKS ({PARAMS}) vs plaintext aggregation round, one process")
    table.add_column("measure")
    for r in results:
        table.add_column(f"{r['size']:,} params", justify="right")
    for label, path, fmt in _ROWS:
        cells = []
        for r in results:
            value = r
            for key in path:
                value = value[key]
            cells.append(fmt(value))
        table.add_row(label, *cells)
    return table


def _parameter_set(p: CkksParameters) -> dict[str, Any]:
    return {
        "poly_modulus_degree": p.poly_modulus_degree,
        "coeff_mod_bit_sizes": list(p.coeff_mod_bit_sizes),
        "scale_bits": p.scale_bits,
        "slots": p.slots,
        "rounding_grid": p.rounding_grid,
        "max_abs_sum": p.max_abs_sum,
        "max_abs_value_per_partner": p.max_abs_value,
        # A fresh (seeded) ciphertext: one polynomial of N 8-byte words per data prime
        # (privacy.ckks_wire), over N/2 slots of float32 values (two per complex slot
        # under complex_pairs).
        "byte_ratio_floor_vs_float32": p.poly_modulus_degree
        * 8
        * p.data_primes
        / (p.slots * (2 if p.complex_pairs else 1) * 4),
    }


def _sizes(text: str) -> list[int]:
    sizes = [int(s) for s in text.split(",") if s.strip()]
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("sizes must be positive integers, comma separated")
    return sizes


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("results/experiments"), help="output folder")
    ap.add_argument(
        "--sizes", type=_sizes, default=list(DEFAULT_SIZES), help="parameters per model"
    )
    ap.add_argument("--partners", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3, help="rounds per size; medians reported")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    given = list(sys.argv[1:] if argv is None else argv)
    console = Console()
    res: dict[str, Any] = {
        "benchmark": "bench_he",
        "command": ["python", "-m", "experiments.bench_he", *given],
        "machine": {
            "cpus": os.cpu_count(),
            "cpus_available": len(os.sched_getaffinity(0)),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "tenseal": version("tenseal"),
            "flwr": version("flwr"),
            "numpy": np.__version__,
            "loadavg_1min_at_start": os.getloadavg()[0],
        },
        "ckks_parameter_set_used": PARAMS,
        "parameter_sets": {name: _parameter_set(p) for name, p in PARAMETER_SETS.items()},
        "partners": args.partners,
        "repeats": args.repeats,
        "seed": args.seed,
        "results": [],
        # Filled by the deployment benchmark (real SuperLink/SuperNodes); never by this script.
        "deployment": None,
    }
    rng = np.random.default_rng(args.seed)
    for size in args.sizes:
        t = time.perf_counter()
        res["results"].append(measure_size(size, args.partners, args.repeats, rng))
        console.print(f"{size:,} parameters measured in {time.perf_counter() - t:.1f} s")
    res["machine"]["loadavg_1min_at_end"] = os.getloadavg()[0]
    res["goals"] = goals(res["results"])
    console.print(render(res["results"]))
    noted: set[int] = set()
    for g in res["goals"]:
        mark = "[green]PASS[/]" if g["passed"] else "[red]FAIL[/]"
        line = f"{g['goal']}: {g['value']:.3g} (target {g['target']:.3g})"
        console.print(f"{mark} {g['size']:>9,} params: {line}")
        if g["note"] and g["size"] not in noted:
            noted.add(g["size"])
            console.print(f"     note: {g['note']}")
    floor = res["parameter_sets"][PARAMS]["byte_ratio_floor_vs_float32"]
    console.print(f"byte ratio floor of the {PARAMS} parameters: {floor:g}x float32")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "bench_he.json"
    path.write_text(json.dumps(res, indent=2) + "\n")
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
