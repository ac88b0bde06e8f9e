"""Rich rendering of a job's progress events (shared by job, run and demo).

Rounds are numbered from 1. Round r of a purchase-prediction job validates the
model it starts from (the model after round r - 1), and the released model is
named the same way ("the initial model": after 0 rounds), so every number on
screen is a count of rounds completed. The early-stop line says when and why
training stopped; which model was released comes from the job's final selection
(the ``released`` event, ``metrics.json``'s ``best_round``) and is named on the
``released`` and ``completed`` lines. A DP job's figures are marked as estimates.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fedcollab.common.release_text import model_after, more_rows, released_text, rows_text

__all__ = ["JobProgress"]


class JobProgress:
    """Feed progress events to :meth:`__call__`; shows one bar per job."""

    def __init__(self, console: Console | None = None, *, title: str = "") -> None:
        self.console = console or Console()
        self.title = title
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[metric]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self._task: Any = None
        #: The ``released`` event of a purchase-prediction job: names the model on the
        #: completion line.
        self._released: dict[str, Any] | None = None

    def __enter__(self) -> JobProgress:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def __call__(self, ev: dict[str, Any]) -> None:
        kind = ev.get("event")
        say = self._progress.console.print
        if kind == "job_start":
            say(f"[bold]{self.title or ev.get('job')}[/]: {ev.get('task')} ({ev.get('mode')})")
        elif kind == "waiting":
            say(f"  waiting for at least {ev.get('min_partners')} partners ...")
        elif kind == "partners":
            say(f"  partners: {', '.join(ev.get('partners', []))}")
            for r in ev.get("refused", []):
                say(f"  [yellow]refused[/] {r.get('partner') or r.get('node')}: {r.get('reason')}")
        elif kind == "round":
            if self._task is None:
                label = {"purchase_prediction": "rounds", "vertical": "iterations"}.get(
                    str(ev.get("task")), "Lloyd iterations"
                )
                self._task = self._progress.add_task(label, total=ev.get("total"), metric="")
            if ev.get("val_auc") is not None:
                metric = f"val AUC {ev['val_auc']:.4f}"
                if ev.get("validated_round") is not None:
                    metric += f" ({model_after(ev['validated_round'])})"
            elif ev.get("objective") is not None:
                metric = f"objective {ev['objective']:.1f}"
            elif ev.get("train_loss") is not None:
                metric = f"train loss {ev['train_loss']:.4f}"
            else:
                metric = ""
            if ev.get("epsilon") is not None:
                metric += f"  epsilon {ev['epsilon']:.2f}"
            self._progress.update(self._task, completed=ev.get("round"), metric=metric)
            if not self.console.is_terminal:  # logs and CI: one line per round
                noun = "iteration" if ev.get("task") == "vertical" else "round"
                line = f"  {noun} {ev.get('round')}/{ev.get('total')}"
                # A vertical job under label DP reports no loss: no empty "round 3/20: ".
                say(f"{line}: {metric.strip()}" if metric.strip() else line)
        elif kind == "vertical" and ev.get("phase") == "psi":
            say(
                f"  private set intersection: {', '.join(ev.get('parties', []))} "
                f"(label holder {ev.get('label_holder')})"
            )
        elif kind == "vertical" and ev.get("phase") == "aligned":
            say(
                f"  aligned {ev.get('intersection')} common users"
                + (
                    f" ({ev.get('train_rows')} training, {ev.get('test_rows')} test)"
                    if ev.get("train_rows") is not None
                    else ""
                )
            )
        elif kind == "encryption":
            say(f"  encrypted aggregation: CKKS key dealt by {ev.get('dealer')}")
        elif kind == "privacy":
            target = ev.get("target_epsilon")
            say(
                f"  differential privacy ({ev.get('level')} level): noise multiplier "
                f"{ev.get('noise_multiplier', 0):.3f}, planned epsilon "
                f"{ev.get('planned_epsilon', 0):.2f}"
                + (f" (target {target:g})" if target is not None else "")
                + f" at delta {ev.get('target_delta')}"
            )
        elif kind == "dp_signal":
            ratio = float(ev.get("noise_to_signal", 0.0))
            where = (
                f"{ev.get('contributors')} partners, {ev.get('rounds')} rounds, "
                f"{ev.get('n_parameters')} parameters"
            )
            if ratio > 1.0:
                say(
                    f"  [yellow]warning[/] DP-FedAvg noise is {ratio:.1f}x the largest signal "
                    f"the partners can send ({where}): expect a near-random model; raise "
                    'the epsilon, add partners, use a smaller model, or use dp = "sample"'
                )
            else:
                say(f"  DP-FedAvg noise is {ratio:.2f}x the largest signal ({where})")
        elif kind == "round_skipped":
            say(f"  round {ev.get('round')} skipped: only {ev.get('sampled')} partners drawn")
        elif kind == "dropout":
            say(f"  [yellow]dropout[/] {ev.get('partner')} at {ev.get('step')}: {ev.get('reason')}")
        elif kind == "validation_undefined":
            noise = " after the DP noise" if ev.get("dp_estimate") else ""
            off = "model selection is"
            if ev.get("early_stopping"):
                off = "early stopping and model selection are"
            fraction = ev.get("validation_fraction")
            fraction = fraction if isinstance(fraction, int | float) else None
            say(
                f"  [yellow]warning[/] the validation split has no rows of both classes{noise} "
                f"({rows_text(ev.get('n'))}): no validation AUC, so {off} off; "
                + more_rows("validation", fraction)
            )
        elif kind == "early_stop":
            if ev.get("patience") is not None:
                say(
                    f"  early stop after round {ev.get('round')}: the validation AUC has not "
                    f"improved by more than {ev.get('min_delta', 0):g} for {ev['patience']} "
                    "rounds (evaluation.early_stopping_patience)"
                )
            else:  # an older coordinator's event: its "best" was not the released model
                say(f"  early stop after round {ev.get('round')}")
        elif kind == "released":
            self._released = ev
            headline, warnings = released_text(ev)
            say(f"  {headline}")
            for warning in warnings:
                say(f"  [yellow]warning[/] {warning}")
        elif kind == "job_end":
            if ev.get("status") == "completed":
                final = ev.get("final") or {}
                test = final.get("test") or {}
                if test.get("auc") is not None:
                    say(f"  [green]completed[/]: {_test_summary(test, self._released)}")
                elif final.get("test_auc") is not None:
                    say(f"  [green]completed[/]: test AUC {final['test_auc']:.4f}")
                elif final.get("scored") is not None:
                    say(
                        f"  [green]completed[/]: {final['scored']} users scored at the label holder"
                    )
                elif ev.get("objective") is not None:
                    say(f"  [green]completed[/]: k-means objective {ev['objective']:.1f}")
                else:
                    say("  [green]completed[/]")
            else:
                say(f"  [red]failed[/]: {ev.get('error')}: {ev.get('reason')}")


def _test_summary(test: dict[str, Any], released: dict[str, Any] | None) -> str:
    """``test AUC 0.8123 on 900 rows, model after round 6`` (+ a DP job's caveat)."""
    dp = bool(test.get("dp_estimate"))
    text = f"test AUC {test['auc']:.4f}"
    if isinstance(test.get("n"), int):
        text += f" on {'about ' if dp else ''}{rows_text(test['n'])}"
    if released is not None and isinstance(released.get("round"), int):
        text += f", {model_after(released['round'])}"
    if dp:
        text += " (DP estimate from noised counts; n is noised too)"
    return text
