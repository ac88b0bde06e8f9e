"""``fedcollab run``: a job in Flower's simulation engine on local partner files."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Annotated

import click
import typer

from fedcollab.cli.progress import JobProgress
from fedcollab.common.errors import FedcollabError
from fedcollab.common.job_files import read_progress
from fedcollab.common.jobspec import load_job_spec
from fedcollab.common.schema import DatasetSchema
from fedcollab.common.split import split_horizontal
from fedcollab.common.third_party_noise import verbose_requested

__all__ = ["app"]

app = typer.Typer()


@app.command("run")
def run(
    job: Annotated[Path, typer.Argument(help="Job spec (TOML).", metavar="JOB")],
    partners: Annotated[
        Path | None,
        typer.Option(help="Folder of <name>.csv + <name>.schema.json (from `data split`)."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("results/run"),
    csv: Annotated[
        Path | None,
        typer.Option(
            metavar="CSV",
            help="Instead of --partners: one CSV, split at random into --iid partners "
            "(in OUT/partners) under the job's schema.",
        ),
    ] = None,
    iid: Annotated[int, typer.Option(metavar="N", min=2, help="Partners for --csv.")] = 3,
    id_from_row_number: Annotated[
        bool,
        typer.Option(
            "--id-from-row-number",
            help="With --csv: the file has no id column; ids are generated from row numbers.",
        ),
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the --csv split.")] = 0,
    verbose: Annotated[
        bool, typer.Option(help="Show Flower's log and warnings (as `fedcollab -v run`).")
    ] = False,
    budget_cap: Annotated[
        float | None,
        typer.Option(help="Set every simulated partner's privacy-budget cap (epsilon)."),
    ] = None,
) -> None:
    """Run JOB in Flower's simulation engine: one virtual node per partner file.

    Writes the same outputs as a real federation (metrics.json, model, model
    card) into --out.

    Example: fedcollab run jobs/purchase.toml --partners partners --out results/sim

    Example: fedcollab run bank.job.toml --csv bank.csv --iid 3 --id-from-row-number
    """
    if (partners is None) == (csv is None):
        raise click.UsageError("give exactly one of --partners DIR and --csv CSV")
    # Here, not at the top: torch and Ray are imported only by the command that runs a
    # job, not by every other command or `fedcollab --help`.
    from fedcollab.coordinator import job as coordinator_job
    from fedcollab.federation.simulation import discover_partner_files, run_simulation_job

    spec = load_job_spec(job)
    if csv is not None:
        partners = out / "partners"
        for stale in (*partners.glob("partner-*.csv"), *partners.glob("partner-*.schema.json")):
            stale.unlink()  # from an earlier --csv run with more partners
        split = split_horizontal(
            csv,
            DatasetSchema.model_validate(spec.data_schema),
            partners,
            mode="iid",
            n_partners=iid,
            seed=seed,
            id_from_row_number=id_from_row_number,
            overwrite=True,
        )
        typer.echo(f"{csv} split into {len(split)} partners in {partners}")
    assert partners is not None
    sources = discover_partner_files(partners)
    done = threading.Event()

    shown_failure = threading.Event()

    def show() -> None:
        offset = 0
        with JobProgress(title=spec.name) as progress:
            while True:
                events, offset = read_progress(out, start=offset)
                for ev in events:
                    progress(ev)
                    if ev.get("event") == "job_end" and ev.get("status") != "completed":
                        shown_failure.set()
                if done.is_set() and not events:
                    return
                done.wait(0.3)

    viewer = threading.Thread(target=show, daemon=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "progress.jsonl").unlink(missing_ok=True)
    viewer.start()
    # The progress display shows a failed job with its reason and hint: the
    # coordinator's own "job ... failed" log line and the final error would repeat it.
    job_log = coordinator_job.log
    level = job_log.level
    if not (verbose or verbose_requested()):
        job_log.setLevel(logging.ERROR)
    try:
        run_simulation_job(spec, sources, out, verbose=verbose, budget_cap=budget_cap)
    except FedcollabError as exc:
        done.set()
        viewer.join(timeout=5)
        exc.shown = shown_failure.is_set()
        raise
    finally:
        job_log.setLevel(level)
        done.set()
        viewer.join(timeout=5)
    typer.echo(f"outputs in {out}")
