"""A partner node's state for one vertical job, kept between Flower messages.

Each request of a vertical job is a separate Flower message, possibly served after
the node restarted (and, under Flower's default isolation, by a fresh process), so a
vertical party's state (its PSI key and permutation, its aligned rows, its share of
the model, the job's CKKS keys at the label holder, its masking key) lives on its own
disk under ``<state-dir>/vertical/<run>/`` (``state-dir`` from the node
config; by default the directory of the node's audit log). Files are 0600,
written atomically (:func:`client.he_keys.write_private`).

After the job, :meth:`VerticalStore.erase_secrets` removes every key, the
PSI state and the training state (which holds masking seeds); the party's own
model share (``weights.npy`` or, for a split NN, ``bottom.pt``;
``preprocessor.json``, ``columns.json``) and its
full explanation stay: they are its results.
"""

from __future__ import annotations

import io
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedcollab.client.he_keys import write_private
from fedcollab.common.errors import ProtocolError

__all__ = ["VerticalStore", "array_bytes", "bytes_array", "write_private_file"]

write_private_file = write_private

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
#: Kept after the job: the party's own results.
_RESULTS = ("weights.npy", "bottom.pt", "explanation.json", "preprocessor.json", "columns.json")


def array_bytes(array: np.ndarray) -> bytes:
    """An array as ``.npy`` bytes (no pickle), the form it travels in inside envelopes."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def bytes_array(raw: bytes, *, what: str) -> np.ndarray:
    try:
        array: np.ndarray = np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ProtocolError(f"{what} is not a valid array: {exc}") from exc
    return array


@dataclass(frozen=True)
class VerticalStore:
    root: Path

    @classmethod
    def from_config(cls, config: Mapping[str, str], run: str) -> VerticalStore:
        state = config.get("state-dir") or (
            str(Path(config["audit-db"]).parent) if config.get("audit-db") else ""
        )
        if not state:
            raise ProtocolError(
                "this node has no state directory for vertical jobs",
                hint="start it with --audit-key (state lives beside its audit log)",
            )
        if not run:
            raise ProtocolError("a vertical request must name its run")
        name = _SAFE.sub("_", run)
        if name.strip(".") == "":  # "." or "..": the folder itself or its parent
            raise ProtocolError(f"run name {run!r} is not a folder name", hint="refused")
        return cls(Path(state) / "vertical" / name)

    def _path(self, name: str) -> Path:
        return self.root / _SAFE.sub("_", name)

    def has(self, name: str) -> bool:
        return self._path(name).exists()

    def put(self, name: str, data: bytes) -> None:
        write_private(self._path(name), data)

    def get(self, name: str) -> bytes:
        path = self._path(name)
        if not path.exists():
            raise ProtocolError(
                f"vertical state {name!r} is missing at this node",
                hint="the coordinator skipped a step of the protocol, or the node's state was "
                "wiped mid-job; resubmit the job",
            )
        return path.read_bytes()

    def put_array(self, name: str, array: np.ndarray) -> None:
        self.put(name, array_bytes(array))

    def get_array(self, name: str) -> np.ndarray:
        return bytes_array(self.get(name), what=name)

    def model_dir(self, job: str) -> Path:
        """Where the party keeps its share of the latest model of training job ``job``."""
        if not job:
            raise ProtocolError("a model share needs its training job's name")
        return self.root.parent / "models" / _SAFE.sub("_", job)

    def save_model(self, job: str, files: Mapping[str, bytes]) -> None:
        for name, data in files.items():
            write_private(self.model_dir(job) / _SAFE.sub("_", name), data)

    def model_file(self, job: str, name: str) -> bytes:
        path = self.model_dir(job) / _SAFE.sub("_", name)
        if not path.exists():
            raise ProtocolError(
                f"this node holds no model share of vertical job {job!r} ({name})",
                hint="run the training job first (same name), or fix vertical.predict_with",
            )
        return path.read_bytes()

    def erase_secrets(self) -> None:
        """Remove keys and PSI state; keep the party's model share and explanation."""
        if not self.root.exists():
            return
        for path in self.root.iterdir():
            if path.name in _RESULTS:
                continue
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
