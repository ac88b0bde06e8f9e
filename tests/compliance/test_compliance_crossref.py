"""Offline cross-check of the coordinator's and partners' bundles."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedcollab.common.errors import AuditVerificationError
from fedcollab.common.keys import Signer
from fedcollab.compliance.bundle import VerifiedBundle, export_bundle, verify_bundle
from fedcollab.compliance.crossref import IN_FLIGHT_MAX, cross_check
from fedcollab.compliance.events import make_event
from fedcollab.compliance.log import AuditLog
from fedcollab.compliance.trust import TrustPolicy

DIGEST = "sha256:" + "cd" * 32


def _bundles(
    tmp_path: Path, *, recorded: str, sent: str, dropped: bool = False
) -> tuple[VerifiedBundle, VerifiedBundle]:
    coord, acme = Signer.generate(), Signer.generate()
    with AuditLog.open(tmp_path / "c.db", origin="coordinator", signer=coord) as log:
        body = {"digest": DIGEST, "step": "round-1", "contributions": {"acme": recorded}}
        if dropped:
            body = {"digest": DIGEST, "step": "round-1", "contributions": {}}
            log.append(
                make_event(
                    coord,
                    "coordinator",
                    "partner.dropped",
                    {"digest": DIGEST, "step": "round-1", "partner": "acme", "reason": "late"},
                )
            )
        log.append(make_event(coord, "coordinator", "round.aggregated", body))
        export_bundle(log, tmp_path / "cb", public_keys={})
    with AuditLog.open(tmp_path / "a.db", origin="acme", signer=acme) as log:
        log.append(
            make_event(
                acme,
                "acme",
                "data.sent",
                {"digest": DIGEST, "step": "round-1", "reply": sent, "n_values": 10},
            )
        )
        export_bundle(log, tmp_path / "ab", public_keys={})
    policy = TrustPolicy.from_keys({"coordinator": coord.public_key, "acme": acme.public_key})
    return verify_bundle(tmp_path / "cb", policy), verify_bundle(tmp_path / "ab", policy)


def test_agreeing_logs(tmp_path: Path) -> None:
    cb, ab = _bundles(tmp_path, recorded="sha256:01", sent="sha256:01")
    assert cross_check(cb, {"acme": ab}).matched == {"acme": 1}


def test_disagreeing_digest_is_reported(tmp_path: Path) -> None:
    cb, ab = _bundles(tmp_path, recorded="sha256:02", sent="sha256:01")
    result = cross_check(cb, {"acme": ab})
    assert [f.kind for f in result.findings] == ["contribution"]
    assert result.findings[0].wrong == "coordinator"
    with pytest.raises(AuditVerificationError, match="round-1"):
        result.raise_on_findings()


def test_dropped_partner_is_not_a_disagreement(tmp_path: Path) -> None:
    cb, ab = _bundles(tmp_path, recorded="", sent="sha256:01", dropped=True)
    assert cross_check(cb, {"acme": ab}).matched == {"acme": 0}


def _cut_short_bundles(
    tmp_path: Path,
    *,
    interrupted: bool,
    aggregated: bool,
    before: tuple[str, ...] = (),
    after: tuple[str, ...] = ("round-2",),
) -> tuple[VerifiedBundle, VerifiedBundle]:
    """acme sent ``before`` (steps), round-1, then ``after``; the coordinator's log has
    round-1, maybe round-2 without acme, then the job's failure (closed by a restart's
    recovery, or not)."""
    coord, acme = Signer.generate(), Signer.generate()
    run = {"digest": DIGEST, "run": "r1"}
    with AuditLog.open(tmp_path / "c.db", origin="coordinator", signer=coord) as log:
        log.append(
            make_event(
                coord,
                "coordinator",
                "round.aggregated",
                {**run, "step": "round-1", "contributions": {"acme": "sha256:01"}},
            )
        )
        if aggregated:
            log.append(
                make_event(
                    coord,
                    "coordinator",
                    "round.aggregated",
                    {**run, "step": "round-2", "contributions": {}},
                )
            )
        failed: dict[str, object] = {**run, "error": "FederationError", "reason": "stopped"}
        if interrupted:
            failed["interrupted"] = True
        log.append(make_event(coord, "coordinator", "job.failed", failed))
        export_bundle(log, tmp_path / "cb", public_keys={})
    with AuditLog.open(tmp_path / "a.db", origin="acme", signer=acme) as log:
        sends = [
            *((step, f"sha256:b{i}") for i, step in enumerate(before)),
            ("round-1", "sha256:01"),
            *((step, f"sha256:a{i}") for i, step in enumerate(after)),
        ]
        for step, reply in sends:
            log.append(
                make_event(
                    acme, "acme", "data.sent", {**run, "step": step, "reply": reply, "n_values": 10}
                )
            )
        export_bundle(log, tmp_path / "ab", public_keys={})
    policy = TrustPolicy.from_keys({"coordinator": coord.public_key, "acme": acme.public_key})
    return verify_bundle(tmp_path / "cb", policy), verify_bundle(tmp_path / "ab", policy)


def test_send_cut_short_by_a_coordinator_restart_is_listed_not_a_finding(
    tmp_path: Path,
) -> None:
    cb, ab = _cut_short_bundles(tmp_path, interrupted=True, aggregated=False)
    result = cross_check(cb, {"acme": ab})
    assert result.findings == () and result.matched == {"acme": 1}
    assert len(result.cut_short) == 1 and "round-2" in result.cut_short[0]


@pytest.mark.parametrize(("interrupted", "aggregated"), [(False, True), (True, True)])
def test_unrecorded_send_is_a_finding_unless_the_restart_cut_that_step(
    tmp_path: Path, interrupted: bool, aggregated: bool
) -> None:
    """A step the coordinator did aggregate, leaving acme out without dropping it, makes
    the coordinator's log wrong, whether or not the run then failed."""
    cb, ab = _cut_short_bundles(tmp_path, interrupted=interrupted, aggregated=aggregated)
    result = cross_check(cb, {"acme": ab})
    assert [(f.kind, f.wrong) for f in result.findings] == [("contribution", "coordinator")]
    assert result.cut_short == ()


def test_the_message_in_flight_is_cut_short_up_to_one_messages_requests(tmp_path: Path) -> None:
    """A crash leaves the partner's last message unrecorded: up to IN_FLIGHT_MAX requests
    (a query.batch), e.g. a decryption, its survivors' signatures and the next keys."""
    steps = tuple(f"s-{i}" for i in range(IN_FLIGHT_MAX))
    cb, ab = _cut_short_bundles(tmp_path, interrupted=True, aggregated=False, after=steps)
    result = cross_check(cb, {"acme": ab})
    assert result.findings == () and len(result.cut_short) == IN_FLIGHT_MAX


@pytest.mark.parametrize(
    ("before", "after"),
    [((), tuple(f"s-{i}" for i in range(IN_FLIGHT_MAX + 1))), (("s-early",), ("round-2",))],
    ids=["more-than-one-message", "not-the-last-send"],
)
def test_a_cut_short_run_hides_no_more_than_the_message_in_flight(
    tmp_path: Path, before: tuple[str, ...], after: tuple[str, ...]
) -> None:
    """Red team (2026-12-06): a whole run's sends hid behind one ``interrupted`` record.
    More unrecorded sends than one message carries, or an unrecorded send before one the
    coordinator did record, are findings."""
    cb, ab = _cut_short_bundles(
        tmp_path, interrupted=True, aggregated=False, before=before, after=after
    )
    result = cross_check(cb, {"acme": ab})
    flagged = {f.message.split("step ")[1].split(":")[0] for f in result.findings}
    wrong = set(before) if before else set(after)
    assert flagged == {repr(step) for step in wrong}, result.findings
    assert {f.kind for f in result.findings} == {"contribution"}


def test_in_flight_bound_is_one_batch_message() -> None:
    from fedcollab.common import batch

    assert batch.MAX_ITEMS == IN_FLIGHT_MAX
