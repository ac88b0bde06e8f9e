"""Tests for common.split: horizontal (column, IID, Dirichlet) and vertical splits."""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcollab.common.dataset import load_dataset
from fedcollab.common.errors import DataValidationError, FedcollabError
from fedcollab.common.schema import (
    BooleanFeature,
    CategoricalFeature,
    DatasetSchema,
    NumericFeature,
    load_schema,
)
from fedcollab.common.split import (
    SplitArgumentError,
    VerticalParty,
    assign_by_value,
    assign_dirichlet,
    assign_iid,
    choose_overlap,
    split_horizontal,
    split_vertical,
)

SCHEMA = DatasetSchema(
    dataset="shop",
    delimiter=";",
    id_column="session_id",
    label_column="Revenue",
    features=(
        NumericFeature(name="Pages"),
        NumericFeature(name="Duration"),
        CategoricalFeature(name="Region"),
        CategoricalFeature(name="Month", vocabulary=("Feb", "Mar")),
        BooleanFeature(name="Weekend"),
    ),
)
# No id column: the source is split with id_from_row_number=True.
SOURCE_HEADER = ["Pages", "Duration", "Region", "Month", "Weekend", "Revenue"]


def make_source(tmp_path: Path, n_rows: int = 40, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path = tmp_path / "source.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh, delimiter=";", lineterminator="\n")
        writer.writerow(SOURCE_HEADER)
        for i in range(n_rows):
            writer.writerow(
                [
                    i,
                    f"{rng.uniform(0, 100):.3f}",
                    [1, 2, 10][i % 3],
                    ["Feb", "Mar"][i % 2],
                    ["TRUE", "FALSE"][i % 4 == 0],
                    ["TRUE", "FALSE"][int(rng.uniform() < 0.7)],
                ]
            )
    return path


def read_rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as fh:
        return list(csv.reader(fh, delimiter=";"))


# --- pure assignment functions --------------------------------------------------------------


def test_assign_by_value_sorts_numbers_numerically() -> None:
    groups = assign_by_value(["10", "2", "1", "2", "x"])
    assert list(groups) == ["1", "2", "10", "x"]
    assert groups["2"].tolist() == [1, 3]


@given(n_rows=st.integers(1, 300), n_partners=st.integers(1, 12), seed=st.integers(0, 999))
def test_assign_iid_partitions_evenly(n_rows: int, n_partners: int, seed: int) -> None:
    if n_rows < n_partners:
        with pytest.raises(SplitArgumentError):
            assign_iid(n_rows, n_partners, seed=seed)
        return
    parts = assign_iid(n_rows, n_partners, seed=seed)
    assert len(parts) == n_partners
    assert sorted(np.concatenate(parts).tolist()) == list(range(n_rows))
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


@given(
    labels=st.lists(st.sampled_from([0.0, 1.0]), min_size=1, max_size=200),
    n_partners=st.integers(1, 10),
    alpha=st.floats(0.01, 100),
    seed=st.integers(0, 999),
)
def test_assign_dirichlet_partitions_and_no_partner_is_empty(
    labels: list[float], n_partners: int, alpha: float, seed: int
) -> None:
    if len(labels) < n_partners:
        return
    parts = assign_dirichlet(np.array(labels), n_partners, alpha=alpha, seed=seed)
    assert len(parts) == n_partners
    assert all(len(p) > 0 for p in parts)
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(labels)))


def test_assign_dirichlet_small_alpha_skews_labels() -> None:
    labels = np.array([0.0] * 500 + [1.0] * 500)
    skewed = assign_dirichlet(labels, 5, alpha=0.05, seed=1)
    even = assign_dirichlet(labels, 5, alpha=1000, seed=1)

    def spread(parts: list[np.ndarray]) -> float:
        return float(np.std([labels[p].mean() for p in parts]))

    assert spread(skewed) > 0.2 > 0.05 > spread(even)


def test_assign_dirichlet_rejects_bad_alpha() -> None:
    with pytest.raises(SplitArgumentError):
        assign_dirichlet(np.zeros(10), 2, alpha=0)


@given(n_rows=st.integers(1, 500), overlap=st.floats(0.001, 1.0), seed=st.integers(0, 99))
def test_choose_overlap_respects_fraction(n_rows: int, overlap: float, seed: int) -> None:
    idx = choose_overlap(n_rows, overlap, rng=np.random.default_rng(seed))
    assert len(idx) == max(1, round(overlap * n_rows))
    assert abs(len(idx) - overlap * n_rows) <= max(0.5, 1 - overlap * n_rows)
    assert len(set(idx.tolist())) == len(idx) and np.all(np.diff(idx) > 0)
    assert idx.min() >= 0 and idx.max() < n_rows


# --- horizontal ---------------------------------------------------------------------------


def test_split_by_column(tmp_path: Path) -> None:
    source = make_source(tmp_path)
    partners = split_horizontal(
        source, SCHEMA, tmp_path / "out", mode="column", by_column="Region", id_from_row_number=True
    )
    assert [p.name for p in partners] == ["region-1", "region-2", "region-10"]
    for p in partners:
        assert p.csv == tmp_path / "out" / f"{p.name}.csv"
        assert p.schema == tmp_path / "out" / f"{p.name}.schema.json"
        schema = load_schema(p.schema)
        assert schema.dataset == p.name
        assert schema.fingerprint() == SCHEMA.fingerprint()
        ds = load_dataset(p.csv, schema)
        assert ds.n_rows == p.n_rows
        assert set(ds.categorical["Region"].tolist()) == {p.name.removeprefix("region-")}
        assert read_rows(p.csv)[0] == ["session_id", *SOURCE_HEADER]
    assert sum(p.n_rows for p in partners) == 40


def test_split_copies_values_verbatim(tmp_path: Path) -> None:
    source = make_source(tmp_path)
    partners = split_horizontal(
        source, SCHEMA, tmp_path / "out", mode="iid", n_partners=3, id_from_row_number=True
    )
    original = read_rows(source)[1:]
    for p in partners:
        for row in read_rows(p.csv)[1:]:
            number = int(row[0].removeprefix("s"))
            assert row[1:] == original[number - 1]


def test_iid_is_deterministic(tmp_path: Path) -> None:
    source = make_source(tmp_path)

    def run(out: str, seed: int) -> list[bytes]:
        partners = split_horizontal(
            source,
            SCHEMA,
            tmp_path / out,
            mode="iid",
            n_partners=4,
            seed=seed,
            id_from_row_number=True,
        )
        return [p.csv.read_bytes() for p in partners]

    assert run("a", 1) == run("b", 1)
    assert run("a2", 1) != run("c", 2)


def test_dirichlet_names_and_prefix(tmp_path: Path) -> None:
    partners = split_horizontal(
        make_source(tmp_path),
        SCHEMA,
        tmp_path / "out",
        mode="dirichlet",
        n_partners=4,
        alpha=0.1,
        prefix="shop",
        id_from_row_number=True,
    )
    assert [p.name for p in partners] == ["shop-1", "shop-2", "shop-3", "shop-4"]
    assert all(p.n_rows > 0 for p in partners)


def test_source_with_ids_is_split_as_is(tmp_path: Path) -> None:
    path = tmp_path / "with_ids.csv"
    path.write_text("session_id;" + ";".join(SOURCE_HEADER) + "\n" + "a1;1;1;1;Feb;true;false\n")
    [partner] = split_horizontal(path, SCHEMA, tmp_path / "out", mode="iid", n_partners=1)
    assert load_dataset(partner.csv, SCHEMA).ids.tolist() == ["a1"]


def test_invalid_source_writes_nothing(tmp_path: Path) -> None:
    source = make_source(tmp_path)
    lines = source.read_text().splitlines()
    lines[7] = lines[7].replace("Feb", "Jan").replace("Mar", "Jan")
    source.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataValidationError) as info:
        split_horizontal(
            source, SCHEMA, tmp_path / "out", mode="iid", n_partners=2, id_from_row_number=True
        )
    assert (info.value.row, info.value.column) == (8, "Month")
    assert not (tmp_path / "out").exists()


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    source = make_source(tmp_path)
    out = tmp_path / "out"
    split_horizontal(source, SCHEMA, out, mode="iid", n_partners=2, id_from_row_number=True)
    with pytest.raises(FedcollabError, match="already exists") as info:
        split_horizontal(source, SCHEMA, out, mode="iid", n_partners=2, id_from_row_number=True)
    assert "--overwrite" in info.value.hint
    split_horizontal(
        source, SCHEMA, out, mode="iid", n_partners=2, id_from_row_number=True, overwrite=True
    )


def test_more_partners_than_rows(tmp_path: Path) -> None:
    source = make_source(tmp_path, n_rows=3)
    with pytest.raises(DataValidationError, match="only 3 data rows") as info:
        split_horizontal(
            source, SCHEMA, tmp_path / "out", mode="iid", n_partners=5, id_from_row_number=True
        )
    assert info.value.file == str(source) and info.value.hint


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"mode": "column"}, "by_column"),
        ({"mode": "column", "by_column": "Nope"}, "not a feature"),
        ({"mode": "column", "by_column": "Region", "n_partners": 2}, "no n_partners"),
        ({"mode": "iid"}, "takes n_partners"),
        ({"mode": "iid", "n_partners": 2, "prefix": "a b"}, "prefix"),
        ({"mode": "iid", "n_partners": 0}, "at least 1"),
    ],
)
def test_horizontal_argument_errors(
    tmp_path: Path, kwargs: dict[str, object], fragment: str
) -> None:
    with pytest.raises(SplitArgumentError, match=fragment):
        split_horizontal(
            make_source(tmp_path), SCHEMA, tmp_path / "out", id_from_row_number=True, **kwargs
        )  # type: ignore[arg-type]


def test_dirichlet_needs_a_label(tmp_path: Path) -> None:
    schema = SCHEMA.model_copy(update={"label_column": None})
    with pytest.raises(SplitArgumentError, match="label_column"):
        split_horizontal(
            make_source(tmp_path), schema, tmp_path / "o", mode="dirichlet", n_partners=2
        )


@settings(max_examples=25, deadline=None)
@given(
    n_rows=st.integers(1, 60),
    n_partners=st.integers(1, 6),
    mode=st.sampled_from(["iid", "dirichlet"]),
    seed=st.integers(0, 99),
)
def test_horizontal_files_partition_the_rows(
    n_rows: int, n_partners: int, mode: str, seed: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        source = make_source(tmp_path, n_rows=n_rows, seed=seed)
        if n_rows < n_partners:
            return
        partners = split_horizontal(
            source,
            SCHEMA,
            tmp_path / "out",
            mode=mode,
            n_partners=n_partners,  # type: ignore[arg-type]
            seed=seed,
            id_from_row_number=True,
        )
        ids = [i for p in partners for i in load_dataset(p.csv, SCHEMA).ids.tolist()]
        assert sorted(ids) == [f"s{i:06d}" for i in range(1, n_rows + 1)]


# --- vertical -----------------------------------------------------------------------------

PARTIES = (
    VerticalParty("platform", ("Region", "Month"), overlap=1.0, has_label=True),
    VerticalParty("traffic", ("Pages", "Duration"), overlap=0.6),
    VerticalParty("calendar", ("Weekend",), overlap=0.25),
)


def test_split_vertical(tmp_path: Path) -> None:
    source = make_source(tmp_path)
    parties = split_vertical(
        source, SCHEMA, tmp_path / "v", parties=PARTIES, seed=3, id_from_row_number=True
    )
    assert [p.name for p in parties] == ["platform", "traffic", "calendar"]
    assert [p.n_rows for p in parties] == [40, 24, 10]
    original = read_rows(source)[1:]
    for spec, p in zip(PARTIES, parties, strict=True):
        schema = load_schema(p.schema)
        assert schema.dataset == spec.name
        assert schema.feature_names == spec.columns
        assert schema.label_column == ("Revenue" if spec.has_label else None)
        header, *rows = read_rows(p.csv)
        assert header == ["session_id", *spec.columns, *(["Revenue"] if spec.has_label else [])]
        ds = load_dataset(p.csv, schema)
        assert ds.n_rows == p.n_rows
        for row in rows:  # values are the source's, aligned by id
            source_row = dict(zip(SOURCE_HEADER, original[int(row[0][1:]) - 1], strict=True))
            assert row[1:] == [source_row[c] for c in header[1:]]


def test_vertical_keeps_source_header_order(tmp_path: Path) -> None:
    parties = (VerticalParty("p", ("Month", "Pages"), has_label=True),)
    [p] = split_vertical(
        make_source(tmp_path), SCHEMA, tmp_path / "v", parties=parties, id_from_row_number=True
    )
    assert read_rows(p.csv)[0] == ["session_id", "Pages", "Month", "Revenue"]


def test_vertical_party_rows_do_not_depend_on_other_parties(tmp_path: Path) -> None:
    source = make_source(tmp_path)
    a = split_vertical(source, SCHEMA, tmp_path / "a", parties=PARTIES, id_from_row_number=True)
    b = split_vertical(source, SCHEMA, tmp_path / "b", parties=PARTIES[:2], id_from_row_number=True)
    assert a[1].csv.read_bytes() == b[1].csv.read_bytes()


@pytest.mark.parametrize(
    ("parties", "fragment"),
    [
        ((), "at least one party"),
        ((VerticalParty("x", ("Nope",), has_label=True),), "'Nope' is not a feature"),
        ((VerticalParty("x", ("Pages",)),), "exactly one party must hold the label"),
        (
            (VerticalParty("x", ("Pages",), has_label=True), VerticalParty("y", ("Pages",))),
            "given to both",
        ),
        (
            (VerticalParty("x", ("Pages",), has_label=True), VerticalParty("x", ("Month",))),
            "used twice",
        ),
        ((VerticalParty("x y", ("Pages",), has_label=True),), "must match"),
        ((VerticalParty("x", ("Pages",), overlap=0, has_label=True),), "overlap"),
        ((VerticalParty("x", ("Pages",), overlap=1.5, has_label=True),), "overlap"),
        ((VerticalParty("x", (), has_label=True), VerticalParty("y", ())), "neither columns"),
    ],
)
def test_vertical_party_errors(
    tmp_path: Path, parties: tuple[VerticalParty, ...], fragment: str
) -> None:
    with pytest.raises(SplitArgumentError, match=fragment):
        split_vertical(make_source(tmp_path), SCHEMA, tmp_path / "v", parties=parties)


def test_vertical_label_only_party(tmp_path: Path) -> None:
    parties = (VerticalParty("issuer", (), has_label=True), VerticalParty("x", ("Pages",), 0.5))
    issuer, _ = split_vertical(
        make_source(tmp_path), SCHEMA, tmp_path / "v", parties=parties, id_from_row_number=True
    )
    assert read_rows(issuer.csv)[0] == ["session_id", "Revenue"]
    assert load_schema(issuer.schema).features == ()


def test_vertical_without_label_in_schema(tmp_path: Path) -> None:
    schema = SCHEMA.model_copy(update={"label_column": None})
    with pytest.raises(SplitArgumentError, match="no party can hold the label"):
        split_vertical(make_source(tmp_path), schema, tmp_path / "v", parties=PARTIES)


@settings(max_examples=20, deadline=None)
@given(
    n_rows=st.integers(1, 80),
    overlaps=st.lists(st.floats(0.01, 1.0), min_size=3, max_size=3),
    seed=st.integers(0, 99),
)
def test_vertical_overlap_within_rounding(n_rows: int, overlaps: list[float], seed: int) -> None:
    parties = [
        VerticalParty(p.name, p.columns, overlap=o, has_label=p.has_label)
        for p, o in zip(PARTIES, overlaps, strict=True)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        source = make_source(tmp_path, n_rows=n_rows, seed=seed)
        written = split_vertical(
            source, SCHEMA, tmp_path / "v", parties=parties, seed=seed, id_from_row_number=True
        )
        all_ids = {f"s{i:06d}" for i in range(1, n_rows + 1)}
        for party, files in zip(parties, written, strict=True):
            ids = load_dataset(files.csv, load_schema(files.schema)).ids.tolist()
            assert set(ids) <= all_ids
            assert abs(len(ids) - party.overlap * n_rows) <= 0.5 or len(ids) == 1


def test_ignored_columns_are_not_copied_to_partners(tmp_path: Path) -> None:
    source = tmp_path / "bank.csv"
    rows = [f"{i};{'yes' if i % 3 else 'no'};secret-{i}" for i in range(12)]
    source.write_text("Pages;y;notes\n" + "\n".join(rows) + "\n", encoding="utf-8")
    schema = DatasetSchema(
        dataset="bank",
        delimiter=";",
        id_column="row",
        label_column="y",
        label_values={"true": ["yes"], "false": ["no"]},  # type: ignore[arg-type]
        features=(NumericFeature(name="Pages"),),
        ignore_columns=("notes",),
    )
    partners = split_horizontal(
        source, schema, tmp_path / "out", mode="iid", n_partners=2, id_from_row_number=True
    )
    for p in partners:
        assert read_rows(p.csv)[0] == ["row", "Pages", "y"]
        assert "secret" not in p.csv.read_text(encoding="utf-8")
        partner_schema = load_schema(p.schema)
        assert partner_schema.ignore_columns == ()
        assert partner_schema.fingerprint() == schema.fingerprint()
        ds = load_dataset(p.csv, partner_schema)
        assert ds.labels is not None and set(ds.labels.tolist()) <= {0.0, 1.0}


def test_partner_names_from_values_are_clean(tmp_path: Path) -> None:
    source = tmp_path / "jobs.csv"
    values = ["admin.", "blue collar", "self-employed", "admin.", "blue collar", "self-employed"]
    source.write_text("job;y\n" + "".join(f"{v};1\n" for v in values), encoding="utf-8")
    schema = DatasetSchema(
        dataset="jobs",
        delimiter=";",
        id_column="id",
        label_column="y",
        features=(CategoricalFeature(name="job"),),
    )
    partners = split_horizontal(
        source, schema, tmp_path / "out", mode="column", by_column="job", id_from_row_number=True
    )
    assert [p.name for p in partners] == ["job-admin", "job-blue-collar", "job-self-employed"]
    assert sorted(f.name for f in (tmp_path / "out").glob("*.csv")) == [
        "job-admin.csv",
        "job-blue-collar.csv",
        "job-self-employed.csv",
    ]


def test_values_that_slug_alike_are_refused(tmp_path: Path) -> None:
    source = tmp_path / "jobs.csv"
    source.write_text("job;y\nadmin.;1\nadmin;0\n", encoding="utf-8")
    schema = DatasetSchema(
        dataset="jobs",
        delimiter=";",
        id_column="id",
        label_column="y",
        features=(CategoricalFeature(name="job"),),
    )
    with pytest.raises(DataValidationError, match="same partner name"):
        split_horizontal(
            source, schema, tmp_path / "o", mode="column", by_column="job", id_from_row_number=True
        )
