"""Partners cosign the coordinator's checkpoint only after checking it (tamper tests)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from fedcollab.common.errors import AuditVerificationError
from fedcollab.common.keys import Signer
from fedcollab.compliance.checkpoint import verify_checkpoint
from fedcollab.compliance.cosigning import CosignRecord, build_request, cosign_request
from fedcollab.compliance.events import make_event
from fedcollab.compliance.log import AuditLog

DIGEST = "sha256:" + "ab" * 32


def _aggregate(signer: Signer, step: str, contributions: dict[str, str]) -> dict[str, Any]:
    body = {"job": "j", "digest": DIGEST, "step": step, "contributions": contributions}
    return make_event(signer, "coordinator", "round.aggregated", body)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[AuditLog, Signer, Signer, list[int]]:
    coord = Signer.generate()
    partner = Signer.generate()
    log = AuditLog.open(tmp_path / "c.db", origin="coordinator", signer=coord)
    idx = [
        log.append(make_event(coord, "coordinator", "job.started", {"digest": DIGEST})),
        log.append(_aggregate(coord, "round-1", {"acme": "sha256:01", "zen": "sha256:02"})),
        log.append(_aggregate(coord, "round-2", {"acme": "sha256:03", "zen": "sha256:04"})),
    ]
    yield log, coord, partner, idx[1:]
    log.close()


def _cosign(
    request: dict[str, Any],
    coord: Signer,
    partner: Signer,
    *,
    sent: dict[str, str] | None = None,
    previous: CosignRecord | None = None,
) -> Any:
    return cosign_request(
        request,
        coordinator_key=("coordinator", coord.public_key),
        previous=previous,
        partner="acme",
        job_digest=DIGEST,
        sent_digests=sent if sent is not None else {"round-1": "sha256:01", "round-2": "sha256:03"},
        signer=partner,
    )


def test_honest_request_is_cosigned_and_the_log_accepts_it(setup: Any) -> None:
    log, coord, partner, agg = setup
    signed = log.checkpoint()
    request = build_request(log, signed, aggregate_indices=agg, previous_size=None)
    cosigned = _cosign(request, coord, partner)
    verify_checkpoint(
        cosigned,
        log_key=("coordinator", coord.public_key),
        cosigner_keys={"acme": partner.public_key},
        required_cosigners=("acme",),
    )
    log.add_cosignature(cosigned, name="acme", public_key=partner.public_key)


def test_misattributed_contribution_is_refused(setup: Any) -> None:
    log, coord, partner, agg = setup
    request = build_request(log, log.checkpoint(), aggregate_indices=agg, previous_size=None)
    with pytest.raises(AuditVerificationError, match="does not record this partner"):
        _cosign(request, coord, partner, sent={"round-1": "sha256:01", "round-2": "sha256:99"})


def test_hidden_aggregate_is_refused(setup: Any) -> None:
    log, coord, partner, agg = setup
    request = build_request(log, log.checkpoint(), aggregate_indices=agg[:1], previous_size=None)
    with pytest.raises(AuditVerificationError, match="round-2"):
        _cosign(request, coord, partner)


@pytest.mark.parametrize("field", ["entry", "proof", "checkpoint"])
def test_tampered_request_is_refused(setup: Any, field: str) -> None:
    log, coord, partner, agg = setup
    request = build_request(log, log.checkpoint(), aggregate_indices=agg, previous_size=None)
    if field == "entry":
        entry = json.loads(request["aggregates"][0]["entry"])
        entry["body"]["contributions"]["acme"] = "sha256:01"  # same value, re-serialised
        entry["body"]["step"] = "round-9"
        request["aggregates"][0]["entry"] = json.dumps(entry)
    elif field == "proof":
        raw = bytearray(base64.b64decode(request["aggregates"][0]["proof"][0]))
        raw[0] ^= 1
        request["aggregates"][0]["proof"][0] = base64.b64encode(bytes(raw)).decode()
    else:
        request["checkpoint"] = request["checkpoint"].replace("\n3\n", "\n2\n", 1)
    with pytest.raises(AuditVerificationError):
        _cosign(request, coord, partner)


def test_checkpoint_by_another_key_is_refused(setup: Any) -> None:
    log, _coord, partner, agg = setup
    request = build_request(log, log.checkpoint(), aggregate_indices=agg, previous_size=None)
    with pytest.raises(AuditVerificationError):
        _cosign(request, Signer.generate(), partner)


def test_rewritten_history_is_refused(tmp_path: Path, setup: Any) -> None:
    log, coord, partner, agg = setup
    first = _cosign(
        build_request(log, log.checkpoint(), aggregate_indices=agg, previous_size=None),
        coord,
        partner,
    ).checkpoint
    previous = CosignRecord(size=first.size, root=first.root)
    # An honest extension verifies through the consistency proof.
    log.append(make_event(coord, "coordinator", "job.completed", {"digest": DIGEST}))
    grown = build_request(log, log.checkpoint(), aggregate_indices=agg, previous_size=first.size)
    _cosign(grown, coord, partner, previous=previous)
    # A rewritten log with the same key: a different history under the same name.
    forged = AuditLog.open(tmp_path / "forged.db", origin="coordinator", signer=coord)
    forged.append(make_event(coord, "coordinator", "job.started", {"digest": DIGEST, "x": 1}))
    forged.append(_aggregate(coord, "round-1", {"acme": "sha256:01"}))
    forged.append(_aggregate(coord, "round-2", {"acme": "sha256:03"}))
    forged.append(make_event(coord, "coordinator", "job.completed", {"digest": DIGEST}))
    request = build_request(forged, forged.checkpoint(), aggregate_indices=[1, 2], previous_size=3)
    forged.close()
    with pytest.raises(AuditVerificationError):
        _cosign(request, coord, partner, previous=previous)
    # Proving consistency from another size than the one the partner cosigned.
    with pytest.raises(AuditVerificationError, match="last cosigned"):
        _cosign(grown, coord, partner, previous=CosignRecord(size=2, root=first.root))
