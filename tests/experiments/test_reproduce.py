"""experiments.reproduce: one command writes every JSON, every figure and the README block.

The end-to-end test runs ``--quick`` (tiny sizes, no deployments) once, from an
empty folder, in a subprocess like ``make experiments``; it asserts what was
written, never how fast (benchmarks are not tests).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from matplotlib.image import imread

from experiments import reproduce
from experiments.figures import FIGURES
from experiments.readme_block import BEGIN, END, ReadmeMarkerError, replace_block, rewrite_readme
from experiments.studies import MANIFEST, STUDIES, by_name

ROOT = Path(__file__).resolve().parents[2]
#: The quick run starts Ray for a dozen simulation jobs: 9+ minutes on a busy 2-core machine.
pytestmark = pytest.mark.timeout(1800)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _readme(tmp: Path) -> Path:
    path = tmp / "README.md"
    path.write_bytes((ROOT / "README.md").read_bytes())
    return path


def _outside(text: str) -> tuple[str, str]:
    head, rest = text.split(BEGIN, 1)
    return head, rest.split(END, 1)[1]


@dataclass(frozen=True)
class QuickRun:
    out: Path
    figs: Path
    readme: Path
    argv: list[str]
    started: float


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> QuickRun:
    tmp = tmp_path_factory.mktemp("reproduce")
    readme = _readme(tmp)
    out, figs = tmp / "out", tmp / "figs"
    argv = ["--quick", "--out", str(out), "--figures", str(figs), "--readme", str(readme)]
    started = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.reproduce", *argv],
        cwd=ROOT, capture_output=True, text=True, timeout=1800,
        env={**os.environ, "COLUMNS": "160"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return QuickRun(out, figs, readme, argv, started)


def test_quick_run_writes_every_json(quick_run: QuickRun) -> None:
    out = quick_run.out
    quick = [s for s in STUDIES if s.quick_args is not None and not s.optional]
    for study in quick:
        doc = json.loads((out / study.json_name).read_text())
        assert doc, study.name
    manifest = json.loads((out / MANIFEST).read_text())["studies"]
    assert sorted(manifest) == sorted(s.name for s in quick)
    command = ["python", "-m", "experiments.reproduce", *quick_run.argv]
    assert all(entry["command"] == command for entry in manifest.values())
    assert all(entry["status"] in ("ok", "checks not met") for entry in manifest.values())


def test_quick_run_draws_every_figure_fresh(quick_run: QuickRun) -> None:
    figs = quick_run.figs
    assert sorted(p.name for p in figs.iterdir()) == sorted(f"{f.name}.png" for f in FIGURES)
    for figure in FIGURES:
        path = figs / f"{figure.name}.png"
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        assert path.stat().st_mtime >= quick_run.started
        height, width = imread(path).shape[:2]
        assert height > 200 and width > 400


def test_quick_run_rewrites_only_the_block(quick_run: QuickRun) -> None:
    readme = quick_run.readme
    original = (ROOT / "README.md").read_text(encoding="utf-8")
    new = readme.read_text(encoding="utf-8")
    assert _outside(new) == _outside(original)
    block = new.split(BEGIN, 1)[1].split(END, 1)[0]
    for figure in FIGURES:
        assert f"(figs/{figure.name}.png)" in block
    command = " ".join(["python -m experiments.reproduce", *quick_run.argv])
    for study in STUDIES:
        if study.quick_args is not None and not study.optional:
            assert f"| `{study.name}` (" in block
    # every study run says which command produced it; the deployments were not run
    assert block.count(f"`{command}`") == sum(
        1 for s in STUDIES if s.quick_args is not None and not s.optional
    )
    assert "| `bench_he_deployment` | not run" in block


def test_a_readme_without_markers_is_refused_untouched(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    text = (ROOT / "README.md").read_bytes().replace(END.encode(), b"")
    readme.write_bytes(text)
    argv = ["--from-json", "--out", str(tmp_path / "out"), "--figures", str(tmp_path / "f")]
    code = reproduce.main([*argv, "--readme", str(readme)])
    assert code == ReadmeMarkerError.exit_code
    assert readme.read_bytes() == text
    assert not (tmp_path / "f").exists()  # refused before anything ran or was drawn
    with pytest.raises(ReadmeMarkerError) as info:
        rewrite_readme(readme, "block")
    assert END in info.value.diagnostics() and "--no-readme" in info.value.hint
    assert readme.read_bytes() == text


@pytest.mark.parametrize(
    "text",
    [
        "no markers",
        f"{END}\nreversed\n{BEGIN}\n",
        f"{BEGIN}\n{BEGIN}\ntwice\n{END}\n",
    ],
)
def test_malformed_markers_raise(text: str) -> None:
    with pytest.raises(ReadmeMarkerError):
        replace_block(text, "x")


def test_replace_block_keeps_every_byte_outside() -> None:
    text = f"# T\r\n\r\nbefore\r\n{BEGIN}\r\nold\r\n{END}\r\nafter \u00e9\r\n"
    new = replace_block(text, "new\nrows\n")
    assert new == f"# T\r\n\r\nbefore\r\n{BEGIN}\nnew\nrows\n{END}\r\nafter \u00e9\r\n"
    assert replace_block(new, "new\nrows") == new  # idempotent


def test_selection() -> None:
    default = [s.name for s in reproduce.select([], [], with_audit=False)]
    assert "bench_audit" not in default and default[0] == "horizontal"
    assert len(default) == len(STUDIES) - 1
    assert [
        s.name for s in reproduce.select(["bench_audit", "vertical"], [], with_audit=False)
    ] == [
        "vertical",
        "bench_audit",
    ]
    skipped = reproduce.select([], ["bench_psi"], with_audit=True)
    assert "bench_psi" not in {s.name for s in skipped} and "bench_audit" in {
        s.name for s in skipped
    }
    with pytest.raises(KeyError):
        by_name("nope")
    with pytest.raises(SystemExit):
        reproduce.main(["--only", "nope", "--no-readme"])


def test_a_quick_run_leaves_the_published_results_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    readme = _readme(tmp_path)
    before = readme.read_bytes()
    assert reproduce.main(["--quick", "--from-json"]) == 0
    assert readme.read_bytes() == before
    assert not (tmp_path / "docs").exists() and not (tmp_path / "results/experiments").exists()
    assert (tmp_path / "results/experiments-quick").is_dir()


def test_a_fresh_clone_keeps_the_rows_it_has_no_json_for(tmp_path: Path) -> None:
    """Results are not committed: a run on a new machine must not wipe measured rows."""
    readme = _readme(tmp_path)
    original = readme.read_text(encoding="utf-8")
    argv = ["--from-json", "--out", str(tmp_path / "none"), "--figures", str(tmp_path / "f")]
    assert reproduce.main([*argv, "--readme", str(readme)]) == 0
    old_block = original.split(BEGIN, 1)[1].split(END, 1)[0]
    new_block = readme.read_text(encoding="utf-8").split(BEGIN, 1)[1].split(END, 1)[0]
    old_rows = {
        line[: line.index("` ") + 1]: line
        for line in old_block.splitlines()
        if line.startswith("| `") and "` " in line
    }
    for line in new_block.splitlines():
        if "not run: no `" in line:  # never in place of a row the README had measured
            prefix = line[: line.index("` ") + 1]
            assert "not run: no `" in old_rows.get(prefix, "not run: no `"), line
    for line in old_block.splitlines():
        if line.startswith(("| `", "![")) and "not run: no `" not in line:
            assert line in new_block.splitlines(), line


def test_a_failed_rerun_keeps_the_published_row_and_says_so(tmp_path: Path) -> None:
    from experiments.readme_block import render_block
    from experiments.studies import StudyRun

    readme = _readme(tmp_path)
    old_block = readme.read_text(encoding="utf-8").split(BEGIN, 1)[1].split(END, 1)[0]
    old_row = next(r for r in old_block.splitlines() if r.startswith("| `privacy_utility` ("))
    failed = StudyRun(
        study="privacy_utility", command=["python"], module_command=["python"], status="failed",
        error="RuntimeError: Ray did not start", started_utc="", wall_time_s=1.0,
        loadavg_at_start=[0.0], loadavg_at_end=[0.0], cpus=2, json="x.json", json_sha256=None,
    )  # fmt: skip
    block = render_block(
        {}, {"privacy_utility": failed}, {}, readme=readme, out=tmp_path, keep_missing=True
    )
    row = next(r for r in block.splitlines() if r.startswith("| `privacy_utility` ("))
    assert row.startswith(old_row.rsplit(" | ", 2)[0].split(" | ")[0])
    assert "latest rerun failed (RuntimeError: Ray did not start); this row is older" in row
    assert row.split(" | ")[2:] == old_row.split(" | ")[2:]  # command and cost unchanged
    assert "2-core machine" in block
