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
    contribution under its name there; or the coordinator's log aggregates one
    (run, step) more than once (a partner cosigns the aggregates it is shown,
    so a second, unshown one could attribute anything to it).
    Not a finding: in a run that log closes as cut short by a coordinator
    restart (``job.failed`` with ``interrupted``, written by
    ``coordinator.recovery``), a partner's *last* sends of the run, at most
    :data:`IN_FLIGHT_MAX` (one message's requests), at steps the log never
    aggregated: the crash came first. Those sends are listed in
    ``CrossCheck.cut_short`` and printed by every command. A coordinator can thus
    leave the one message in flight unrecorded, at the price of a signed
    admission that the run failed; every earlier send of the run must match.
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
  ``he`` and ``cosign`` (:func:`client.contribution.shared_request_digest`), so
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
    #: Contributions a partner logged sending at a step of a run the coordinator's log
    #: closes as cut short by a coordinator restart (``job.failed`` with
    #: ``interrupted``) and for which that log records no aggregate at all: the crash
    #: came before the coordinator recorded them. Not findings; listed for the auditor.
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
        self.aggregates: dict[tuple[str, str], str] = {}  # (run, step) -> aggregate digest
        self.contributors: dict[tuple[str, str], set[str]] = {}
        self.dropped: set[tuple[str, str, str]] = set()
        self.runs: set[str] = set()
        self.interrupted: set[str] = set()  # runs closed by a coordinator restart
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
                if isinstance(contributions, dict):
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
            elif etype == "job.failed" and body.get("interrupted") is True:
                self.interrupted.add(_run(body))


def _in_flight(coord: _Coordinator, order: list[tuple[str, str, str]]) -> set[tuple[str, str, str]]:
    """A partner's sends that a coordinator crash can explain: in a run the coordinator's
    log closes as cut short (``interrupted``), the sends at steps that log never
    aggregated, if they are the partner's *last* sends of that run and at most
    :data:`IN_FLIGHT_MAX` of them (the requests of the one message in flight:
    one exchange asks a partner at most that many things at once). Any other
    unrecorded send of such a run stays a ``contribution`` finding."""
    out: set[tuple[str, str, str]] = set()
    for run in {key[0] for key in order} & coord.interrupted:
        sends = [key for key in order if key[0] == run]
        tail: list[tuple[str, str, str]] = []
        for key in reversed(sends):
            if (key[0], key[1]) in coord.contributors or key in coord.dropped:
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
    in_flight = _in_flight(coord, order)
    for key, digest in sent.items():
        recorded = coord.recorded_all.get(key, set())
        if key in coord.dropped:
            if not recorded:
                continue  # dropped (late, refused, malformed): not aggregated
            found.append(
                CrossFinding(
                    "contribution",
                    c.origin,
                    f"run {_short(key[0])}, step {key[1]!r}: the coordinator records {name!r} "
                    "as dropped at that step and also aggregates a contribution under its name",
                )
            )
        if key in in_flight:
            if cut_short is not None:
                cut_short.append(
                    f"run {_short(key[0])}, step {key[1]!r}: {name!r} logged sending {digest}; "
                    "the coordinator stopped before it recorded that step (run closed as cut "
                    "short by a coordinator restart)"
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
                        if recorded or key[0] not in coord.interrupted
                        else " (the run is closed as cut short, but only the partner's last "
                        f"send(s) of a cut-short run, at most {IN_FLIGHT_MAX}, can be the "
                        "step in flight)"
                    ),
                )
            )
        elif key not in coord.dropped:
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
