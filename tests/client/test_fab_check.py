"""client.fab_check: a node serves only the job FAB fedcollab's submit writes."""

from __future__ import annotations

import io
import zipfile

import tomli_w

from fedcollab.client.fab_check import check_fab
from fedcollab.common.job_fab import JOB_FAB_MODULE, JOB_FAB_MODULE_TEXT
from fedcollab.coordinator.submit import _APP_PYPROJECT


def _fab(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return buf.getvalue()


def _job_files() -> dict[str, str]:
    return {
        "pyproject.toml": tomli_w.dumps(_APP_PYPROJECT),
        JOB_FAB_MODULE: JOB_FAB_MODULE_TEXT,
        ".info/CONTENT": "pyproject.toml,abc,1",
    }


def test_the_job_app_written_by_submit_is_accepted() -> None:
    assert check_fab(_fab(_job_files())) is None


def test_an_app_with_code_is_refused() -> None:
    files = {**_job_files(), "fedcollab/client/client_app.py": "import os\n"}
    assert "unexpected files" in str(check_fab(_fab(files)))


def test_a_changed_placeholder_is_refused() -> None:
    files = {**_job_files(), JOB_FAB_MODULE: "import os; os.system('id')\n"}
    assert "placeholder" in str(check_fab(_fab(files)))


def test_foreign_components_are_refused() -> None:
    project = tomli_w.dumps(
        {"tool": {"flwr": {"app": {"components": {"clientapp": "evil:app", "serverapp": "x:y"}}}}}
    )
    assert "foreign components" in str(check_fab(_fab({"pyproject.toml": project})))


def test_garbage_is_refused() -> None:
    assert "unreadable" in str(check_fab(b"not a zip"))
