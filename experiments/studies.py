"""The studies behind the README's results section, and how to run each one.

    from experiments.studies import STUDIES, by_name
    run = by_name("bench_psi").run(Path("results/experiments"), quick=False)

A :class:`Study` is a module of :mod:`experiments` with a ``main(argv)`` entry
point, the JSON file it writes and its arguments at the README's sizes
(``full_args``) and at smoke-test sizes (``quick_args``; ``None``: no cheap
mode, skipped by ``--quick``). Running a study calls that module's ``main``
in this process with exactly the arguments its standalone command would get,
so ``python -m experiments.reproduce --only NAME`` and
``python -m experiments.NAME --out OUT ARGS`` produce the same JSON. Each run
is recorded as a :class:`StudyRun` (wall time, 1-minute load average before
and after, SHA-256 of the JSON written) in ``<out>/reproduce.json``, so the
README can say which command produced the figures it shows.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shlex
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "MANIFEST",
    "STUDIES",
    "Study",
    "StudyRun",
    "by_name",
    "load_manifest",
    "sha256_file",
    "store_runs",
]

MANIFEST = "reproduce.json"
Status = Literal["ok", "checks not met", "failed"]


@dataclass(frozen=True)
class Study:
    """One study: its module, its JSON output and its arguments per mode."""

    name: str
    json_name: str
    full_args: tuple[str, ...] = ()
    quick_args: tuple[str, ...] | None = ()
    #: Run only when asked for (``--with-audit`` or ``--only``).
    optional: bool = False
    #: ``--out`` names the JSON file itself rather than its folder.
    out_is_file: bool = False

    @property
    def module(self) -> str:
        return f"experiments.{self.name}"

    def argv(self, out: Path, *, quick: bool) -> list[str]:
        args = self.quick_args if quick else self.full_args
        if args is None:
            raise ValueError(f"{self.name} has no quick mode")
        target = out / self.json_name if self.out_is_file else out
        return ["--out", str(target), *args]

    def module_command(self, out: Path, *, quick: bool) -> list[str]:
        return ["python", "-m", self.module, *self.argv(out, quick=quick)]

    def run(self, out: Path, *, quick: bool, command: Sequence[str]) -> StudyRun:
        """Call the module's ``main`` with this study's arguments; never raises.

        ``command`` is the command line that asked for this run (recorded as is).
        """
        argv = self.argv(out, quick=quick)
        main: Callable[[list[str]], int | None] = importlib.import_module(self.module).main
        load_start = os.getloadavg()
        started = datetime.now(UTC).isoformat(timespec="seconds")
        t0 = time.monotonic()
        error = None
        try:
            code = main(argv)
        except Exception as exc:  # a failed study must not stop the others
            code, error = 1, f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        except SystemExit as exc:  # argparse errors and explicit exits
            code, error = 1, f"SystemExit({exc.code})"
        wall = time.monotonic() - t0
        path = out / self.json_name
        status: Status = "ok" if not code else "checks not met"
        if error is not None or not path.is_file():
            status, error = "failed", error or f"{path} was not written"
        return StudyRun(
            study=self.name,
            command=list(command),
            module_command=["python", "-m", self.module, *argv],
            status=status,
            error=error,
            started_utc=started,
            wall_time_s=round(wall, 1),
            loadavg_at_start=[round(x, 2) for x in load_start],
            loadavg_at_end=[round(x, 2) for x in os.getloadavg()],
            cpus=os.cpu_count(),
            json=str(path),
            # A failed run's folder may hold an older JSON: never claim it as this run's.
            json_sha256=sha256_file(path) if status != "failed" else None,
        )


@dataclass(frozen=True)
class StudyRun:
    """What one run of a study did (one entry of ``<out>/reproduce.json``)."""

    study: str
    command: list[str]
    module_command: list[str]
    status: Status
    error: str | None
    started_utc: str
    wall_time_s: float
    loadavg_at_start: list[float]
    loadavg_at_end: list[float]
    cpus: int | None
    json: str
    json_sha256: str | None
    extra: dict[str, Any] = field(default_factory=dict)

    def command_text(self) -> str:
        return shlex.join(self.command)

    def wrote(self, json_path: Path) -> bool:
        """Whether ``json_path`` is still the JSON this run wrote.

        A JSON rewritten since (by a standalone ``python -m experiments.NAME``)
        no longer matches the recorded hash: its own ``command`` field then
        says what produced it.
        """
        return self.json_sha256 is not None and (
            json_path.is_file() and self.json_sha256 == sha256_file(json_path)
        )


def _args(text: str) -> tuple[str, ...]:
    return tuple(text.split())


#: In the order they run: the cheap simulation studies first, the long deployments later.
STUDIES: tuple[Study, ...] = (
    Study("horizontal", "horizontal.json", quick_args=_args("--rounds 1")),
    Study("he_equivalence", "he_equivalence.json", quick_args=_args("--rounds 2")),
    # Masked and ckks+masked segmentation jobs take minutes each: no quick mode.
    Study("kmeans_modes", "kmeans_modes.json", quick_args=None),
    Study(
        "bench_he", "bench_he.json",
        quick_args=_args("--sizes 1000,20000 --partners 3 --repeats 1"),
    ),
    Study(
        "bench_secagg", "bench_secagg.json",
        quick_args=_args("--sizes 1000 --partners 5 --dropouts 0,0.2"),
    ),
    Study("bench_he_deployment", "bench_he_deployment.json", quick_args=None),
    Study(
        "bench_deployment", "bench_deployment.json",
        full_args=_args("--rounds 6 --flower-pace"), quick_args=None,
    ),
    Study(
        "privacy_utility", "privacy_utility.json",
        quick_args=_args("--seeds 1 --epsilons 8 --rounds 1"),
    ),
    Study(
        "vertical", "vertical.json",
        quick_args=_args("--rows 1500 --lr-iterations 3 --snn-steps 4 --epsilons 8"),
    ),
    Study(
        "bench_vertical_deployment", "bench_vertical_deployment.json",
        full_args=_args("--iterations 10"), quick_args=None,
    ),
    Study(
        "bench_psi", "bench_psi.json",
        full_args=_args("--n 1000000 --overlap 0.5"),
        quick_args=_args(
            "--n 2000 --sizes 500,1000 --three-party-n 500 --calibration-values 300 "
            "--openssl-seconds 0"
        ),
    ),
    Study(
        "bench_psi_oprf", "bench_psi_oprf.json",
        full_args=_args("--n 1000000 --compare-n 100000"),
        quick_args=_args("--n 2000 --compare-n 1000"),
    ),
    Study(
        "scale_simulation", "scale.json",
        full_args=_args("--partners 100,500 --rounds 3"),
        quick_args=_args("--partners 3 --rounds 1"),
    ),
    Study(
        "scale_deployment", "scale_deployment.json",
        full_args=_args("--rounds 3"), quick_args=None,
    ),
    Study(
        "bench_audit", "bench_audit.json",
        full_args=_args("--events 1000000"), quick_args=_args("--events 2000"),
        optional=True, out_is_file=True,
    ),
)  # fmt: skip


def by_name(name: str) -> Study:
    for study in STUDIES:
        if study.name == name:
            return study
    known = ", ".join(s.name for s in STUDIES)
    raise KeyError(f"no study {name!r}; known: {known}")


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_manifest(out: Path) -> dict[str, StudyRun]:
    """The latest recorded run per study (see :meth:`StudyRun.wrote`)."""
    path = out / MANIFEST
    if not path.is_file():
        return {}
    studies = json.loads(path.read_text())["studies"]
    return {name: StudyRun(**entry) for name, entry in studies.items()}


def store_runs(out: Path, runs: Sequence[StudyRun]) -> Path:
    """Merge ``runs`` into ``<out>/reproduce.json`` (other studies' entries kept)."""
    path = out / MANIFEST
    doc: dict[str, Any] = {"studies": {}}
    if path.is_file():
        doc = json.loads(path.read_text())
    for run in runs:
        doc["studies"][run.study] = asdict(run)
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path
