"""``fedcollab job submit`` never replaces an earlier job's outputs unasked (new-user
review, 2026-12-06: a second submit to the same --out replaced the first job's released
model without a word, and the compliance report then found the first run's files
"differing from the released" ones)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedcollab.cli.job import _output_folder
from fedcollab.coordinator.workspace import Workspace
from tests.support.cli import run_cli
from tests.support.integration import SCHEMA, write_job


def test_an_out_folder_with_an_earlier_job_is_refused_before_anything_is_submitted(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ws = Workspace.create(tmp_path / "ws", name="fed")  # no coordinator runs
    schema = tmp_path / "shop.schema.json"
    schema.write_text(json.dumps(SCHEMA))
    job = write_job(tmp_path / "job.toml", schema)
    out = tmp_path / "results" / "purchase"
    out.mkdir(parents=True)
    (out / "result.json").write_text('{"status": "completed"}')
    (out / "model.pt").write_bytes(b"the released model")
    assert run_cli(monkeypatch, "job", "submit", job, "-w", ws.root, "--out", out) == 13
    err = capsys.readouterr().err
    assert "holds the outputs of an earlier job" in err and "--overwrite" in err
    assert (out / "model.pt").read_bytes() == b"the released model"
    assert (out / "result.json").exists()


def test_the_default_folder_is_a_new_one_per_job(tmp_path: Path) -> None:
    ws = Workspace.create(tmp_path / "ws", name="fed")
    first = _output_folder(ws, "purchase", None, overwrite=False)
    assert first == ws.root / "jobs" / "purchase"
    first.mkdir(parents=True)
    (first / "progress.jsonl").write_text("")
    second = _output_folder(ws, "purchase", None, overwrite=False)
    assert second == ws.root / "jobs" / "purchase-2"
    out = tmp_path / "given"
    assert _output_folder(ws, "purchase", out, overwrite=False) == out  # empty: fine
    out.mkdir()
    (out / "result.json").write_text("{}")
    assert _output_folder(ws, "purchase", out, overwrite=True) == out
