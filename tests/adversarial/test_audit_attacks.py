"""A malicious coordinator operator against the compliance officer's audit commands.

The operator holds the coordinator's log key and the log files, nothing else.
Each attack is run through ``fedcollab audit verify`` (with the partners'
bundles), ``audit crossref`` and ``audit report`` (``cli.app.main``, exit codes
as a shell sees them); each must exit 31 with a message that names the attack.
The honest federation passes all three (no false alarm).

What the attacker still learns / keeps: a run the coordinator never logged and
that no partner's bundle shows stays invisible (the officer must collect every
partner's bundle); a partner that colludes with the operator can omit its own
records.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedcollab.client.audit import request_digest
from fedcollab.common.errors import EventOrderError
from fedcollab.common.keys import Signer
from fedcollab.compliance.bundle import export_bundle, verify_bundle
from fedcollab.compliance.checkpoint import cosign, parse_signed_checkpoint
from fedcollab.compliance.contribution import shared_request_digest
from fedcollab.compliance.crossref import CrossCheck, cross_check
from fedcollab.compliance.events import canonical_json, make_event
from fedcollab.compliance.log import AuditLog
from fedcollab.compliance.store import LogStore
from fedcollab.compliance.trail import digest_vector
from fedcollab.compliance.trust import TrustPolicy
from tests.support.audit_world import COORDINATOR, DIGEST, JOB, PARTNERS, World
from tests.support.cli import run_cli


def _honest(root: Path) -> World:
    world = World.create(root)
    world.run_job("run-1")
    world.run_job("run-2", steps=("round-1",))
    return world


def _commands(world: World, bundles: dict[str, Path], out: Path) -> dict[str, list[str | Path]]:
    trust = world.trust_args()
    partner_args: list[str | Path] = []
    for p in PARTNERS:
        partner_args += ["--partner", f"{p}={bundles[p]}"]
    coord = bundles[COORDINATOR]
    return {
        "verify": ["audit", "verify", coord, *trust, *partner_args, "--workers", "1"],
        "crossref": ["audit", "crossref", coord, *trust, *partner_args],
        "report": [
            "audit", "report", coord, "--out", out / "report", *trust,
            *[a for p in PARTNERS for a in ("--ledger", bundles[p])],
        ],
    }  # fmt: skip


def _rebuilt_coordinator(world: World, out: Path, *, keep: int) -> Path:
    """The operator re-creates its log from its first ``keep`` entries, with its own key."""
    signer = world.coordinator.trail.signer
    out.mkdir(parents=True)
    with AuditLog.open(out / "forged.db", origin=COORDINATOR, signer=signer) as log:
        for data in list(world.coordinator.trail.log.entries(0, keep)):
            log.append(json.loads(data))
        log.checkpoint()
        keys = {n: p.trail.signer.public_key for n, p in world.partners.items()}
        export_bundle(log, out / "coordinator", public_keys=keys)
    return out / "coordinator"


# --- the attacks -------------------------------------------------------------------------


def forged_cosigners(world: World, tmp: Path) -> dict[str, Path]:
    """Rewrite the whole log (region-2's contributions gone) and cosign it with keys
    the operator made and named after the partners."""
    bundles = world.export(tmp / "honest")
    signer = world.coordinator.trail.signer
    fakes = {p: Signer.generate() for p in PARTNERS}
    with AuditLog.open(tmp / "forged.db", origin=COORDINATOR, signer=signer) as log:
        for data in world.coordinator.trail.log.entries():
            ev = json.loads(data)
            if ev["type"] == "checkpoint.cosignatures":
                continue  # a careful forger drops its records of the real cosignatures
            if ev["type"] == "round.aggregated":
                ev = make_event(signer, COORDINATOR, ev["type"],
                                {**ev["body"], "contributions": {}}, time=_time(ev))  # fmt: skip
            log.append(ev)
        cp = log.checkpoint()
        for name, fake in fakes.items():
            log.add_cosignature(cosign(cp, fake, name), name=name, public_key=fake.public_key)
        export_bundle(log, tmp / "forged", public_keys={n: f.public_key for n, f in fakes.items()})
    return {**bundles, COORDINATOR: tmp / "forged"}


def truncated(world: World, tmp: Path) -> dict[str, Path]:
    """Roll the log back to its first two entries (before anything partners cosigned)."""
    bundles = world.export(tmp / "honest")
    return {**bundles, COORDINATOR: _rebuilt_coordinator(world, tmp / "t", keep=2)}


def rolled_back(world: World, tmp: Path) -> dict[str, Path]:
    """Roll the log back to its first checkpoint that partners cosigned, keeping those
    real cosignatures: every cosignature it carries verifies, so verification passes
    and only the partners' newer cosigned sizes show the truncation."""
    bundles = world.export(tmp / "honest")
    log = world.coordinator.trail.log
    size = min(c.checkpoint.size for c in log.checkpoints() if len(c.signatures) > 1)
    pubs = {n: p.trail.signer.public_key for n, p in world.partners.items()}
    (tmp / "b").mkdir()
    signer = world.coordinator.trail.signer
    with AuditLog.open(tmp / "b" / "forged.db", origin=COORDINATOR, signer=signer) as forged:
        for original in log.checkpoints():
            if original.checkpoint.size > size:
                break
            for data in list(log.entries(forged.size, original.checkpoint.size)):
                forged.append(json.loads(data))
            forged.checkpoint()
            for name in original.signer_names():
                if name != COORDINATOR:
                    forged.add_cosignature(original, name=name, public_key=pubs[name])
        export_bundle(forged, tmp / "b" / "coordinator", public_keys=pubs)
    return {**bundles, COORDINATOR: tmp / "b" / "coordinator"}


def rewritten_history(world: World, tmp: Path) -> dict[str, Path]:
    """Same size, other content: the first event is re-signed with another body, and the
    records of cosignatures (which no longer verify) become innocuous events."""
    bundles = world.export(tmp / "honest")
    signer = world.coordinator.trail.signer
    (tmp / "r").mkdir()
    with AuditLog.open(tmp / "r" / "forged.db", origin=COORDINATOR, signer=signer) as log:
        for i, data in enumerate(world.coordinator.trail.log.entries()):
            ev = json.loads(data)
            if i == 0 or ev["type"] == "checkpoint.cosignatures":
                ev = make_event(signer, COORDINATOR, "job.note", {"i": i}, time=_time(ev))
            log.append(ev)
        log.checkpoint()
        keys = {n: p.trail.signer.public_key for n, p in world.partners.items()}
        export_bundle(log, tmp / "r" / "coordinator", public_keys=keys)
    return {**bundles, COORDINATOR: tmp / "r" / "coordinator"}


def omitted_run(world: World, tmp: Path) -> dict[str, Path]:
    """The coordinator runs a job it never logs (nor has cosigned)."""
    world.run_job("run-hidden", coordinator_logs=False)
    return world.export(tmp / "b")


def differing_requests(world: World, tmp: Path) -> dict[str, Path]:
    """One partner gets another request than the others in the same step."""
    world.run_job("run-3", request_override={"region-2": {"lr": 10.0}})
    return world.export(tmp / "b")


def differing_encrypted_requests(world: World, tmp: Path) -> dict[str, Path]:
    """In an encrypted step (full requests differ per partner: each carries its own
    sealed key), region-2 alone is sent another request."""
    world.run_job(
        "run-he", steps=(), encrypted_step="stats", request_override={"region-2": {"lr": 10.0}}
    )
    return world.export(tmp / "b")


def wrong_decryption(world: World, tmp: Path) -> dict[str, Path]:
    """The decryptor is handed region-2's lone ciphertext instead of the logged sum."""
    world.run_job(
        "run-he",
        steps=(),
        encrypted_step="stats",
        decrypted="sha256:" + "66" * 32,
    )
    return world.export(tmp / "b")


def decryption_of_other_contributions(world: World, tmp: Path) -> dict[str, Path]:
    """The decryptor is told the sum holds a region-2 contribution region-2 never sent
    (e.g. one replayed from another run, with its signed statement)."""
    world.run_job(
        "run-he",
        steps=(),
        encrypted_step="stats",
        told_contributions={"region-2": "sha256:" + "77" * 32},
    )
    return world.export(tmp / "b")


def back_dated(world: World, tmp: Path) -> dict[str, Path]:
    """An event slipped in with a time before the newest event (straight into SQLite)."""
    signer = world.coordinator.trail.signer
    db = world.coordinator.trail.log._store.path
    world.coordinator.trail.close()
    past = datetime.now(UTC) - timedelta(days=3)
    ev = make_event(signer, COORDINATOR, "consent.granted", {"partner": "region-1"}, time=past)
    store = LogStore(db)
    store.append_batch([canonical_json(ev)])
    store.close()
    world.coordinator.trail = type(world.coordinator.trail).open(
        db, world.coordinator.key, actor=COORDINATOR
    )
    return world.export(tmp / "b")


def dropped_cosignature(world: World, tmp: Path) -> dict[str, Path]:
    """region-2's cosignature line is deleted from the newest cosigned checkpoint."""
    db = world.coordinator.trail.log._store.path
    world.coordinator.trail.close()
    con = sqlite3.connect(db)
    size, note = con.execute("SELECT size, note FROM checkpoints ORDER BY size DESC").fetchone()
    signed = parse_signed_checkpoint(note)
    assert "region-2" in signed.signer_names()
    kept = "".join(line for line in note.splitlines(keepends=True) if " region-2 " not in line)
    con.execute("UPDATE checkpoints SET note = ? WHERE size = ?", (kept, size))
    con.commit()
    con.close()
    world.coordinator.trail = type(world.coordinator.trail).open(
        db, world.coordinator.key, actor=COORDINATOR
    )
    return world.export(tmp / "b")


def hidden_cosignature_drop(world: World, tmp: Path) -> dict[str, Path]:
    """Drop region-2's cosignature *and* the log's own record of it: the log is cut at the
    newest cosigned checkpoint and re-checkpointed with region-1's line only."""
    bundles = world.export(tmp / "honest")
    log = world.coordinator.trail.log
    size = max(c.checkpoint.size for c in log.checkpoints() if len(c.signatures) > 1)
    signer = world.coordinator.trail.signer
    (tmp / "h").mkdir()
    pubs = {n: p.trail.signer.public_key for n, p in world.partners.items()}
    with AuditLog.open(tmp / "h" / "forged.db", origin=COORDINATOR, signer=signer) as forged:
        for original in log.checkpoints():  # every checkpoint up to the cut, cosigned as before
            at = original.checkpoint.size
            if at > size:
                break
            for data in list(log.entries(forged.size, at)):
                forged.append(json.loads(data))
            forged.checkpoint()
            for name in original.signer_names():
                if name == COORDINATOR or (at == size and name == "region-2"):
                    continue
                forged.add_cosignature(original, name=name, public_key=pubs[name])
        export_bundle(forged, tmp / "h" / "coordinator", public_keys=pubs)
    return {**bundles, COORDINATOR: tmp / "h" / "coordinator"}


def _head(run: str) -> dict[str, str]:
    return {"job": JOB, "digest": DIGEST, "run": run}


def _partners_send(world: World, run: str, step: str, *, base: float) -> dict[str, str]:
    """Every partner answers ``step`` of ``run`` as the real node logs it; their digests."""
    sent: dict[str, str] = {}
    for i, (name, p) in enumerate(sorted(world.partners.items())):
        meta, model = {"job": JOB, "run": run, "lr": 0.1}, np.full(4, 0.5)
        body = {**_head(run), "action": "query.train", "step": step}
        p.trail.record(
            "request.received",
            {
                **body,
                "request": request_digest(meta, model),
                "request_shared": shared_request_digest(meta, model),
            },
        )
        sent[name] = digest_vector(np.arange(4.0) + i + base)
        p.trail.record("data.sent", {**body, "reply": sent[name], "n_values": 4})
    return sent


def hidden_run(world: World, tmp: Path) -> dict[str, Path]:
    """A whole run on the partners' data, five rounds, behind one ``interrupted`` record
    (what the coordinator's crash recovery writes) and no aggregate; a later honest run
    is cosigned by both partners."""
    head = _head("run-hidden")
    world.coordinator.trail.record("job.started", head)
    world.run_job("run-hidden", steps=tuple(f"round-{i}" for i in range(1, 6)),
                  coordinator_logs=False)  # fmt: skip
    world.coordinator.trail.record(
        "job.failed",
        {**head, "error": "FederationError", "reason": "stopped", "interrupted": True},
    )
    world.run_job("run-3", steps=("round-1",))
    return world.export(tmp / "b")


def hidden_behind_drops(world: World, tmp: Path) -> dict[str, Path]:
    """The same hidden run, behind ``partner.dropped`` records of every partner at every
    step and an ordinary failure (red team of the first fix)."""
    head, steps = _head("run-hidden"), tuple(f"round-{i}" for i in range(1, 6))
    coord = world.coordinator.trail
    coord.record("job.started", head)
    world.run_job("run-hidden", steps=steps, coordinator_logs=False)
    for step in steps:
        for p in world.partners:
            coord.record("partner.dropped", {**head, "partner": p, "step": step, "reason": "late"})
    coord.record("job.failed", {**head, "error": "NotEnoughPartnersError", "reason": "none"})
    world.run_job("run-3", steps=("round-1",))
    return world.export(tmp / "b")


def unreadable_contributions(world: World, tmp: Path) -> dict[str, Path]:
    """A step aggregated with its contributions as a list (no digests to compare), in a
    run that then fails: the sends must not pass as the message in flight."""
    coord, run = world.coordinator.trail, "run-list"
    coord.record("job.started", _head(run))
    sent = _partners_send(world, run, "round-1", base=0.0)
    coord.record(
        "round.aggregated",
        {**_head(run), "step": "round-1", "partners": sorted(sent),
         "contributions": sorted(sent), "aggregate": "sha256:" + "44" * 32,
         "protection": "plaintext-sum"},
    )  # fmt: skip
    coord.record("job.failed", {**_head(run), "error": "FederationError", "reason": "x"})
    world.run_job("run-3", steps=("round-1",))
    return world.export(tmp / "b")


def duplicate_aggregate(world: World, tmp: Path) -> dict[str, Path]:
    """Two aggregates of one step: the used one attributes the operator's vector to
    region-2; the partners are asked to cosign (and cosign) the decoy with the real
    digests only."""
    coord, run = world.coordinator.trail, "run-dup"
    coord.record("job.started", _head(run))
    sent = _partners_send(world, run, "round-1", base=0.0)
    forged = {**sent, "region-2": digest_vector(np.full(4, 1e6))}
    for contributions, fill in ((forged, "22"), (sent, "33")):
        index = coord.record(
            "round.aggregated",
            {**_head(run), "step": "round-1", "partners": sorted(contributions),
             "contributions": contributions, "aggregate": "sha256:" + fill * 32,
             "protection": "plaintext-sum"},
        )  # fmt: skip
    coord.record("job.completed", _head(run))
    world._cosign(run, [index], {n: {"round-1": d} for n, d in sent.items()})
    return world.export(tmp / "b")


def dropped_and_substituted(world: World, tmp: Path) -> dict[str, Path]:
    """region-2's round-2 update replaced by the operator's vector, recorded under its
    name, and region-2 also recorded as dropped at that step; a later run is cosigned."""
    coord, run = world.coordinator.trail, "run-sub"
    coord.record("job.started", _head(run))
    for step, base in (("round-1", 0.0), ("round-2", 10.0)):
        contributions = _partners_send(world, run, step, base=base)
        if step == "round-2":
            contributions["region-2"] = digest_vector(np.full(4, 1e6))
            dropped = {"partner": "region-2", "step": step, "reason": "reply arrived late"}
            coord.record("partner.dropped", {**_head(run), **dropped})
        coord.record(
            "round.aggregated",
            {**_head(run), "step": step, "partners": sorted(contributions),
             "contributions": contributions, "aggregate": "sha256:" + "11" * 32,
             "protection": "plaintext-sum"},
        )  # fmt: skip
    coord.record("job.completed", _head(run))
    world.run_job("run-3", steps=("round-1",))
    return world.export(tmp / "b")


def _time(ev: dict[str, object]) -> datetime:
    stamp = str(ev["time"])
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


Attack = Callable[[World, Path], dict[str, Path]]

ATTACKS: list[tuple[str, Attack, str]] = [
    ("forged-cosigners", forged_cosigners, r"not the pinned key of 'region-\d'.*forged"),
    (
        "truncated",
        truncated,
        r"\[truncated\] coordinator's log is wrong|required cosigner 'region-1': cosignature on "
        r"no checkpoint",
    ),
    (
        "rewritten-history",
        rewritten_history,
        r"\[inconsistent\] coordinator's log is wrong: 'region-1' cosigned .* does not extend"
        r"|required cosigner 'region-1': cosignature on no checkpoint",
    ),
    ("rolled-back", rolled_back, r"\[truncated\] coordinator's log is wrong"),
    ("omitted-run", omitted_run, r"\[missing-run\] coordinator's log is wrong: .*run-hidden"),
    (
        "differing-requests",
        differing_requests,
        r"\[request\] coordinator's log is wrong: run .*run-3, step 'round-1'.*different requests",
    ),
    (
        "differing-encrypted-requests",
        differing_encrypted_requests,
        r"\[request\] coordinator's log is wrong: run .*run-he, step 'stats' \(query.train\): "
        r"partners received different requests",
    ),
    (
        "decryption-of-other-contributions",
        decryption_of_other_contributions,
        r"\[decryption\] coordinator's log is wrong: .*decryptor 'region-1' was given sha256:7777"
        r".* as 'region-2''s contribution, but 'region-2' logged sending",
    ),
    (
        "wrong-decryption",
        wrong_decryption,
        r"\[decryption\] coordinator's log is wrong: .*decryptor 'region-1' decrypted ciphertext "
        r"sha256:6666",
    ),
    (
        "hidden-cosignature-drop",
        hidden_cosignature_drop,
        r"\[cosignature-removed\] coordinator's log is wrong: 'region-2' cosigned .* carries no "
        r"cosignature line by it|required cosigner 'region-2'",
    ),
    ("back-dated", back_dated, r"event time .* is earlier than the previous event's"),
    (
        "hidden-run",
        hidden_run,
        r"\[contribution\] coordinator's log is wrong: run .*run-hidden, step 'round-1': "
        r"'region-1' logged sending .*, the coordinator recorded nothing \(the run failed or "
        r"dropped the partner, but only its last send\(s\)",
    ),
    (
        "hidden-behind-drops",
        hidden_behind_drops,
        r"\[contribution\] coordinator's log is wrong: run .*run-hidden: the coordinator's "
        r"log records 'region-1' as dropped 5 times",
    ),
    (
        "unreadable-contributions",
        unreadable_contributions,
        r"\[contribution\] coordinator's log is wrong: run .*run-list, step 'round-1': an "
        r"aggregate whose contributions are not a partner -> digest object",
    ),
    (
        "duplicate-aggregate",
        duplicate_aggregate,
        r"\[contribution\] coordinator's log is wrong: run .*run-dup, step 'round-1': the "
        r"coordinator's log records 2 aggregates of that one step",
    ),
    (
        "dropped-and-substituted",
        dropped_and_substituted,
        r"\[contribution\] coordinator's log is wrong: run .*run-sub, step 'round-2': the "
        r"coordinator records 'region-2' as dropped at that step and also aggregates",
    ),
    (
        "dropped-cosignature",
        dropped_cosignature,
        r"no cosignature line by 'region-2'.*a cosignature was removed",
    ),
]


def test_the_honest_federation_passes_every_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    world = _honest(tmp_path / "w")
    world.run_job("run-he", steps=(), encrypted_step="stats")
    bundles = world.export(tmp_path / "b")
    for name, args in _commands(world, bundles, tmp_path).items():
        code = run_cli(monkeypatch, *args)
        err = capsys.readouterr()
        assert code == 0, (name, err.out, err.err)
    html = (tmp_path / "report" / "report.html").read_text(encoding="utf-8")
    assert "verified against the pinned key" in html and "UNVERIFIED" not in html
    assert "None: the partners' logs agree with this log." in html
    world.close()


def _verified(world: World, bundles: dict[str, Path]) -> CrossCheck:
    policy = _policy(world)
    partners = {p: verify_bundle(bundles[p], policy.without_requirements()) for p in PARTNERS}
    return cross_check(verify_bundle(bundles[COORDINATOR], policy), partners)


def test_an_honest_encrypted_step_is_compared_through_request_shared(tmp_path: Path) -> None:
    """Partners log ``request_shared`` (client_app): an encrypted step, whose full requests
    differ per partner, is compared, not skipped, and the decryption checks pass."""
    world = World.create(tmp_path / "w")
    world.run_job("run-1", steps=("round-1",))
    world.run_job("run-he", steps=(), encrypted_step="stats")
    bundles = world.export(tmp_path / "b")
    world.close()
    full = {
        _body_of(ev)["request"]
        for p in PARTNERS
        for ev in verify_bundle(bundles[p], _policy(world)).events()
        if ev["type"] == "request.received" and _body_of(ev)["step"] == "stats"
    }
    assert len(full) == 2  # the full requests differ (each partner's sealed key) ...
    result = _verified(world, bundles)
    assert result.findings == ()
    assert result.not_compared == ()  # ... yet nothing is skipped:
    assert result.requests_compared == 2  # round-1 and the encrypted step


def test_a_differing_encrypted_request_is_found(tmp_path: Path) -> None:
    world = World.create(tmp_path / "w")
    bundles = differing_encrypted_requests(world, tmp_path)
    world.close()
    findings = _verified(world, bundles).findings
    assert [(f.kind, f.wrong) for f in findings] == [("request", COORDINATOR)]
    assert "step 'stats' (query.train)" in findings[0].message


def test_decrypting_other_than_the_logged_aggregate_is_found(tmp_path: Path) -> None:
    world = World.create(tmp_path / "w")
    bundles = wrong_decryption(world, tmp_path)
    world.close()
    findings = _verified(world, bundles).findings
    assert [(f.kind, f.wrong) for f in findings] == [("decryption", COORDINATOR)]
    assert "decrypted ciphertext sha256:6666" in findings[0].message
    assert "not the aggregate" in findings[0].message


def test_decrypting_a_sum_of_other_contributions_is_found(tmp_path: Path) -> None:
    world = World.create(tmp_path / "w")
    bundles = decryption_of_other_contributions(world, tmp_path)
    world.close()
    findings = _verified(world, bundles).findings
    assert [(f.kind, f.wrong) for f in findings] == [("decryption", COORDINATOR)]
    assert "as 'region-2''s contribution, but 'region-2' logged sending" in findings[0].message


def _policy(world: World) -> TrustPolicy:
    return TrustPolicy.from_keys(
        {p.name: p.trail.signer.public_key for p in (world.coordinator, *world.partners.values())}
    )


def _body_of(ev: Mapping[str, Any]) -> Mapping[str, Any]:
    body = ev["body"]
    assert isinstance(body, dict)
    return body


@pytest.mark.parametrize("command", ["verify", "crossref", "report"])
@pytest.mark.parametrize(("attack", "message"), [(a[1], a[2]) for a in ATTACKS],
                         ids=[a[0] for a in ATTACKS])  # fmt: skip
def test_attack_is_reported_with_exit_31(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
    attack: Attack,
    message: str,
) -> None:
    world = _honest(tmp_path / "w")
    bundles = attack(world, tmp_path)
    world.close()
    code = run_cli(monkeypatch, *_commands(world, bundles, tmp_path)[command])
    err = capsys.readouterr()
    assert code == 31, (err.out, err.err)
    text = " ".join((err.out + err.err).split())
    assert re.search(message, text), (err.out, err.err)
    if command == "report":
        # The failing report still travels with the partners' evidence: every cross-log
        # finding it printed is in its attestation section too.
        kinds = set(re.findall(r"\[([a-z-]+)\] \S+'s log is wrong", text))
        if kinds:
            html = (tmp_path / "report" / "report.html").read_text(encoding="utf-8")
            assert all(f"[{k}]" in html for k in kinds), (kinds, text)


def test_forged_cosigners_never_count_with_only_the_coordinator_pinned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's attack: only the coordinator pinned, as the old README said."""
    world = _honest(tmp_path / "w")
    bundles = forged_cosigners(world, tmp_path)
    world.close()
    coord_only = ["--trust", f"{COORDINATOR}={world.coordinator.pub}"]
    code = run_cli(monkeypatch, "audit", "verify", bundles[COORDINATOR], *coord_only)
    out = capsys.readouterr().out
    assert code == 0 and "region-1 (UNVERIFIED KEY, not counted)" in " ".join(out.split())
    # The report pins the registered partners (peers.json) and requires them all: the
    # fakes are refused as keys shipped under a pinned name.
    peers = tmp_path / "peers.json"
    peers.write_text(json.dumps({n: p.pub.read_text().strip() for n, p in world.partners.items()}))
    code = run_cli(monkeypatch, "audit", "report", bundles[COORDINATOR], "--out",
                   tmp_path / "r", *coord_only, "--trust-peers", peers)  # fmt: skip
    err = capsys.readouterr().err
    assert code == 31 and "not the pinned key of 'region-1'" in err


def test_appending_a_back_dated_event_is_refused(tmp_path: Path) -> None:
    key = Signer.generate()
    with AuditLog.open(tmp_path / "a.db", origin=COORDINATOR, signer=key) as log:
        log.append(make_event(key, COORDINATOR, "job.started", {}))
        past = datetime.now(UTC) - timedelta(seconds=5)
        with pytest.raises(EventOrderError, match="earlier than the newest event"):
            log.append(make_event(key, COORDINATOR, "job.started", {}, time=past))
        assert log.size == 1
    with (
        AuditLog.open(tmp_path / "a.db", origin=COORDINATOR, signer=key) as log,
        pytest.raises(EventOrderError),  # the newest time survives a reopen
    ):
        log.append(make_event(key, COORDINATOR, "job.started", {}, time=past))


def test_a_required_cosigner_that_never_cosigned_fails_verify(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`audit verify --require-cosigners NAME` with NAME pinned but absent from every
    checkpoint (a partner the operator left out of cosigning) exits 31 and names it."""
    from fedcollab.compliance.trail import create_party_key

    world = _honest(tmp_path / "w")
    bundles = world.export(tmp_path / "honest")
    world.close()
    _key, pub = create_party_key(tmp_path / "region-x", "region-x")
    code = run_cli(monkeypatch, "audit", "verify", bundles[COORDINATOR], *world.trust_args(),
                   "--trust", f"region-x={pub}", "--require-cosigners", "region-x",
                   "--require-cosigners", "region-1")  # fmt: skip
    err = capsys.readouterr()
    text = " ".join((err.out + err.err).split())
    assert code == 31, text
    assert "required cosigner 'region-x': cosignature on no checkpoint" in text
    # The partners that did cosign pass the same requirement.
    both = ["--require-cosigners", "region-1", "--require-cosigners", "region-2"]
    code = run_cli(monkeypatch, "audit", "verify", bundles[COORDINATOR], *world.trust_args(), *both)
    assert code == 0, capsys.readouterr()
