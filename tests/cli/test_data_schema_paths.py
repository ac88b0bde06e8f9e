"""``fedcollab data schema``: its outputs are checked before anything is written, written
both or neither, and a label it cannot guess is an error that names the column."""

from __future__ import annotations

import errno
import sys
from pathlib import Path

import pytest

from fedcollab.cli import data_schema
from fedcollab.cli.app import main
from fedcollab.common.errors import JobSpecError
from fedcollab.common.jobspec import load_job_spec
from fedcollab.common.schema import load_schema


def run(monkeypatch: pytest.MonkeyPatch, *args: str | Path) -> int:
    monkeypatch.setattr(sys, "argv", ["fedcollab", "data", "schema", *map(str, args)])
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def bank_csv(folder: Path, label: object = None, name: str = "bank.csv") -> Path:
    """A Bank-Marketing-shaped file: ``default`` is a yes/no feature, ``y`` the label."""
    lines = ["age,default,balance,duration,y"]
    for i in range(40):
        y = ("yes" if i % 4 == 0 else "no") if label is None else label(i)  # type: ignore[operator]
        lines.append(f"{20 + i},{'yes' if i % 3 else 'no'},{i * 10},{i * 7},{y}")
    path = folder / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_job_in_a_missing_folder_writes_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    csv_path = bank_csv(tmp_path)
    job = tmp_path / "no" / "such" / "bank.job.toml"
    assert run(monkeypatch, csv_path, "--ignore", "duration", "--job", job) == 13
    err = capsys.readouterr().err
    assert "WorkspaceError" in err and "Traceback" not in err
    assert f"the folder {job.parent} does not exist" in err
    assert "create the folder" in err and "choose another path" in err
    assert listing(tmp_path) == ["bank.csv"]  # the schema was not written either
    # Once the folder exists the same command succeeds: no "already exists" left behind.
    job.parent.mkdir(parents=True)
    assert run(monkeypatch, csv_path, "--ignore", "duration", "--job", job) == 0
    assert load_job_spec(job).task == "purchase_prediction"
    assert load_schema(tmp_path / "bank.schema.json").label_column == "y"


def test_out_in_a_missing_folder_writes_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    csv_path = bank_csv(tmp_path)
    job = tmp_path / "bank.job.toml"
    out = tmp_path / "missing" / "x.schema.json"
    assert run(monkeypatch, csv_path, "--out", out, "--job", job) == 13
    assert f"the folder {out.parent} does not exist" in capsys.readouterr().err
    assert listing(tmp_path) == ["bank.csv"]  # the job (second output) neither


def test_outputs_that_are_folders_or_under_a_file(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    csv_path = bank_csv(tmp_path)
    (tmp_path / "a-folder").mkdir()
    assert run(monkeypatch, csv_path, "--out", tmp_path / "a-folder") == 13
    assert "it is a folder" in capsys.readouterr().err
    assert run(monkeypatch, csv_path, "--job", csv_path / "bank.job.toml") == 13
    assert "is not a folder" in capsys.readouterr().err
    assert listing(tmp_path) == ["a-folder", "bank.csv"]
    assert (
        run(monkeypatch, csv_path, "--out", tmp_path / "s.json", "--job", tmp_path / "s.json") == 2
    )
    assert listing(tmp_path) == ["a-folder", "bank.csv"]


def test_an_existing_job_is_refused_before_the_schema_is_written(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    csv_path = bank_csv(tmp_path)
    job = tmp_path / "bank.job.toml"
    job.write_text("mine\n")
    assert run(monkeypatch, csv_path, "--job", job) == 13
    assert "already exists" in capsys.readouterr().err
    assert listing(tmp_path) == ["bank.csv", "bank.job.toml"] and job.read_text() == "mine\n"


def _fail_on(monkeypatch: pytest.MonkeyPatch, suffix: str) -> None:
    """Make the write of the file whose name ends with ``suffix`` fail (a full disk)."""
    real = data_schema.write_atomic

    def write_atomic(path: Path | str, data: bytes | str, **kwargs: bool) -> Path:
        if str(path).endswith(suffix):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data, **kwargs)

    monkeypatch.setattr(data_schema, "write_atomic", write_atomic)


def test_a_failed_second_write_removes_the_first(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    csv_path = bank_csv(tmp_path)
    _fail_on(monkeypatch, ".job.toml")
    assert run(monkeypatch, csv_path, "--job", tmp_path / "bank.job.toml") == 13
    err = capsys.readouterr().err
    assert "No space left on device" in err and "nothing was written" in err
    assert listing(tmp_path) == ["bank.csv"]  # no schema, no temporary file


def test_a_failed_second_write_with_overwrite_restores_the_first(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    csv_path = bank_csv(tmp_path)
    schema, job = tmp_path / "bank.schema.json", tmp_path / "bank.job.toml"
    schema.write_text("old schema\n")
    job.write_text("old job\n")
    _fail_on(monkeypatch, ".job.toml")
    assert run(monkeypatch, csv_path, "--job", job, "--overwrite") == 13
    assert (schema.read_text(), job.read_text()) == ("old schema\n", "old job\n")
    assert listing(tmp_path) == ["bank.csv", "bank.job.toml", "bank.schema.json"]


@pytest.mark.parametrize(
    ("label", "why"),
    [
        (lambda i: "" if i % 10 == 0 else ("yes" if i % 4 == 0 else "no"), "4 of 40 rows"),
        (lambda i: "no", "holds only 'no'"),
    ],
    ids=["label-missing", "one-class"],
)
def test_an_unusable_label_named_y_exits_11_and_writes_nothing(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    label: object,
    why: str,
) -> None:
    csv_path = bank_csv(tmp_path, label)
    job = tmp_path / "bank.job.toml"
    assert run(monkeypatch, csv_path, "--ignore", "duration", "--job", job) == 11
    err = capsys.readouterr().err
    assert "SchemaError" in err and "column 'y' is named like the label" in err and why in err
    assert "--label COLUMN" in err
    assert listing(tmp_path) == ["bank.csv"]
    # Choosing the label by hand is the way out the message names.
    assert run(monkeypatch, csv_path, "--ignore", "duration", "--label", "default") == 0
    assert load_schema(tmp_path / "bank.schema.json").label_column == "default"


def test_a_missing_schema_hint_names_both_commands(tmp_path: Path) -> None:
    job = tmp_path / "j.toml"
    job.write_text('name = "j"\ntask = "segmentation"\npurpose = "p"\nschema = "gone.json"\n')
    with pytest.raises(JobSpecError) as info:
        load_job_spec(job)
    assert "`fedcollab data schema`" in info.value.hint
    assert "`fedcollab data split`" in info.value.hint


def test_a_file_with_one_class_is_drafted_with_the_other_value_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    csv_path = bank_csv(tmp_path, label=lambda _i: "yes")  # every customer bought
    assert run(monkeypatch, csv_path, "--ignore", "duration") != 0
    err = capsys.readouterr().err
    assert "holds only 'yes'" in err and "--negative VALUE" in err
    assert listing(tmp_path) == ["bank.csv"]
    assert run(monkeypatch, csv_path, "--ignore", "duration", "--negative", "no") == 0
    schema = load_schema(tmp_path / "bank.schema.json")
    assert schema.label_column == "y" and schema.label_values is not None
    assert schema.label_values.true == ("yes",) and schema.label_values.false == ("no",)
