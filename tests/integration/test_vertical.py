"""A vertical job end to end on a real federation (SuperLink + 3 SuperNodes over TLS).

The coordinator records every message it relays; the test then searches those
bytes for the parties' plaintext features, labels, partial scores and gradients,
and finds none. PSI must find exactly the true intersection, the job must beat
the label holder alone, and each party's explanation leaves it only as it allows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fedcollab.common.dataset import load_dataset
from fedcollab.common.keys import Signer
from fedcollab.common.schema import load_schema
from fedcollab.common.split import split_vertical
from fedcollab.compliance.log import AuditLog
from fedcollab.coordinator.submit import follow, submit_job
from fedcollab.demo.checks import export_and_verify
from fedcollab.demo.vertical import DATA_DIR, LABEL_HOLDER, PARTIES, vertical_job
from fedcollab.demo.vertical_summary import true_alignment
from fedcollab.federation.local_federation import LocalFederation
from fedcollab.protocols.vertical_data import party_matrix
from tests.support.integration import free_port, node_port_base

pytestmark = pytest.mark.integration

N_ROWS = 3000


@pytest.fixture(scope="module")
def vertical_federation(
    tmp_path_factory: pytest.TempPathFactory, tool_path: None
) -> Iterator[LocalFederation]:
    root = tmp_path_factory.mktemp("fed-vertical")
    lines = (DATA_DIR / "uci_credit_card_default.csv").read_text().splitlines()
    small = root / "credit.csv"
    small.write_text("\n".join(lines[: N_ROWS + 1]) + "\n")
    files = split_vertical(
        small,
        load_schema(DATA_DIR / "credit_default.schema.json"),
        root / "parties",
        parties=PARTIES,
        seed=1,
    )
    from fedcollab.client.partner_data import PartnerSource

    sources = [PartnerSource(partner=f.name, data=f.csv, schema=f.schema) for f in files]
    with LocalFederation(
        root / "federation",
        sources,
        port=free_port(),
        node_port_base=node_port_base(),
        purposes_for={s.partner: ("payment-risk-scoring",) for s in sources},
        share_explanations=(LABEL_HOLDER,),
        budget_cap=1000.0,  # the label holder charges its label-DP noise
        allow_plaintext_vertical=(LABEL_HOLDER,),
        label_epsilon=64.0,  # the schedule under test, not label DP's utility on 3 iterations
    ) as fed:
        fed.wait_online()
        yield fed


def _float_needles(values: np.ndarray, count: int = 40) -> list[bytes]:
    """float64 byte patterns of distinctive non-round values (full 52-bit mantissas)."""
    flat = np.unique(values[np.isfinite(values)].ravel())
    flat = flat[(np.abs(flat) > 1e-3) & (flat != np.round(flat, 3))]
    picks = flat[np.linspace(0, len(flat) - 1, min(count, len(flat))).astype(int)]
    return [np.float64(v).tobytes() for v in picks]


def _log(fed: LocalFederation, party: str) -> list[dict[str, object]]:
    node = fed.ws.node_dir(party)
    with AuditLog.open(
        node / "audit.db", origin=party, signer=Signer.load(node / "audit.key")
    ) as log:
        return [json.loads(e) for e in log.entries()]


def test_vertical_job_relays_nothing_in_plaintext(
    vertical_federation: LocalFederation, tmp_path: Path
) -> None:
    fed = vertical_federation
    sources = fed.partners
    spec = vertical_job(sources, name="vertical-it", iterations=3)
    out = tmp_path / "job"
    submit_job(fed.ws, spec, out, record_messages=True)
    end = follow(out, on_event=lambda _e: None, timeout_s=900)
    assert end["status"] == "completed", end
    metrics = json.loads((out / "metrics.json").read_text())

    # PSI: exactly the true intersection.
    truth = true_alignment(sources)
    assert metrics["alignment"]["intersection"] == len(truth[LABEL_HOLDER])
    assert 0.6 < metrics["final"]["test_auc"] < 1.0

    # Explanations: the platform shares its detail, the others only their importance.
    explanations = {e["party"]: e for e in json.loads((out / "explanations.json").read_text())}
    assert set(explanations) == {p.name for p in PARTIES}
    assert explanations[LABEL_HOLDER]["top_features"]
    for party in ("payment", "billing"):
        assert not explanations[party].get("top_features")
        assert "importance" in explanations[party]
    text = (out / "explanations.json").read_text() + (out / "metrics.json").read_text()
    assert "PAY_AMT" not in text and "BILL_AMT" not in text

    # What the coordinator saw: no feature value (raw or standardised), label vector or
    # partial score of any party. Needles are 8-byte float64 values with full mantissas
    # and 16-byte windows of consecutive raw values, so chance matches in megabytes of
    # ciphertext are negligible.
    files = sorted((out / "messages").glob("*.bin"))
    assert len(files) > 4 * 3
    recorded = b"".join(p.read_bytes() for p in files)
    ev = spec.evaluation
    for src in sources:
        ds = load_dataset(src.data, load_schema(src.schema))
        for values in ds.numeric.values():
            raw = np.asarray(values, dtype=np.float64)[:40]
            for k in range(0, 36, 4):
                assert raw[k : k + 4].tobytes() not in recorded, src.partner
                assert raw[k : k + 4].astype(np.float32).tobytes() not in recorded, src.partner
        mat = party_matrix(
            ds, truth[src.partner], test_fraction=ev.test_fraction, split_seed=ev.split_seed
        )
        for needle in _float_needles(mat.train):
            assert needle not in recorded, f"a standardised feature of {src.partner} leaked"
        if ds.labels is not None:
            labels = ds.labels[:64]
            for form in (labels.astype(np.float64), labels.astype(np.float32),
                         labels.astype(np.uint8), labels.astype(np.int64)):  # fmt: skip
                assert form.tobytes() not in recorded, "the label vector leaked"
        if src.partner != LABEL_HOLDER:
            (share,) = (fed.ws.node_dir(src.partner) / "vertical").glob("*/weights.npy")
            weights = np.load(share, allow_pickle=False)
            for needle in _float_needles(mat.test @ weights):
                assert needle not in recorded, f"a partial score of {src.partner} leaked"

    # Audit: every relay hop is in the coordinator's log, and each party logged the same
    # digests for what it sent (cosigned).
    card = json.loads((out / "model_card.json").read_text())
    assert sorted(card["completed_by"]) == sorted(p.name for p in PARTIES)
    audit = json.loads((out / "audit.json").read_text())
    assert sorted(audit["cosigned_by"]) == sorted(p.name for p in PARTIES)
    sent = [e for e in _log(fed, "payment") if e["type"] == "data.sent"]
    assert any(str(e["body"]["step"]).startswith("step-") for e in sent)  # type: ignore[index]
    # Offline: every bundle verifies with its pinned key and the logs agree hop by hop.
    check = export_and_verify(fed.ws, [p.name for p in PARTIES], tmp_path / "audit")
    assert check["cosigners"] == sorted(p.name for p in PARTIES)
    assert all(check["matched"][p.name] > 0 for p in PARTIES)


def test_a_cm20_vertical_job_aligns_exactly_over_real_processes(
    vertical_federation: LocalFederation, tmp_path: Path
) -> None:
    """vertical.psi = "cm20" through the real SuperLink and SuperNodes: the label holder's
    CM20 runs with each feature party, sealed hop to hop, align every party exactly."""
    fed = vertical_federation
    sources = fed.partners
    spec = vertical_job(sources, name="vertical-cm20-it", iterations=1, psi="cm20")
    out = tmp_path / "job"
    submit_job(fed.ws, spec, out, record_messages=True)
    end = follow(out, on_event=lambda _e: None, timeout_s=900)
    assert end["status"] == "completed", end
    metrics = json.loads((out / "metrics.json").read_text())
    truth = true_alignment(sources)
    assert metrics["alignment"]["intersection"] == len(truth[LABEL_HOLDER])
    names = [p.name for p in (out / "messages").glob("*.bin")]
    assert any("psi-matrix" in n for n in names), names
    assert not any("psi-hop" in n or "psi-own" in n for n in names), names
    # Each feature party's trail records its CM20 steps of this run; no ring step.
    for party in ("payment", "billing"):
        sent = {
            str(e["body"]["step"])  # type: ignore[index]
            for e in _log(fed, party)
            if e["type"] == "data.sent" and e["body"]["job"] == spec.name  # type: ignore[index]
        }
        assert {"psi-salt", "psi-answer", "psi-values"} <= sent, sorted(sent)
        assert not any(s.startswith(("psi-own", "psi-hop")) for s in sent), sorted(sent)
