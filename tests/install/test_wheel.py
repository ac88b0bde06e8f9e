"""The built wheel: one import name, the sample data inside, usable from any folder.

Issue 17's packaging contract: ``pip install .`` (non-editable) installs only
``fedcollab`` (no generic top-level names such as ``common`` or ``client``, no
``experiments``, no ``tests``), ships the sample data the CLI defaults to, and
``fedcollab example`` + ``fedcollab run`` work from a folder that is not a clone, and
so does the demo's set-up (its partners from the installed data; the whole demo takes
half an hour, so the test stops before the federation starts).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Built from a copy: setuptools writes build/ and *.egg-info into the source tree,
    # and a stale build/lib would ship files deleted since.
    source = out / "source"
    shutil.copytree(
        ROOT, source, symlinks=True,
        ignore=shutil.ignore_patterns(".git", ".venv", "build", "results", "*.egg-info",
                                      "__pycache__", ".mypy_cache", ".ruff_cache"),
    )  # fmt: skip
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(out), str(source)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    (built,) = out.glob("fedcollab-*.whl")
    return built


def test_the_wheel_installs_only_fedcollab_and_carries_the_sample_data(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"fedcollab", next(t for t in tops if t.endswith(".dist-info"))}, tops
    for shipped in (
        "fedcollab/data/online_shoppers_intention.csv",
        "fedcollab/data/online_shoppers.schema.json",
        "fedcollab/data/registry.example.json",
        "fedcollab/data/purchase.example.toml",
        "fedcollab/data/uci_credit_card_default.csv",
        "fedcollab/data/credit_default.schema.json",
        "fedcollab/client/client_app.py",
        "fedcollab/demo/run.py",
        "fedcollab/federation/simulation.py",
        "fedcollab/federation/local_federation.py",
        "fedcollab/compliance/templates/report.html.j2",
    ):
        assert shipped in names, f"{shipped} missing from the wheel"
    assert not any(n.startswith(("fedcollab/experiments", "fedcollab/tests")) for n in names)


def test_example_and_run_work_from_another_folder_with_the_installed_wheel(
    wheel: Path, tmp_path: Path
) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
         str(wheel)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # The installed copy comes first on sys.path, before the clone's editable install;
    # the clone's folders are not on the path (cwd is elsewhere).
    env = {
        **os.environ,
        "PYTHONPATH": str(target),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }

    def fedcollab(*args: str) -> subprocess.CompletedProcess[str]:
        code = "import sys; from fedcollab.cli.app import main; sys.argv[0] = 'fedcollab'; main()"
        return subprocess.run(
            [sys.executable, "-c", code, *args],
            cwd=elsewhere, env=env, capture_output=True, text=True, timeout=1200,
        )  # fmt: skip

    where = subprocess.run(
        [sys.executable, "-c", "import fedcollab; print(fedcollab.__file__)"],
        cwd=elsewhere, env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert where.startswith(str(target)), where
    made = fedcollab("example", "purchase", "--out", "ex", "--rounds", "2")
    assert made.returncode == 0, made.stderr
    assert "fedcollab run ex/purchase.toml --partners ex/partners" in made.stdout
    ran = fedcollab("run", "ex/purchase.toml", "--partners", "ex/partners", "--out", "ex/out")
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-4000:]
    assert (elsewhere / "ex" / "out" / "metrics.json").is_file()
    again = fedcollab("example", "purchase", "--out", "ex")
    assert again.returncode == 13 and "--overwrite" in again.stderr
    # `fedcollab demo` from the installed copy: the command exists, and its scenarios
    # build the brand partners and vertical parties from the installed package data.
    helped = fedcollab("demo", "--help")
    assert helped.returncode == 0 and "--no-encryption" in helped.stdout, helped.stderr
    scenario = (
        "from pathlib import Path; import fedcollab.demo.run, fedcollab.demo.horizontal as h; "
        "from fedcollab.demo.vertical import prepare_vertical; "
        "print(h.DATA_DIR); print(len(h.prepare_partners(Path('brands')))); "
        "print(len(prepare_vertical(Path('vertical'))))"
    )
    built = subprocess.run(
        [sys.executable, "-c", scenario],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    data_dir, brands, parties = built.stdout.split()
    assert data_dir.startswith(str(target)) and (brands, parties) == ("9", "3")
