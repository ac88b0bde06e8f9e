"""A newcomer's path: a public-style CSV to a federated job in two commands, no JSON by hand.

The CSV has ``yes``/``no`` labels, a column to leave out and no id column, as
the UCI Bank Marketing table does. The first command drafts the schema and a
starter job and prints the second command; the test runs exactly that command
(Flower's simulation engine, real processes) and checks the job completed,
the left-out column never reached a partner and no third-party banner was
printed.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

BIN = Path(sys.executable).parent


def _bank_csv(path: Path, n: int = 300) -> None:
    rng = np.random.default_rng(7)
    lines = ["age,job,balance,housing,duration,contact_note,y"]
    for i in range(n):
        balance = int(rng.integers(-500, 5000))
        housing = rng.random() < 0.5
        logit = -1.0 + balance / 1500 - 1.2 * housing
        y = rng.random() < 1 / (1 + np.exp(-logit))
        job = rng.choice(["admin.", "blue-collar", "technician", "services"])
        lines.append(
            f"{rng.integers(20, 70)},{job},{balance},{'yes' if housing else 'no'},"
            f"{rng.integers(5, 900)},called on day {i},{'yes' if y else 'no'}"
        )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _fedcollab(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(
        [str(BIN / "fedcollab"), *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip


def test_csv_with_yes_no_labels_to_a_federated_job_in_two_commands(tmp_path: Path) -> None:
    _bank_csv(tmp_path / "bank.csv")
    first = _fedcollab(
        ["data", "schema", "bank.csv", "--ignore", "duration", "--job", "bank.job.toml"], tmp_path
    )
    assert first.returncode == 0, first.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "bank.csv",
        "bank.job.toml",
        "bank.schema.json",
    ]
    # The second command is the one the first printed.
    printed = [line.strip() for line in first.stdout.splitlines()]
    second = next(line for line in printed if line.startswith("fedcollab run "))
    assert "--id-from-row-number" in second  # the file has no id column
    args = [*shlex.split(second)[1:], "--out", "results"]
    run = _fedcollab(args, tmp_path)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "completed: test AUC" in run.stdout, output
    quiet = ("DEPRECATED FEATURE", "FutureWarning", "ClientAppActor", "Traceback", "Ray instance")
    for noise in quiet:
        assert noise not in output, output
    results = tmp_path / "results"
    assert (results / "metrics.json").is_file() and (results / "model_card.json").is_file()
    partners = sorted((results / "partners").glob("*.csv"))
    assert len(partners) == 3
    for csv_path in partners:
        header = csv_path.read_text(encoding="utf-8").splitlines()[0].split(",")
        assert header == ["row_id", "age", "job", "balance", "housing", "y"]


def test_a_newcomers_dp_job_fails_once_with_what_to_do(tmp_path: Path) -> None:
    """New-user review (2026-12-06). Turning DP on in the drafted job: without bounds
    for its numeric columns the job is refused before anything runs (exit 12, the
    columns named); with them but no budget cap, every partner refuses, and the reason
    and what to do are printed once (they used to be printed three times: the
    coordinator's log line, the progress display and the final error)."""
    _bank_csv(tmp_path / "bank.csv")
    first = _fedcollab(
        ["data", "schema", "bank.csv", "--ignore", "duration", "--job", "bank.job.toml"], tmp_path
    )
    assert first.returncode == 0, first.stderr
    job = tmp_path / "bank.job.toml"
    drafted = job.read_text(encoding="utf-8")
    assert "[privacy]" not in drafted
    dp = '\n[privacy]\ndp = "sample"\ntarget_epsilon = 3.0\n'
    job.write_text(drafted + dp, encoding="utf-8")
    args = ["run", "bank.job.toml", "--csv", "bank.csv", "--id-from-row-number", "--out", "r"]
    unbounded = _fedcollab(args, tmp_path)
    text = unbounded.stdout + unbounded.stderr
    assert unbounded.returncode == 12, text
    assert "numeric feature(s) ['age', 'balance'] have no [privacy.value_bounds]" in text, text
    assert not (tmp_path / "r" / "audit").exists()  # nothing ran, nobody was charged

    bounds = "[privacy.value_bounds]\nage = [18.0, 100.0]\nbalance = [-10000.0, 100000.0]\n"
    job.write_text(drafted + dp + bounds, encoding="utf-8")
    refused = _fedcollab(args, tmp_path)
    text = " ".join((refused.stdout + refused.stderr).split())  # the display wraps lines
    assert refused.returncode == 15, text
    assert text.count("What to do:") == 1 and "--budget-cap" in text, text
    assert "the job failed: what happened and what to do are shown above" in text, text
    assert text.count("refused by the partner (PrivacyError)") == 3, text  # once per partner
