"""The coordinator sums ciphertexts without a key, and refuses and logs bad ones."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from fedcollab.common.errors import CiphertextError
from fedcollab.common.jobspec import JobSpec
from fedcollab.common.serde import Payload
from fedcollab.compliance.trail import Trail, create_party_key
from fedcollab.coordinator.audit import AuditConfig, JobAudit
from fedcollab.coordinator.encryption import HeSession
from fedcollab.coordinator.outputs import JobOutputs
from fedcollab.coordinator.roster import Roster
from fedcollab.privacy.ckks import EncryptedSum, SecretKeys
from tests.support.scripted_grid import SCHEMA

warnings.filterwarnings("ignore", message=".*does not fit in a single ciphertext.*")


@pytest.fixture
def roster(tmp_path: Path) -> tuple[Roster, SecretKeys, Path]:
    spec = JobSpec.model_validate(
        {"name": "j", "task": "segmentation", "purpose": "p", "schema": SCHEMA,
         "privacy": {"encryption": "ckks", "aggregation": "ckks", "key_dealer": "a"}},
        strict=False,
    )  # fmt: skip
    key, _ = create_party_key(tmp_path / "coordinator", "coordinator")
    audit = JobAudit(AuditConfig(db=tmp_path / "audit.db", key=key), spec)
    r = Roster(spec=spec, outputs=JobOutputs(tmp_path / "out"), audit=audit)
    keys = SecretKeys.generate()
    r.he = HeSession(public=keys.public(), dealer="a", sealed={})
    return r, keys, tmp_path / "audit.db"


def _events(db: Path) -> list[dict[str, object]]:
    with Trail.open(db, db.parent / "coordinator" / "audit.key", actor="coordinator") as trail:
        return [json.loads(raw) for raw in trail.log.entries()]


def test_bad_ciphertexts_are_refused_and_logged(roster: tuple[Roster, SecretKeys, Path]) -> None:
    r, keys, db = roster
    acc = r.new_sum(4, params="wide")
    assert isinstance(acc, EncryptedSum)
    good = keys.encrypt(np.ones(4), params="wide")
    meta = {"he": {"key_digest": r.he.key_digest, "params": "wide", "length": 4}}  # type: ignore[union-attr]
    r._add_encrypted(acc, "a", Payload(meta, ciphertext=good), "lloyd-1")
    cases = {
        "b": Payload(meta, ciphertext=good[: len(good) // 2]),  # truncated
        "c": Payload(meta, ciphertext=b"garbage" * 10),
        "d": Payload(meta, ciphertext=keys.encrypt(np.ones(4), params="compact")),  # foreign params
        "e": Payload(meta, ciphertext=keys.encrypt(np.ones(5), params="wide")),  # wrong size
        "f": Payload({"he": {**meta["he"], "key_digest": "sha256:stale"}}, ciphertext=good),
        "g": Payload(meta),  # no ciphertext at all
        # Do not fit common.messages.replies.DataReply: refused the same way.
        "h": Payload({"he": {**meta["he"], "length": "4"}}, ciphertext=good),
        "i": Payload({**meta, "binding": "not-a-signed-statement"}, ciphertext=good),
        "j": Payload({"he": "wide"}, ciphertext=good),
    }
    for partner, payload in cases.items():
        with pytest.raises(CiphertextError):
            r._add_encrypted(acc, partner, payload, "lloyd-1")
    assert acc.count == 1
    refused = [e for e in _events(db) if e["type"] == "ciphertext.refused"]
    assert [e["body"]["partner"] for e in refused] == list(cases)  # type: ignore[index]
    assert all(e["body"]["step"] == "lloyd-1" for e in refused)  # type: ignore[index]


def test_plaintext_jobs_keep_plain_sums(tmp_path: Path) -> None:
    spec = JobSpec.model_validate(
        {"name": "j", "task": "segmentation", "purpose": "p", "schema": SCHEMA}, strict=False
    )
    r = Roster(spec=spec, outputs=JobOutputs(tmp_path), audit=JobAudit(None, spec))
    acc = r.new_sum(3)
    acc.add(np.ones(3))
    assert r.reveal(None, acc, step="s").tolist() == [1.0, 1.0, 1.0]  # type: ignore[arg-type]
