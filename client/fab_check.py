"""Whether a run's FAB is exactly a fedcollab job FAB: the node serves no other run.

The node executor (:mod:`client.node_runtime`) never imports code from a FAB: it always
calls the ClientApp installed on the partner's machine. :func:`check_fab` decides
whether the run is served at all: the FAB must hold only the ``pyproject.toml``
written by ``coordinator/submit.py`` naming fedcollab's components, the placeholder
module and Flower's ``.info/CONTENT``; anything else is refused (an error reply and a
``run.refused`` event in the partner's own audit trail).
"""

from __future__ import annotations

import io
import json
import tomllib
import zipfile

from fedcollab.common.job_fab import (
    CLIENTAPP_REF,
    JOB_FAB_MODULE,
    JOB_FAB_MODULE_TEXT,
    SERVERAPP_REF,
)

__all__ = ["check_fab"]

_FAB_FILES = {"pyproject.toml", JOB_FAB_MODULE, ".info/CONTENT"}


def check_fab(content: bytes) -> str | None:
    """Why this FAB is not a fedcollab job FAB (None: it is one).

    The FAB's code is never run either way; this decides whether the run is
    served at all.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as zf:
            names = set(zf.namelist())
            extra = sorted(names - _FAB_FILES)
            if extra:
                return f"unexpected files in the app: {', '.join(extra[:5])}"
            if "pyproject.toml" not in names:
                return "the app has no pyproject.toml"
            project = tomllib.loads(zf.read("pyproject.toml").decode())
            module = zf.read(JOB_FAB_MODULE).decode() if JOB_FAB_MODULE in names else None
    except (zipfile.BadZipFile, UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError) as exc:
        return f"unreadable app archive: {type(exc).__name__}"
    components = project.get("tool", {}).get("flwr", {}).get("app", {}).get("components", {})
    if components != {"serverapp": SERVERAPP_REF, "clientapp": CLIENTAPP_REF}:
        return f"foreign components {json.dumps(components, sort_keys=True)[:200]}"
    if module is not None and module != JOB_FAB_MODULE_TEXT:
        return f"{JOB_FAB_MODULE} is not the fedcollab placeholder"
    return None
