"""One command for the README's results: rerun the studies, redraw the figures, rewrite the block.

    python -m experiments.reproduce --out results/experiments   # everything (make experiments)
    python -m experiments.reproduce --only bench_psi,vertical   # rerun some studies
    python -m experiments.reproduce --from-json                 # redraw from JSON on disk
    python -m experiments.reproduce --quick                     # 3-minute smoke run, README kept

Runs every study of :data:`experiments.studies.STUDIES` in turn (each
module's own ``main``, so the JSON is what ``python -m experiments.NAME``
writes), records each run in ``<out>/reproduce.json``, draws
:data:`experiments.figures.FIGURES` into ``--figures`` from the JSON in
``--out`` and rewrites the README between ``<!-- results:begin -->`` and
``<!-- results:end -->`` (:mod:`experiments.readme_block`). Studies not rerun
keep their JSON, so a study rerun with ``--only`` and the others' earlier
JSON make one consistent README; a study with no JSON on this machine (a fresh
clone) keeps its row and figure from the README's current block. ``--quick``
runs tiny sizes (a smoke test:
the figures it draws are not results) and skips the real-federation
benchmarks, which have no cheap mode; it writes to
``results/experiments-quick`` (figures in its ``figures/``) and leaves the
README alone unless ``--out``, ``--figures`` or ``--readme`` say otherwise.
``bench_audit`` runs only with ``--with-audit`` or ``--only bench_audit``.

Exit codes: 0 when every selected study wrote its JSON (goals not met are
reported, not failures), 1 when one failed, the error's own code for a README
without markers (checked before any study runs), 2 for usage errors.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from experiments.studies import (
    STUDIES,
    Study,
    StudyRun,
    by_name,
    load_manifest,
    sha256_file,
    store_runs,
)
from fedcollab.common.errors import FedcollabError

__all__ = ["load_results", "main", "select"]


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    for name in names:
        try:
            by_name(name)
        except KeyError as exc:
            raise argparse.ArgumentTypeError(str(exc.args[0])) from exc
    return names


def select(only: Sequence[str], skip: Sequence[str], *, with_audit: bool) -> list[Study]:
    """The studies to run, in :data:`STUDIES` order."""
    if only:
        return [s for s in STUDIES if s.name in only and s.name not in skip]
    return [s for s in STUDIES if s.name not in skip and (with_audit or not s.optional)]


def load_results(out: Path) -> dict[str, dict[str, Any]]:
    """Every study's JSON found in ``out``, by study name."""
    return {
        s.name: json.loads((out / s.json_name).read_text())
        for s in STUDIES
        if (out / s.json_name).is_file()
    }


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--out", type=Path, default=None,
        help="JSON folder (default results/experiments; with --quick results/experiments-quick)",
    )  # fmt: skip
    ap.add_argument(
        "--figures", type=Path, default=None,
        help="PNG folder (default docs/figures; with --quick <out>/figures)",
    )  # fmt: skip
    ap.add_argument(
        "--readme", type=Path, default=None,
        help="README to rewrite (default README.md; with --quick none unless given)",
    )  # fmt: skip
    ap.add_argument("--no-readme", action="store_true", help="leave the README alone")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, no deployments (a smoke run)")
    ap.add_argument("--only", type=_names, default=[], help="NAME[,NAME]: run only these")
    ap.add_argument("--skip", type=_names, action="extend", default=[], help="NAME[,NAME]")
    ap.add_argument("--with-audit", action="store_true", help="also run bench_audit")
    ap.add_argument("--from-json", action="store_true", help="run nothing: redraw from JSON")
    return ap


def _rehash(runs: dict[str, StudyRun], out: Path, *, by: str) -> None:
    """Record JSON that a later study of this same command updated (bench_he.json's deployment)."""
    for name, run in runs.items():
        path = out / Path(run.json).name
        if name != by and run.json_sha256 is not None and path.is_file() and not run.wrote(path):
            runs[name] = replace(
                run, json_sha256=sha256_file(path), extra={**run.extra, "json_updated_by": by}
            )


def _summary(
    runs: dict[str, StudyRun], skipped: dict[str, str], results: dict[str, dict[str, Any]]
) -> Table:
    table = Table(title="experiments.reproduce")
    for col in ("study", "status", "wall time", "load 1-min start → end", "JSON"):
        table.add_column(col, justify="right" if col == "wall time" else "left")
    for study in STUDIES:
        run = runs.get(study.name)
        if run is None:
            status = skipped.get(study.name) or (
                "not run: JSON on disk" if study.name in results else "not run, no JSON"
            )
            table.add_row(study.name, status, "", "", "")
            continue
        color = {"ok": "green", "checks not met": "yellow", "failed": "red"}[run.status]
        load = f"{run.loadavg_at_start[0]:.1f} → {run.loadavg_at_end[0]:.1f}"
        status = f"[{color}]{run.status}[/]" + (f": {run.error}" if run.error else "")
        table.add_row(study.name, status, f"{run.wall_time_s:,.1f} s", load, run.json)
    return table


def main(argv: Sequence[str] | None = None) -> int:
    from experiments.figures import draw_all
    from experiments.readme_block import (
        ReadmeMarkerError,
        render_block,
        replace_block,
        rewrite_readme,
    )

    args = _parser().parse_args(argv)
    # A smoke run never overwrites the published results unless told to explicitly.
    if args.out is None:
        args.out = Path("results/experiments-quick" if args.quick else "results/experiments")
    if args.figures is None:
        args.figures = args.out / "figures" if args.quick else Path("docs/figures")
    if args.readme is None and not args.quick:
        args.readme = Path("README.md")
    given = list(sys.argv[1:] if argv is None else argv)
    command = ["python", "-m", "experiments.reproduce", *given]
    console = Console(width=None if sys.stdout.isatty() else 160)
    out: Path = args.out
    readme: Path | None = None if args.no_readme else args.readme
    try:
        if readme is not None:  # refuse now, not after an hour of studies
            if not readme.is_file():
                raise ReadmeMarkerError(
                    f"{readme} does not exist", hint="pass --readme PATH or --no-readme"
                )
            replace_block(readme.read_text(encoding="utf-8"), "", source=str(readme))
    except FedcollabError as exc:
        console.print(f"[red]error:[/] {escape(exc.diagnostics())}", highlight=False)
        return exc.exit_code
    planned = [] if args.from_json else select(args.only, args.skip, with_audit=args.with_audit)
    runs: dict[str, StudyRun] = {}
    skipped: dict[str, str] = {}
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    for study in planned:
        if args.quick and study.quick_args is None:
            skipped[study.name] = "skipped: no quick mode"
            continue
        console.rule(f"{study.name}: {' '.join(study.module_command(out, quick=args.quick))}")
        runs[study.name] = study.run(out, quick=args.quick, command=command)
        _rehash(runs, out, by=study.name)
        store_runs(out, list(runs.values()))  # after each study: a later crash keeps the rest
    results = load_results(out)
    figures = draw_all(results, args.figures)
    manifest = load_manifest(out)
    console.print(_summary(runs, skipped, results))
    for name, path in figures.items():
        console.print(f"figure {name}: {path}")
    if readme is not None:
        # A quick smoke block never mixes in the published rows; a real run keeps the
        # rows of studies whose JSON is not on this machine.
        block = render_block(
            results, manifest, figures, readme=readme, out=out, keep_missing=not args.quick
        )
        try:
            changed = rewrite_readme(readme, block)
        except FedcollabError as exc:  # the markers went away while the studies ran
            console.print(f"[red]error:[/] {escape(exc.diagnostics())}", highlight=False)
            return exc.exit_code
        console.print(f"{readme}: results block {'rewritten' if changed else 'unchanged'}")
    console.print(f"{len(runs)} studies run in {time.monotonic() - t0:,.0f} s; JSON in {out}")
    return 1 if any(r.status == "failed" for r in runs.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
