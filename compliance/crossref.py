"""Cross-check a coordinator's audit bundle against partners' bundles, trusting no single log.

Long module: one cross-check across bundles; its findings are computed together.

Each party's bundle is first verified on its own under the officer's trust
policy (:func:`compliance.bundle.verify_bundle`); this module takes the
*verified* bundles and checks that they tell the same story.  Every finding
names the party whose log is wrong:

``missing-run`` (coordinator)
    a partner logged requests or replies of a run the coordinator's log does
    not have at all: the coordinator left that run out of its log.
``truncated`` (coordinator)
    the coordinator's bundle is smaller than the largest checkpoint a partner
    recorded cosigning (``checkpoint.cosigned``): the log was rolled back.
``inconsistent`` (coordinator)
    a partner's cosigned root is not a prefix of the coordinator's bundle
    (RFC 9162 section 2.1.4.2 consistency proof, computed from the bundle's own
    entries and checked against the root the partner signed).
``cosignature-removed`` (coordinator)
    a partner recorded cosigning a checkpoint whose note in the coordinator's
    bundle carries no line by that partner.
``contribution`` (coordinator, or the partner)
    a partner logged sending a vector the coordinator recorded differently,
    or the coordinator attributes a contribution the partner never sent; the
    coordinator records a partner as dropped at a step and also aggregates a
    contribution under its name there, or as dropped twice in one run; an aggregate
    whose contributions cannot be read; or the coordinator's log aggregates one
    (run, step) more than once (a partner cosigns the aggregates it is shown, so a
    second, unshown one could attribute anything to it).
    Not a finding: the replies of the one message in flight when the run failed
    (``job.failed``: a crash and the restart's recovery, which writes
    ``interrupted``, or a quorum lost mid-exchange) or when the coordinator dropped
    that partner (a late, refused or malformed reply): the partner's *last* sends
    of the run, at most :data:`IN_FLIGHT_MAX` (one message's requests), none
    recorded for it. Those sends are listed in ``CrossCheck.cut_short`` and printed
    by every command; every earlier send of the run must match. What a coordinator
    gets from this: one message per partner per run left unrecorded, at the price
    of a signed record that the run failed or the partner was dropped; partners
    bound the runs (``max-runs-per-day``), and their own logs and ledgers hold those
    releases.
``request`` (coordinator)
    partners logged different request digests for the same (run, step): the
    coordinator sent them different requests.  Compared is ``request_shared``
    when partners log it (the digest of the request without its per-partner
    fields), else ``request`` for the actions whose request is the same for
    every partner; the others are listed in ``CrossCheck.not_compared``.
``decryption`` (coordinator)
    a decryptor logged (``he.decrypted``) decrypting a ciphertext other than
    the aggregate the coordinator recorded for that step, or a sum of other
    contributions than the ones the contributors logged sending.

Notes
-----
* Per-partner request fields: ``query.cosign`` carries each partner's own
  consistency proof, ``query.vertical`` each party's share, and every
  encrypted step carries each partner's ``he`` meta (its sealed key), so their
  full ``request`` digests legitimately differ.  ``request_shared`` leaves out
  ``he`` and ``cosign`` (:func:`compliance.contribution.shared_request_digest`), so
  encrypted steps and ``query.cosign`` are compared through it; a vertical
  step's phase meta differs per party, so ``query.vertical`` never is.
* ``he.decrypted`` is logged by the decrypting partner before the result
  leaves (``client/actions.py``): ``step`` is the encrypted step whose
  aggregate it decrypted, ``ciphertext`` the digest of what it was given,
  ``contributors`` each contributor's name and the reply digest its signed
  statement names.  Each is compared with the coordinator's ``aggregate`` and
  with the reply digest the contributor logged in its own ``data.sent``.
* A partner's own records are authentic because its bundle verified under its
  pinned key; the coordinator cannot forge them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from fedcollab.common.errors import AuditVerificationError
from fedcollab.compliance import merkle
from fedcollab.compliance.bundle import VerifiedBundle

__all__ = [
    "PER_PARTNER_ACTIONS",
    "CrossCheck",
    "CrossFinding",
    "PartnerCosigned",
    "cross_check",
]

FindingKind = Literal[
    "missing-run",
    "truncated",
    "inconsistent",
    "cosignature-removed",
    "contribution",
    "request",
    "decryption",
]

_RUN_EVENTS = frozenset({"request.received", "data.sent", "request.refused", "he.decrypted"})
PER_PARTNER_ACTIONS = frozenset({"query.cosign", "query.vertical"})
#: The most requests one message asks a partner (``common.batch.MAX_ITEMS``, not imported:
#: the offline verifier needs no Flower): the sends a coordinator crash can leave unrecorded.
IN_FLIGHT_MAX = 4
#: Actions whose *shared* request differs per party too: a vertical step sends each
#: party its own phase meta (ring route, role) besides its share.
PER_PARTY_SHARED = frozenset({"query.vertical"})


@dataclass(frozen=True)
class CrossFinding:
    """One disagreement between logs; ``wrong`` is the party whose log is wrong."""

    kind: FindingKind
    wrong: str
    message: str

    def __str__(self) -> str:
        return f"[{self.kind}] {self.wrong}'s log is wrong: {self.message}"


@dataclass(frozen=True)
class PartnerCosigned:
    """The newest coordinator checkpoint a partner recorded cosigning, from its own log."""

    partner: str
    size: int
    root_hex: str
    on_coordinator_note: bool  # the coordinator's note of that size carries the line


@dataclass(frozen=True)
class CrossCheck:
    """What the logs agree on, and every disagreement."""

    matched: Mapping[str, int]
    jobs: int
    findings: tuple[CrossFinding, ...]
    cosigned: tuple[PartnerCosigned, ...]
    requests_compared: int
    not_compared: tuple[str, ...]
    #: A partner's replies the coordinator did not record because they were in flight
    #: when the run failed or the partner was dropped (see ``contribution`` in the
    #: module docstring). Not findings; listed for the auditor.
    cut_short: tuple[str, ...] = ()

    def raise_on_findings(self) -> None:
        """Raise AuditVerificationError listing every finding (exit 31)."""
        if self.findings:
            lines = "\n".join(f"  - {f}" for f in self.findings)
            raise AuditVerificationError(
                f"the logs disagree ({len(self.findings)} finding(s)):\n{lines}",
                hint="each finding names the party whose log is wrong; see docs/compliance.md",
            )


def _run(body: Mapping[str, Any]) -> str:
    """Events are matched per run (the same job spec may run many times)."""
    return f"{body.get('digest')}/{body.get('run', '')}"


def _short(run: str) -> str:
    digest, _, run_id = run.partition("/")
    return f"{digest[:19]}.../{run_id}" if len(digest) > 19 else run


def _body(ev: Mapping[str, Any]) -> Mapping[str, Any]:
    body = ev.get("body", {})
    return body if isinstance(body, dict) else {}


class _Coordinator:
    def __init__(self, bundle: VerifiedBundle) -> None:
        self.bundle = bundle
        self.recorded: dict[tuple[str, str, str], str] = {}  # (run, step, partner) -> digest
        #: Every digest recorded per (run, step, partner): a step aggregated twice keeps both.
        self.recorded_all: dict[tuple[str, str, str], set[str]] = defaultdict(set)
        #: How many ``round.aggregated`` events each (run, step) has (honest logs: one).
        self.aggregations: dict[tuple[str, str], int] = defaultdict(int)
        #: (run, step) of aggregates whose ``contributions`` is not a name -> digest object.
        self.malformed: list[tuple[str, str]] = []
        self.aggregates: dict[tuple[str, str], str] = {}  # (run, step) -> aggregate digest
        self.contributors: dict[tuple[str, str], set[str]] = {}
        self.dropped: set[tuple[str, str, str]] = set()
        self.runs: set[str] = set()
        #: Runs the log closes as failed (``job.failed``; a coordinator restart's recovery
        #: writes it with ``interrupted``): the message in flight may be unrecorded.
        self.failed: set[str] = set()
        #: (run, partner) -> how many ``partner.dropped`` records (honest logs: at most one;
        #: a dropped partner is never asked again in that run, coordinator.membership).
        self.drops: dict[tuple[str, str], int] = defaultdict(int)
        self.encrypted: set[tuple[str, str]] = set()
        self.leaves: list[bytes] = []
        for data in bundle.raw_entries():
            self.leaves.append(merkle.leaf_hash(data))
        for ev in bundle.events():
            body = _body(ev)
            if "digest" in body and "run" in body:
                self.runs.add(_run(body))
            etype = ev.get("type")
            if etype == "round.aggregated":
                key = (_run(body), str(body.get("step")))
                self.runs.add(key[0])
                self.aggregations[key] += 1
                contributions = body.get("contributions", {})
                if not isinstance(contributions, dict):
                    self.malformed.append(key)
                else:
                    for partner, digest in contributions.items():
                        self.recorded[(*key, partner)] = str(digest)
                        self.recorded_all[(*key, partner)].add(str(digest))
                    self.contributors[key] = self.contributors.get(key, set()) | set(contributions)
                if body.get("protection") == "ckks-sum":
                    self.encrypted.add(key)
                if body.get("aggregate") is not None:
                    self.aggregates[key] = str(body.get("aggregate"))
            elif etype == "partner.dropped":
                self.dropped.add((_run(body), str(body.get("step")), str(body.get("partner"))))
                self.drops[(_run(body), str(body.get("partner")))] += 1
            elif etype == "job.failed":
                self.failed.add(_run(body))


def _in_flight(
    coord: _Coordinator, name: str, order: list[tuple[str, str, str]]
) -> set[tuple[str, str, str]]:
    """``name``'s sends the coordinator may honestly have left unrecorded: the replies of
    the one message in flight when its run failed (``job.failed``: a crash, then the
    restart's recovery, or a quorum lost mid-exchange) or when it dropped ``name`` (a
    late, refused or malformed reply; a batch may carry other steps' replies too).

    Those are ``name``'s *last* sends of the run, at most :data:`IN_FLIGHT_MAX` (the
    requests one message carries), none recorded for ``name``; a send at a step the
    coordinator aggregated without ``name`` ends the tail unless ``name`` was dropped (a
    drop is what leaves a partner out of an aggregate). Any other unrecorded send stays
    a ``contribution`` finding."""
    out: set[tuple[str, str, str]] = set()
    for run in {key[0] for key in order}:
        dropped = coord.drops.get((run, name), 0) > 0
        if run not in coord.failed and not dropped:
            continue
        tail: list[tuple[str, str, str]] = []
        for key in reversed([key for key in order if key[0] == run]):
            if coord.recorded_all.get(key) or (
                (key[0], key[1]) in coord.aggregations and not dropped
            ):
                break
            tail.append(key)
        if len(tail) <= IN_FLIGHT_MAX:
            out.update(tail)
    return out


def _partner_checks(
    coord: _Coordinator,
    name: str,
    bundle: VerifiedBundle,
    found: list[CrossFinding],
    cut_short: list[str] | None = None,
) -> tuple[int, PartnerCosigned | None, dict[tuple[str, str, str], str], list[dict[str, Any]]]:
    """Contribution, run and checkpoint checks of one partner; returns its match count,
    newest cosigned checkpoint, request digests and decryption records."""
    c = coord.bundle
    sent: dict[tuple[str, str, str], str] = {}
    order: list[tuple[str, str, str]] = []  # the sends in the partner's log order
    requests: dict[tuple[str, str, str], str] = {}
    decrypted: list[dict[str, Any]] = []
    unknown_runs: dict[str, int] = defaultdict(int)
    newest: tuple[int, str] | None = None
    cosigned_sizes: list[tuple[int, str]] = []
    for ev in bundle.events():
        body = _body(ev)
        if ev.get("actor") != name:
            found.append(
                CrossFinding(
                    "contribution", name, f"event by {ev.get('actor')!r} in the log of {name!r}"
                )
            )
            continue
        etype = ev.get("type")
        if etype in _RUN_EVENTS and _run(body) not in coord.runs:
            unknown_runs[_run(body)] += 1
            continue
        if etype == "data.sent" and int(body.get("n_values", 0) or 0) > 0:
            sent[(_run(body), str(body.get("step")), name)] = str(body.get("reply"))
            order.append((_run(body), str(body.get("step")), name))
        elif etype == "request.received":
            shared = body.get("request_shared")
            action = str(body.get("action", ""))
            digest = shared if shared is not None else body.get("request")
            kind = "shared" if shared is not None else "full"
            requests[(_run(body), str(body.get("step")), f"{action}\t{kind}")] = str(digest)
        elif etype == "he.decrypted":
            decrypted.append(dict(body))
        elif etype == "checkpoint.cosigned" and body.get("origin") == c.origin:
            size, root = body.get("size"), str(body.get("root", ""))
            if isinstance(size, int) and size > 0:
                cosigned_sizes.append((size, root))
                if newest is None or size >= newest[0]:
                    newest = (size, root)
    for run, count in sorted(unknown_runs.items()):
        found.append(
            CrossFinding(
                "missing-run",
                c.origin,
                f"{name!r} logged {count} event(s) of run {_short(run)} that the coordinator's "
                "log does not have at all: the coordinator left that run out of its log",
            )
        )
    count = 0
    in_flight = _in_flight(coord, name, order)
    for key, digest in sent.items():
        recorded = coord.recorded_all.get(key, set())
        if key in coord.dropped and recorded:
            found.append(
                CrossFinding(
                    "contribution",
                    c.origin,
                    f"run {_short(key[0])}, step {key[1]!r}: the coordinator records {name!r} "
                    "as dropped at that step and also aggregates a contribution under its name",
                )
            )
            continue
        if key in in_flight:
            if cut_short is not None:
                why = (
                    "the coordinator dropped it in that run"
                    if coord.drops.get((key[0], name))
                    else "the coordinator's log closes that run as failed"
                )
                cut_short.append(
                    f"run {_short(key[0])}, step {key[1]!r}: {name!r} logged sending {digest}, "
                    f"which the coordinator did not record: its last message of the run, and {why}"
                )
            continue
        if recorded != {digest}:
            told = ", ".join(sorted(recorded)) if recorded else "nothing"
            found.append(
                CrossFinding(
                    "contribution",
                    c.origin,
                    f"run {_short(key[0])}, step {key[1]!r}: {name!r} logged sending {digest}, "
                    f"the coordinator recorded {told}"
                    + (
                        ""
                        if recorded
                        or (key[0] not in coord.failed and not coord.drops.get((key[0], name)))
                        else " (the run failed or dropped the partner, but only its last "
                        f"send(s) of the run, at most {IN_FLIGHT_MAX}, can be the message in "
                        "flight)"
                    ),
                )
            )
        else:
            count += 1
    for key, digest in coord.recorded.items():
        if key[2] == name and key not in sent:
            found.append(
                CrossFinding(
                    "contribution",
                    c.origin,
                    f"run {_short(key[0])}, step {key[1]!r}: the coordinator attributes "
                    f"{digest} to {name!r}, which never logged sending it",
                )
            )
    checked: set[int] = set()
    for size, root in cosigned_sizes:
        if size in checked:
            continue
        checked.add(size)
        where = f"{name!r} cosigned the coordinator's checkpoint at size {size} ({root[:16]}...)"
        if size > c.size:
            found.append(
                CrossFinding(
                    "truncated",
                    c.origin,
                    f"{where}, but the coordinator's bundle has only {c.size} entries: the log "
                    "was truncated or rolled back",
                )
            )
            continue
        try:
            merkle.verify_consistency(
                size,
                c.size,
                bytes.fromhex(root),
                bytes.fromhex(c.root_hex),
                merkle.consistency_proof(size, c.size, merkle.list_subtree(coord.leaves)),
            )
        except (AuditVerificationError, ValueError) as exc:
            found.append(
                CrossFinding(
                    "inconsistent",
                    c.origin,
                    f"{where}, which the coordinator's bundle does not extend ({exc}): the "
                    "coordinator's history was rewritten",
                )
            )
            continue
        note = next((cp for cp in c.checkpoints if cp.size == size), None)
        if note is None or name not in {n for n, _ in note.cosignatures}:
            found.append(
                CrossFinding(
                    "cosignature-removed",
                    c.origin,
                    f"{where}, but "
                    + (
                        "the coordinator's bundle has no checkpoint of that size"
                        if note is None
                        else "that checkpoint carries no cosignature line by it"
                    )
                    + ": the cosignature was removed (or never stored by the coordinator)",
                )
            )
    cosigned: PartnerCosigned | None = None
    if newest is not None:
        note = next((cp for cp in c.checkpoints if cp.size == newest[0]), None)
        on_note = note is not None and name in note.cosigned_by()
        cosigned = PartnerCosigned(name, newest[0], newest[1], on_note)
    return count, cosigned, requests, decrypted


def _compare_requests(
    coord: _Coordinator,
    per_partner: Mapping[str, Mapping[tuple[str, str, str], str]],
    found: list[CrossFinding],
) -> tuple[int, list[str]]:
    wrong = coord.bundle.origin
    by_step: dict[tuple[str, str, str], dict[str, str]] = defaultdict(dict)
    for partner, requests in per_partner.items():
        for key, digest in requests.items():
            by_step[key][partner] = digest
    compared = 0
    skipped: set[str] = set()
    for (run, step, action_kind), digests in sorted(by_step.items()):
        action, _, kind = action_kind.partition("\t")
        if action in (PER_PARTNER_ACTIONS if kind == "full" else PER_PARTY_SHARED):
            skipped.add(f"{action} (per-partner request)")
            continue
        if kind == "full" and (run, step) in coord.encrypted:
            skipped.add(f"encrypted step {step} (per-partner he meta; needs request_shared)")
            continue
        if len(digests) < 2:
            continue
        compared += 1
        groups: dict[str, list[str]] = defaultdict(list)
        for partner, digest in sorted(digests.items()):
            groups[digest].append(partner)
        if len(groups) > 1:
            got = "; ".join(f"{', '.join(ps)} logged {d[:23]}..." for d, ps in groups.items())
            found.append(
                CrossFinding(
                    "request",
                    wrong,
                    f"run {_short(run)}, step {step!r} ({action}): partners received different "
                    f"requests ({got}): the coordinator sent them different requests",
                )
            )
    return compared, sorted(skipped)


def _check_decryptions(
    coord: _Coordinator,
    decryptor: str,
    records: list[dict[str, Any]],
    sent_by: Mapping[str, Mapping[tuple[str, str, str], str]],
    found: list[CrossFinding],
) -> None:
    wrong = coord.bundle.origin
    for body in records:
        run, step = _run(body), str(body.get("step"))
        head = f"run {_short(run)}, step {step!r}: decryptor {decryptor!r}"
        aggregate = coord.aggregates.get((run, step))
        ciphertext = body.get("ciphertext")
        if aggregate is None:
            found.append(
                CrossFinding(
                    "decryption",
                    wrong,
                    f"{head} decrypted {ciphertext}, but the coordinator's log records no "
                    "aggregate for that step",
                )
            )
            continue
        if ciphertext != aggregate:
            found.append(
                CrossFinding(
                    "decryption",
                    wrong,
                    f"{head} decrypted ciphertext {ciphertext}, not the aggregate {aggregate} "
                    "the coordinator logged: it was made to decrypt something other than the "
                    "logged sum of contributions",
                )
            )
        contributors = body.get("contributors", {})
        names = set(contributors) if isinstance(contributors, dict | list) else set()
        logged = coord.contributors.get((run, step), set())
        if names and names != logged:
            found.append(
                CrossFinding(
                    "decryption",
                    wrong,
                    f"{head} was told the sum holds {sorted(names)}, the coordinator logged "
                    f"contributions of {sorted(logged)}",
                )
            )
        if isinstance(contributors, dict):
            for partner, digest in sorted(contributors.items()):
                theirs = sent_by.get(partner, {}).get((run, step, partner))
                if partner in sent_by and theirs != digest:
                    found.append(
                        CrossFinding(
                            "decryption",
                            wrong,
                            f"{head} was given {digest} as {partner!r}'s contribution, but "
                            f"{partner!r} logged sending {theirs}",
                        )
                    )


def cross_check(coordinator: VerifiedBundle, partners: Mapping[str, VerifiedBundle]) -> CrossCheck:
    """Check verified bundles against each other; every disagreement becomes a finding.

    ``partners`` maps each partner name to its verified bundle, whose origin
    must be that name.
    """
    for name, bundle in partners.items():
        if bundle.origin != name:
            raise AuditVerificationError(
                f"{bundle.path} is the log of {bundle.origin!r}, not of {name!r}",
                hint="pair each partner name with its own bundle",
            )
    coord = _Coordinator(coordinator)
    found: list[CrossFinding] = []
    matched: dict[str, int] = {}
    cosigned: list[PartnerCosigned] = []
    requests: dict[str, dict[tuple[str, str, str], str]] = {}
    decryptions: dict[str, list[dict[str, Any]]] = {}
    sent_by: dict[str, dict[tuple[str, str, str], str]] = {}
    cut_short: list[str] = []
    for name, bundle in sorted(partners.items()):
        count, newest, reqs, dec = _partner_checks(coord, name, bundle, found, cut_short)
        matched[name] = count
        requests[name] = reqs
        decryptions[name] = dec
        sent_by[name] = {
            (_run(_body(ev)), str(_body(ev).get("step")), name): str(_body(ev).get("reply"))
            for ev in bundle.events()
            if ev.get("type") == "data.sent"
        }
        if newest is not None:
            cosigned.append(newest)
    for (run, partner), times in sorted(coord.drops.items()):
        if times > 1:
            found.append(
                CrossFinding(
                    "contribution",
                    coordinator.origin,
                    f"run {_short(run)}: the coordinator's log records {partner!r} as dropped "
                    f"{times} times (a dropped partner is never asked again in its run)",
                )
            )
    for run, step in coord.malformed:
        found.append(
            CrossFinding(
                "contribution",
                coordinator.origin,
                f"run {_short(run)}, step {step!r}: an aggregate whose contributions are not "
                "a partner -> digest object: no contribution can be checked against it",
            )
        )
    for (run, step), times in sorted(coord.aggregations.items()):
        if times > 1:
            found.append(
                CrossFinding(
                    "contribution",
                    coordinator.origin,
                    f"run {_short(run)}, step {step!r}: the coordinator's log records {times} "
                    "aggregates of that one step (each step is aggregated once): a cosignature "
                    "over one of them vouches for none of the others",
                )
            )
    compared, skipped = _compare_requests(coord, requests, found)
    for name, records in sorted(decryptions.items()):
        _check_decryptions(coord, name, records, sent_by, found)
    return CrossCheck(
        matched=matched,
        jobs=len({run for run, _ in coord.contributors}),
        findings=tuple(found),
        cosigned=tuple(cosigned),
        requests_compared=compared,
        not_compared=tuple(skipped),
        cut_short=tuple(cut_short),
    )
