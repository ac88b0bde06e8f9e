"""What a purchase-prediction job released, in words: shared by the terminal's progress
display (cli/progress.py) and the web console's job page (coordinator/console/jobs.py),
so both say the same thing about the same ``released`` event (coordinator.prediction).
Plain text: each caller adds its own markup.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["model_after", "more_rows", "released_text", "rows_text"]


def model_after(rounds: int) -> str:
    """Rounds are counted from 1 everywhere: the model after round 5 is the fifth model."""
    return "the initial model" if rounds == 0 else f"model after round {rounds}"


def rows_text(n: object) -> str:
    return "1 row" if n == 1 else f"{n} rows"


#: How the released model was chosen (coordinator.prediction's ``released`` event).
_SELECTION = {
    "last_round": 'the last model: evaluation.dp_model_selection = "last_round"',
    "no_validation_auc": "the last model: no validation AUC to select by",
}


def more_rows(split: str, fraction: float | None = None) -> str:
    """The hint: more rows, or a larger split (the partners' constant in a deployment)."""
    now = f"now {fraction:g}; " if fraction is not None else ""
    return (
        f"add rows or raise evaluation.{split}_fraction ({now}partners' nodes must be "
        f"started with the same --split-{split})"
    )


def released_text(ev: Mapping[str, Any]) -> tuple[str, list[str]]:
    """A ``released`` event (coordinator.prediction) as a headline and warnings, plain text."""
    rnd = ev.get("round")
    name = model_after(rnd) if isinstance(rnd, int) else str(rnd)
    selection = str(ev.get("selection"))
    dp = bool(ev.get("dp_estimate"))
    about = "about " if dp else ""
    if selection == "validation":
        auc = ev.get("validation_auc")
        why = "best validation AUC" + (f" {auc:.4f}" if isinstance(auc, int | float) else "")
        why += " (DP estimate)" if dp else ""
    else:
        why = _SELECTION.get(selection, selection)
    warnings: list[str] = []
    for w in ev.get("warnings") or []:
        if w.get("kind") == "initial_model":
            warnings.append(
                "the released model is the initial, untrained one (after "
                "0 rounds): no round improved on it, and its figures say nothing about what "
                "training can achieve"
            )
        elif w.get("kind") == "few_minority_rows":
            rows, split = w.get("rows"), w.get("split")
            cls = "positive" if w.get("label") == 1 else "negative"
            held = f"no {cls} rows" if rows == 0 else f"only {about}{rows} {cls}"
            held += "" if rows == 0 else (" row" if rows == 1 else " rows")
            figure = "AUC" if split == "test" else "AUC, which chose the model,"
            warnings.append(
                f"the {split} split has {held} (of {about}"
                f"{rows_text(w.get('n'))}): its {figure} is not a meaningful figure with fewer "
                f"than {w.get('threshold')} rows of each class; {more_rows(str(split))}"
            )
    return f"released: {name} ({why})", warnings
