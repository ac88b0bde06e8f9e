"""Tests for ``fedcollab data``: validate and split, run through ``cli.app.main``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest

from fedcollab.cli.app import main
from fedcollab.cli.data import parse_party
from fedcollab.common.dataset import load_dataset
from fedcollab.common.schema import DatasetSchema, NumericFeature, load_schema

REPO = Path(__file__).resolve().parents[2]
SCHEMA = {
    "version": 1,
    "dataset": "shop",
    "delimiter": ",",
    "id_column": "id",
    "label_column": "y",
    "features": [
        {"name": "x", "type": "numeric", "missing": "mean"},
        {"name": "region", "type": "categorical", "vocabulary": None, "missing": "category"},
        {"name": "w", "type": "boolean", "missing": "forbid"},
    ],
}
ROWS = ["id,x,region,w,y", *(f"r{i},{i},{i % 3},{i % 2},{int(i % 4 == 0)}" for i in range(1, 31))]


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    csv_path = tmp_path / "shop.csv"
    csv_path.write_text("\n".join(ROWS) + "\n")
    schema_path = tmp_path / "shop.schema.json"
    schema_path.write_text(json.dumps(SCHEMA))
    return csv_path, schema_path


def run(monkeypatch: pytest.MonkeyPatch, *args: str | Path) -> int:
    monkeypatch.setattr(sys, "argv", ["fedcollab", "data", *map(str, args)])
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_validate_ok(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], files: tuple[Path, Path]
) -> None:
    csv_path, schema_path = files
    assert run(monkeypatch, "validate", csv_path, "--schema", schema_path) == 0
    out = capsys.readouterr().out
    assert "valid" in out and "30 rows" in out
    assert "positive rate 23.3%" in out
    assert load_schema(schema_path).fingerprint() in out
    assert "region" in out and "3 distinct" in out


def test_validate_bad_data_exits_10(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], files: tuple[Path, Path]
) -> None:
    csv_path, schema_path = files
    lines = list(ROWS)
    lines[5] = "r5,5,2,maybe,0"
    csv_path.write_text("\n".join(lines) + "\n")
    assert run(monkeypatch, "validate", csv_path, "--schema", schema_path) == 10
    err = capsys.readouterr().err
    assert "DataValidationError" in err and "row 6" in err and "'w'" in err
    assert "What to do:" in err


def test_validate_bad_schema_exits_11(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], files: tuple[Path, Path]
) -> None:
    csv_path, schema_path = files
    schema_path.write_text(json.dumps({**SCHEMA, "delimiter": ":"}))
    assert run(monkeypatch, "validate", csv_path, "--schema", schema_path) == 11
    assert "delimiter" in capsys.readouterr().err


def test_validate_generated_ids(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, files: tuple[Path, Path]
) -> None:
    _, schema_path = files
    no_ids = tmp_path / "no_ids.csv"
    no_ids.write_text("\n".join(line.split(",", 1)[1] for line in ROWS) + "\n")
    assert run(monkeypatch, "validate", no_ids, "--schema", schema_path) == 10
    args = ("validate", no_ids, "--schema", schema_path, "--id-from-row-number")
    assert run(monkeypatch, *args) == 0


def test_split_horizontal_by_column(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], files: tuple[Path, Path]
) -> None:
    csv_path, schema_path = files
    out = csv_path.parent / "out"
    args = ("split", "horizontal", csv_path, "--schema", schema_path, "--out", out)
    assert run(monkeypatch, *args, "--by", "region") == 0
    assert sorted(p.name for p in out.glob("*.csv")) == [
        "region-0.csv",
        "region-1.csv",
        "region-2.csv",
    ]
    assert "3 partners" in capsys.readouterr().out
    # A second run refuses to overwrite (root FedcollabError: exit 1) unless asked to.
    assert run(monkeypatch, *args, "--by", "region") == 1
    assert "--overwrite" in capsys.readouterr().err
    assert run(monkeypatch, *args, "--by", "region", "--overwrite") == 0


@pytest.mark.parametrize("mode", [["--iid", "4"], ["--dirichlet", "4", "--alpha", "0.3"]])
def test_split_horizontal_n_partners(
    monkeypatch: pytest.MonkeyPatch, files: tuple[Path, Path], mode: list[str]
) -> None:
    csv_path, schema_path = files
    out = csv_path.parent / "out"
    args = ("split", "horizontal", csv_path, "-s", schema_path, "-o", out, *mode, "--seed", "7")
    assert run(monkeypatch, *args, "--prefix", "shop") == 0
    ids = []
    for i in range(1, 5):
        ds = load_dataset(out / f"shop-{i}.csv", load_schema(out / f"shop-{i}.schema.json"))
        ids.extend(ds.ids.tolist())
    assert sorted(ids) == sorted(f"r{i}" for i in range(1, 31))


@pytest.mark.parametrize(
    "options",
    [
        [],
        ["--by", "region", "--iid", "2"],
        ["--iid", "2", "--alpha", "0.5"],
        ["--dirichlet", "2", "--alpha", "0"],
        ["--iid", "0"],
        ["--by", "nope"],
    ],
)
def test_split_horizontal_usage_errors_exit_2(
    monkeypatch: pytest.MonkeyPatch, files: tuple[Path, Path], options: list[str]
) -> None:
    csv_path, schema_path = files
    out = csv_path.parent / "out"
    args = ("split", "horizontal", csv_path, "--schema", schema_path, "--out", out, *options)
    assert run(monkeypatch, *args) == 2
    assert not out.exists()


def test_split_horizontal_bad_source_exits_10(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], files: tuple[Path, Path]
) -> None:
    csv_path, schema_path = files
    csv_path.write_text(csv_path.read_text().replace(",", ";"))
    args = ("split", "horizontal", csv_path, "-s", schema_path, "-o", csv_path.parent / "o")
    assert run(monkeypatch, *args, "--iid", "2") == 10
    err = capsys.readouterr().err
    assert "row 1" in err and "semicolon" in err


def test_split_vertical(monkeypatch: pytest.MonkeyPatch, files: tuple[Path, Path]) -> None:
    csv_path, schema_path = files
    out = csv_path.parent / "v"
    args = ("split", "vertical", csv_path, "--schema", schema_path, "--out", out)
    assert run(monkeypatch, *args, "--party", "a:x,w:1.0:label", "--party", "b:reg*:0.5") == 0
    a, b = load_schema(out / "a.schema.json"), load_schema(out / "b.schema.json")
    assert a.feature_names == ("x", "w") and a.label_column == "y"
    assert b.feature_names == ("region",) and b.label_column is None
    assert load_dataset(out / "b.csv", b).n_rows == 15


@pytest.mark.parametrize(
    "party",
    [
        "a:x,w:often:label",  # not an overlap
        "a:nothing*:1.0:label",  # pattern matches nothing
        "a:x,w:1.5:label",  # overlap out of range
        "a:x,w:1.0",  # nobody holds the label
    ],
)
def test_split_vertical_usage_errors_exit_2(
    monkeypatch: pytest.MonkeyPatch, files: tuple[Path, Path], party: str
) -> None:
    csv_path, schema_path = files
    args = ("split", "vertical", csv_path, "-s", schema_path, "-o", csv_path.parent / "v")
    assert run(monkeypatch, *args, "--party", party) == 2


def test_parse_party() -> None:
    schema = DatasetSchema(
        dataset="d",
        id_column="ID",
        label_column="y",
        features=[NumericFeature(name=n) for n in ("PAY_0", "PAY_2", "PAY_AMT1", "AGE")],
    )
    party = parse_party("pay:PAY_?, PAY_AMT*,PAY_0:0.8", schema)
    assert party.name == "pay" and party.overlap == 0.8 and not party.has_label
    assert party.columns == ("PAY_0", "PAY_2", "PAY_AMT1")
    issuer = parse_party("issuer::label", schema)
    assert issuer.columns == () and issuer.has_label and issuer.overlap == 1.0
    with pytest.raises(click.BadParameter, match="matches no feature"):
        parse_party("x:BILL*", schema)


def test_console_script_end_to_end(tmp_path: Path) -> None:
    fedcollab = Path(sys.executable).parent / "fedcollab"
    result = subprocess.run(
        [
            str(fedcollab),
            "data",
            "split",
            "horizontal",
            str(REPO / "data" / "online_shoppers_intention.csv"),
            "--schema",
            str(REPO / "data" / "online_shoppers.schema.json"),
            "--out",
            str(tmp_path),
            "--by",
            "Region",
            "--id-from-row-number",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert len(list(tmp_path.glob("region-*.csv"))) == 9
    bad = subprocess.run(
        [
            str(fedcollab),
            "data",
            "validate",
            str(REPO / "data" / "online_shoppers_intention.csv"),
            "--schema",
            str(REPO / "data" / "online_shoppers.schema.json"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 10
    assert "session_id" in bad.stderr and "--id-from-row-number" in bad.stderr


def test_schema_draft_writes_a_schema_that_validates_the_file(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    csv_path = tmp_path / "bank.csv"
    rows = [
        "age,job,duration,y",
        *(f"{20 + i},j{i % 3},{i * 7},{'yes' if i % 4 else 'no'}" for i in range(20)),
    ]
    csv_path.write_text("\n".join(rows) + "\n")
    job = tmp_path / "bank.job.toml"
    assert run(monkeypatch, "schema", csv_path, "--ignore", "duration", "--job", job) == 0
    out = capsys.readouterr().out
    schema_path = tmp_path / "bank.schema.json"
    schema = load_schema(schema_path)
    assert schema.ignore_columns == ("duration",) and schema.label_column == "y"
    assert "generated from row numbers" in out
    assert f"fedcollab run {job} --csv {csv_path} --iid 3 --id-from-row-number" in out
    from fedcollab.common.jobspec import load_job_spec

    spec = load_job_spec(job)
    assert spec.task == "purchase_prediction"
    assert DatasetSchema.model_validate(spec.data_schema) == schema
    assert (
        run(monkeypatch, "validate", csv_path, "--schema", schema_path, "--id-from-row-number") == 0
    )
    # An existing schema is not overwritten by accident.
    assert run(monkeypatch, "schema", csv_path) == 13
    assert "--overwrite" in capsys.readouterr().err
