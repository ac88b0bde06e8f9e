"""A malicious coordinator against masked aggregation on the real partner node path.

:class:`tests.support.adversarial.Attacker` takes the coordinator's seat and drives
``client.client_app._serve`` (the SuperNode's ClientApp) through the
``query.secagg`` stages and the planned data request of a ``privacy.aggregation =
"masked"`` job, with real audit keys, pinned peer keys, grants and run contracts.
The last test runs the real coordinator (``coordinator.roster.Roster``) against
the real partners over the in-memory Grid, with partners dropping out.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedcollab.common.jobspec import JobSpec
from fedcollab.common.serde import Payload
from fedcollab.coordinator.audit import JobAudit
from fedcollab.coordinator.outputs import JobOutputs
from fedcollab.coordinator.roster import Roster
from fedcollab.coordinator.secagg import MaskedSum
from fedcollab.federation.inmemory import InMemoryGrid, in_memory_federation, task_identity
from fedcollab.privacy.envelope import Envelope
from fedcollab.privacy.secagg_job import CODEC
from fedcollab.privacy.secagg_messages import UnmaskRequest
from fedcollab.privacy.secagg_unmask import route_shares
from fedcollab.privacy.secagg_wire import (
    dump,
    load_survivor_signature,
    load_unmask_response,
)
from fedcollab.protocols import preprocessing
from tests.support.adversarial import Attacker, job, layout_meta, write_partner

CHANNELS = ["app", "web"]
LENGTH = preprocessing.MomentsLayout(
    numeric_names=("spend", "visits"),
    categorical_vocab={"channel": tuple(CHANNELS)},
    boolean_names=("member",),
).length


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _masked_job(**fields: Any) -> JobSpec:
    return job(privacy={"aggregation": "masked"}, **fields)


def _stage(atk: Attacker, name: str, stage: str, secagg: dict[str, Any]) -> Payload:
    return atk.send(name, "query.secagg", step=f"moments.secagg-{stage}", meta={"secagg": secagg})


def _through_masking(
    atk: Attacker, other: str | None = None
) -> tuple[dict[str, Any], dict[str, Payload]]:
    """Advertise, share, and the moments request, for every partner (honestly so far,
    except that ``other`` gets the channels in another order: another request)."""
    names = sorted(atk.configs)
    for name in names:
        assert atk.handshake(name).refused is None
    head = {"cohort": names, "length": LENGTH}
    adverts = {n: _stage(atk, n, "advertise", head).meta["advert"] for n in names}
    sent: dict[str, dict[str, Envelope]] = {}
    for n in names:
        shares = _stage(atk, n, "share", {**head, "adverts": adverts})
        sent[n] = {r: Envelope.from_bytes(b) for r, b in shares.parts.items()}
    inboxes = route_shares(sent)
    replies = {}
    for n in names:
        inbox = {s: _b64(e.to_bytes()) for s, e in inboxes[n].items()}
        channels = CHANNELS[::-1] if n == other else CHANNELS
        meta = {**layout_meta(channel=channels), "secagg": {"inbox": inbox}}
        replies[n] = atk.send(n, "query.moments", step="moments", meta=meta)
    return head, replies


def _unmask(
    atk: Attacker,
    name: str,
    head: dict[str, Any],
    request: UnmaskRequest,
    replies: dict[str, Payload],
    bindings: dict[str, Any] | None = None,
) -> Payload:
    """The unmask stage for ``request``, with each survivor's signed statement from its
    reply (or those of ``bindings``), as the coordinator forwards them."""
    signed = bindings or {n: r.meta.get("binding") for n, r in replies.items()}
    order = [signed.get(n) for n in request.survivors]
    return _stage(atk, name, "unmask", {**head, "request": _b64(dump(request)), "bindings": order})


def test_a_masked_job_s_reply_is_masked_words_only(tmp_path: Path) -> None:
    """The moments reply carries no vector and no ciphertext: only signed masked words,
    which differ from the encoded moments (a one-time pad)."""
    atk = Attacker.against(tmp_path, _masked_job())
    _, replies = _through_masking(atk)
    for name, reply in replies.items():
        assert reply.refused is None, (name, reply.meta)
        assert reply.vector is None and reply.ciphertext is None
        assert set(reply.parts) == {"masked"}
        assert "n_rows" not in atk.handshake(name).meta  # the handshake is idempotent


def test_a_masked_job_never_replies_without_masks(tmp_path: Path) -> None:
    """Attack: skip the session and send the planned moments request as in a plaintext
    job; or send it without this partner's share envelopes."""
    atk = Attacker.against(tmp_path, _masked_job())
    assert atk.handshake("a").refused is None
    bare = atk.send("a", "query.moments", step="moments", meta=layout_meta(channel=CHANNELS))
    assert bare.vector is None and bare.parts == {} and bare.refused is not None


def test_each_stage_is_answered_once(tmp_path: Path) -> None:
    """Attack: re-run the advertisement (fresh keys, so the difference of two masked
    replies would cancel) and re-ask the moments step."""
    atk = Attacker.against(tmp_path, _masked_job())
    head, _ = _through_masking(atk)
    again = _stage(atk, "a", "advertise", head)
    assert again.refused == "ProtocolError" and "advert" not in again.meta
    repeat = atk.send("a", "query.moments", step="moments", meta=layout_meta(channel=CHANNELS))
    assert repeat.refused == "ProtocolError" and repeat.parts == {}


def test_unplanned_stages_and_cohorts_are_refused(tmp_path: Path) -> None:
    """Attack: a session for a step the job does not have; a cohort without this partner,
    below min_partners, or with a partner outside the job's participants."""
    atk = Attacker.against(tmp_path, _masked_job(participants=["a", "b", "c"], min_partners=3))
    assert atk.handshake("a").refused is None
    head = {"cohort": ["a", "b", "c"], "length": LENGTH}
    unplanned = atk.send(
        "a", "query.secagg", step="lloyd-1.secagg-advertise", meta={"secagg": head}
    )
    assert unplanned.refused == "ProtocolError"
    for i, cohort in enumerate((["b", "c"], ["a", "b"], ["a", "b", "c", "mallory"])):
        atk.run = f"run-cohort-{i}"  # a fresh run each: the stage is answered once per run
        assert atk.handshake("a").refused is None
        reply = _stage(atk, "a", "advertise", {"cohort": cohort, "length": LENGTH})
        assert reply.refused == "SecAggRefusal" and "advert" not in reply.meta, cohort


def test_dropping_a_live_partner_from_the_survivor_set_does_not_unmask_it(
    tmp_path: Path,
) -> None:
    """Attack: all five partners sent their masked moments (threshold 4); the coordinator
    tells a-d that e dropped, to get e's masking-key shares, and asks e to sign the full
    set, to get e's self-mask shares too. e refuses a set without itself; a-d reveal
    shares only for the one set they signed and every member signed, so nobody reveals
    a self-mask share of e: e's masked words stay one-time-padded (Bonawitz et al. 2017,
    the consistency check), and e merely leaves the sum."""
    atk = Attacker.against(tmp_path, _masked_job(), names=("a", "b", "c", "d", "e"))
    head, replies = _through_masking(atk)
    rest = ["a", "b", "c", "d"]
    without_e = _stage(atk, "e", "sign", {**head, "survivors": rest})
    assert without_e.refused == "SecAggRefusal" and "signature" not in without_e.meta
    signed = {}
    for n in rest:
        reply = _stage(atk, n, "sign", {**head, "survivors": rest})
        signed[n] = load_survivor_signature(base64.b64decode(reply.meta["signature"]))
    # e's signature over the full set: its signing stage was answered (refused) once.
    assert _stage(atk, "e", "sign", {**head, "survivors": [*rest, "e"]}).refused == (
        "ProtocolError"
    )
    # The full set, signed only by a-d (over another set): a refuses to reveal anything.
    full = UnmaskRequest((*rest, "e"), {n: s.signature for n, s in signed.items()}, ())
    reply = _unmask(atk, "a", head, full, replies)
    assert reply.refused == "SecAggRefusal" and "response" not in reply.meta
    # The set without e, e "dropped": b-d reveal e's masking-key shares, never its
    # self-mask shares; e reveals nothing (it signed no set).
    dropped_e = UnmaskRequest(tuple(rest), {n: s.signature for n, s in signed.items()}, ("e",))
    for name in ("b", "c", "d"):  # a's unmask stage went to the refused request
        r = _unmask(atk, name, head, dropped_e, replies)
        assert r.refused is None, r.meta
        response = load_unmask_response(base64.b64decode(r.meta["response"]))
        assert "e" in response.key_shares and "e" not in response.self_shares
    e_reply = _unmask(atk, "e", head, dropped_e, replies)
    assert e_reply.refused == "SecAggRefusal" and "response" not in e_reply.meta


def test_answers_to_different_requests_are_never_unmasked_together(tmp_path: Path) -> None:
    """Attack (audit of 2026-12-07): the coordinator sends b another moments request than
    a and c (the channels in another order; other centroids or another model work the
    same way), so the unmasked sum would hold b's answer to its own request beside the
    others': enough to single b out. Before, all three revealed their shares. Now each
    checks that every survivor signed an answer to the request it answered itself, and
    nobody reveals anything: forwarding b's statement, or none for b, or one re-signed
    by nobody, is refused alike."""
    atk = Attacker.against(tmp_path, _masked_job())
    names = sorted(atk.configs)
    head, replies = _through_masking(atk, other="b")  # b gets another request
    assert all(r.refused is None for r in replies.values())  # each alone is a planned one
    everyone = UnmaskRequest(tuple(names), {}, ())
    forged = {**replies["b"].meta["binding"]}
    forged["statement"] = {**forged["statement"], "request": replies["a"].meta["binding"][
        "statement"]["request"]}  # fmt: skip
    attempts = {
        "a": None,  # b's own statement: another request
        "b": None,  # a's and c's: another request than b's
        "c": {**{n: r.meta["binding"] for n, r in replies.items()}, "b": forged},
    }
    for name, bindings in attempts.items():
        reply = _unmask(atk, name, head, everyone, replies, bindings)
        assert reply.refused == "CiphertextError" and "response" not in reply.meta, name


def test_a_node_without_a_trail_still_signs_its_masked_answer(tmp_path: Path) -> None:
    """A node with its audit key but no trail (no ``audit-db``) sent no statement with its
    masked answer, so every survivor refused to unmask any step it took part in (red
    team of 2026-12-07). Its audit key signs the statement, trail or not."""
    atk = Attacker.against(tmp_path, _masked_job())
    trail = Path(atk.configs["b"].pop("audit-db"))
    atk.configs["b"]["state-dir"] = str(trail.parent)  # its contract and keys stay there
    _, replies = _through_masking(atk)
    for name, reply in replies.items():
        assert reply.refused is None and reply.meta.get("binding") is not None, name


def test_masks_of_two_runs_never_repeat(tmp_path: Path) -> None:
    """The same partner, data and step in two runs: the masked words differ everywhere
    (fresh session keys and seeds, bound to the run)."""
    atk = Attacker.against(tmp_path, _masked_job())
    _, first = _through_masking(atk)
    atk.run = "run-attack-2"
    _, second = _through_masking(atk)
    a1 = np.frombuffer(first["a"].parts["masked"][-8 * LENGTH :], dtype="<u8")
    a2 = np.frombuffer(second["a"].parts["masked"][-8 * LENGTH :], dtype="<u8")
    assert not np.any(a1 == a2)


# ------------------------------------------------------------- dropouts, real coordinator


class DroppingGrid(InMemoryGrid):
    """Partners in ``gone`` stop answering at the first message of group ``at`` (and
    those in ``later[group]`` at that group's)."""

    def __init__(
        self,
        base: InMemoryGrid,
        gone: set[str],
        at: str,
        later: dict[str, set[str]] | None = None,
    ) -> None:
        super().__init__(base.overrides, [n.name for n in base.nodes])
        self.plan = {at: gone, **(later or {})}
        self.dead = set[int]()

    def push_messages(self, messages: Any) -> list[str]:
        ids = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            name = self.nodes[node - 1].name
            if name in self.plan.get(msg.metadata.group_id, set()):
                self.dead.add(node)
            if node in self.dead:
                ids.append(f"lost-{node}-{msg.metadata.group_id}")  # never answered
                continue
            ids.extend(super().push_messages([msg]))
        return ids


def _moments_federation(
    tmp_path: Path,
    n: int,
    gone: set[str],
    at: str,
    later: dict[str, set[str]] | None = None,
    aggregation: str = "masked",
) -> tuple[list[str], Roster, DroppingGrid]:
    """``n`` real partners p0.. (threshold from the cohort, min_partners 3) behind a
    :class:`DroppingGrid`, and a coordinator roster for a masked moments step (in
    "ckks+masked" the last partner deals the job key)."""
    names = [f"p{i}" for i in range(n)]
    privacy: dict[str, Any] = {"aggregation": aggregation}
    if aggregation == "ckks+masked":
        privacy.update(encryption="ckks", key_dealer=names[-1])
    spec = job(privacy=privacy, participants=names, min_partners=3, round_timeout_s=2.0)
    sources = [write_partner(tmp_path / "data", name, seed=i) for i, name in enumerate(names)]
    base, audit_config, policy = in_memory_federation(spec, sources, tmp_path)
    grid = DroppingGrid(base, gone, at=at, later=later)
    audit = JobAudit(audit_config, spec)
    roster = Roster(spec=spec, outputs=JobOutputs(tmp_path / "out"), audit=audit, policy=policy)
    return names, roster, grid


def _ask_moments(roster: Roster, grid: DroppingGrid) -> MaskedSum:
    """Discover the partners and send the masked moments request (inside task_identity)."""
    roster.discover(grid)  # type: ignore[arg-type]
    if roster.spec.privacy.encrypted:
        roster.setup_encryption(grid)  # type: ignore[arg-type]
    acc = roster.new_sum(LENGTH)
    assert isinstance(acc, MaskedSum)
    meta = layout_meta(channel=CHANNELS)
    roster.request(grid, action="query.moments", meta=meta, into=acc, step="moments")  # type: ignore[arg-type]
    return acc


@pytest.mark.parametrize("aggregation", ["masked", "ckks+masked"])
@pytest.mark.parametrize("dropouts", [0, 1, 2])
def test_the_masked_sum_is_exact_with_dropouts(
    tmp_path: Path, dropouts: int, aggregation: str
) -> None:
    """7 partners (threshold 5): 0, 1 and n - t = 2 of them drop after sharing their keys
    (before their masked moments). The coordinator unmasks the survivors' sum, which
    equals the sum of the survivors' own moments on the fixed-point grid; in
    "ckks+masked" through the key holder's verified decryption of their limbs."""
    gone = {f"p{i}" for i in range(dropouts)}
    names, roster, grid = _moments_federation(
        tmp_path, 7, gone, at="moments", aggregation=aggregation
    )
    with task_identity():
        acc = _ask_moments(roster, grid)
        total = roster.reveal(grid, acc, step="moments")  # type: ignore[arg-type]
    survivors = set(acc.masked) if acc.ckks is None else acc.contributors
    assert acc.u2 == frozenset(names) and survivors == set(names) - gone
    assert np.array_equal(total, _own_moments(tmp_path, names, set(names) - gone))
    assert [d["partner"] for d in roster.dropped] == sorted(gone)


def _own_moments(tmp_path: Path, names: list[str], which: set[str]) -> np.ndarray:
    """The sum of ``which`` partners' own moments on the fixed-point grid, asked in
    plaintext from fresh copies of their nodes."""
    plain = Attacker.against(tmp_path / "plain", job(participants=names, min_partners=3),
                             names=tuple(names))  # fmt: skip
    expected = np.zeros(LENGTH)
    for name in sorted(which):
        assert plain.handshake(name).refused is None
        reply = plain.send(
            name, "query.moments", step="moments", meta=layout_meta(channel=CHANNELS)
        )
        assert reply.vector is not None
        expected += CODEC.decode(CODEC.encode(reply.vector), summands=1)
    return expected


@pytest.mark.parametrize("lost", [1, 2, 3])
def test_a_survivor_lost_at_the_unmasking_stays_in_the_sum(tmp_path: Path, lost: int) -> None:
    """7 partners (threshold 5) sent their masked moments, so nobody dropped: the
    coordinator asks for the unmasking at once (no survivor set to sign), and ``lost`` of
    them stop there. With 1 or 2 lost, the 5 or 6 others' self-mask shares suffice and the
    sum of all 7 is exact; with 3 lost only 4 answer, below t: nothing is unmasked, and the
    shares that were revealed are self-mask shares only (no masking-key share of anyone)."""
    from fedcollab.common.errors import NotEnoughPartnersError

    gone = {f"p{i}" for i in range(7 - lost, 7)}
    names, roster, grid = _moments_federation(tmp_path, 7, gone, at="moments.secagg-unmask")
    with task_identity():
        acc = _ask_moments(roster, grid)
        assert set(acc.masked) == set(names)  # everyone's masked input arrived
        if lost > 2:
            with pytest.raises(NotEnoughPartnersError, match="4 survivors answered, 5 needed"):
                roster.reveal(grid, acc, step="moments")  # type: ignore[arg-type]
            assert set(acc.responses) == set(names) - gone
            assert all(not r.key_shares for r in acc.responses.values())
            return
        total = roster.reveal(grid, acc, step="moments")  # type: ignore[arg-type]
    assert acc.signatures == {}  # no consistency check without a dropout
    assert set(acc.responses) == set(names) - gone
    assert all(not r.key_shares for r in acc.responses.values())
    assert np.array_equal(total, _own_moments(tmp_path, names, set(names)))
    assert [d["partner"] for d in roster.dropped] == sorted(gone)


@pytest.mark.parametrize("lost", [1, 2, 3])
def test_a_survivor_lost_at_the_consistency_check_stays_in_the_sum(
    tmp_path: Path, lost: int
) -> None:
    """8 partners (threshold 5); p0 drops before its masked moments, so the survivors (7)
    must sign their set before anything is revealed, and ``lost`` of them stop before
    signing. With t = 5 signatures on the same set (Bonawitz et al. 2017, round 3) the
    lost survivors stay in U3: their inputs are in the sum and their self-masks are
    removed with the others' shares. With 3 lost only 4 sign: below t, nothing is
    unmasked and no share of anyone is revealed."""
    from fedcollab.common.errors import NotEnoughPartnersError

    gone = {f"p{i}" for i in range(8 - lost, 8)}
    names, roster, grid = _moments_federation(
        tmp_path, 8, {"p0"}, at="moments", later={"moments.secagg-sign": gone}
    )
    survivors = set(names) - {"p0"}
    with task_identity():
        acc = _ask_moments(roster, grid)
        assert set(acc.masked) == survivors
        if len(gone) > 2:
            with pytest.raises(NotEnoughPartnersError, match="did not sign"):
                roster.reveal(grid, acc, step="moments")  # type: ignore[arg-type]
            assert acc.responses == {}  # no share of anyone was revealed
            return
        total = roster.reveal(grid, acc, step="moments")  # type: ignore[arg-type]
    assert set(acc.signatures) == survivors - gone
    assert set(acc.responses) == survivors - gone
    assert all(set(r.key_shares) == {"p0"} for r in acc.responses.values())
    assert np.array_equal(total, _own_moments(tmp_path, names, survivors))
    assert [d["partner"] for d in roster.dropped] == sorted({"p0"} | gone)


@pytest.mark.parametrize("aggregation", ["masked", "ckks+masked"])
def test_masked_statistics_in_business_units_are_carried_exactly(
    tmp_path: Path, aggregation: str
) -> None:
    """Spend in the 1e6 range (card balances, order values in cents): one partner's sum of
    squares (~3e14) is beyond the masked codec's one-word budget (2^36). Every partner
    used to refuse its moments (OverflowBudgetError: a masked job on such a table could
    not start); the statistics now travel as high and low words and the unmasked sum
    equals the partners' own moments."""
    names = ["a", "b", "c"]
    encryption = "ckks" if aggregation.startswith("ckks") else "none"
    privacy = {"encryption": encryption, "aggregation": aggregation}
    spec = job(privacy=privacy, participants=names, min_partners=3)
    sources = [
        write_partner(tmp_path / "data", n, seed=i, spend_scale=1e4) for i, n in enumerate(names)
    ]
    grid, audit_config, policy = in_memory_federation(spec, sources, tmp_path)
    audit = JobAudit(audit_config, spec)
    roster = Roster(spec=spec, outputs=JobOutputs(tmp_path / "out"), audit=audit, policy=policy)
    meta = layout_meta(channel=CHANNELS)
    with task_identity():
        roster.discover(grid)  # type: ignore[arg-type]
        if aggregation.startswith("ckks"):
            roster.setup_encryption(grid)  # type: ignore[arg-type]
        acc = roster.new_sum(LENGTH)
        roster.request(grid, action="query.moments", meta=meta, into=acc, step="moments")  # type: ignore[arg-type]
        total = roster.reveal(grid, acc, step="moments")  # type: ignore[arg-type]
    assert isinstance(acc, MaskedSum) and acc.split and acc.length == 2 * LENGTH
    plain = Attacker.against(tmp_path / "plain", job(participants=names, min_partners=3),
                             names=tuple(names), spend_scale=1e4)  # fmt: skip
    want = np.zeros(LENGTH)
    for name in names:
        assert plain.handshake(name).refused is None
        reply = plain.send(name, "query.moments", step="moments", meta=meta)
        assert reply.vector is not None
        want += reply.vector
    assert np.max(want) > 1e14  # the sum of squares of spend
    assert np.allclose(total, want, rtol=1e-12, atol=3 * CODEC.grid)


def test_a_client_dp_sum_below_min_partners_is_never_unmasked(tmp_path: Path) -> None:
    """Attack: a dp = "client" masked job, 4 partners, min_partners = 4: each adds a
    quarter of the noise variance. All four shared keys; the coordinator holds back d's
    request (or claims d dropped) and asks a-c to sign {a, b, c} and unmask it, for a sum
    that carries 3/4 of the DP noise. With the bare SecAgg threshold (3 of 4) a-c signed
    it; now the session's threshold is max(2t - n > 1, min_partners) = 4, so every
    survivor refuses to sign a smaller set and no share is revealed for it."""
    from fedcollab.client.budget import ledger_path
    from fedcollab.privacy.budget_ledger import BudgetLedger
    from tests.support.adversarial import BOUNDS

    spec = job(
        min_partners=4,
        privacy={"aggregation": "masked", "dp": "client", "target_epsilon": 50.0,
                 "value_bounds": BOUNDS},
    )  # fmt: skip
    atk = Attacker.against(tmp_path, spec, names=("a", "b", "c", "d"))
    for cfg in atk.configs.values():
        with BudgetLedger.open(ledger_path(cfg)) as ledger:
            ledger.set_cap("shop", epsilon_cap=1000.0, delta=1e-5)
    names = sorted(atk.configs)
    for name in names:
        assert atk.handshake(name).refused is None
    head = {"cohort": names, "length": LENGTH}
    adverts = {n: _stage(atk, n, "advertise", head).meta["advert"] for n in names}
    sent = {}
    for n in names:
        shares = _stage(atk, n, "share", {**head, "adverts": adverts})
        assert shares.refused is None, shares.meta
        sent[n] = {r: Envelope.from_bytes(b) for r, b in shares.parts.items()}
    inboxes = route_shares(sent)
    rest = ["a", "b", "c"]
    for n in rest:  # d is never asked: it "dropped" after sharing its keys
        inbox = {s: _b64(e.to_bytes()) for s, e in inboxes[n].items()}
        meta = {**layout_meta(channel=CHANNELS), "secagg": {"inbox": inbox}}
        reply = atk.send(n, "query.moments", step="moments", meta=meta)
        assert reply.refused is None and set(reply.parts) == {"masked"}, reply.meta
    for n in rest:
        signed = _stage(atk, n, "sign", {**head, "survivors": rest})
        assert signed.refused == "SecAggRefusal" and "signature" not in signed.meta, n
    # What the coordinator holds: three one-time-padded masked inputs and d's public
    # session keys; no survivor signature, so no partner reveals a share for this set.
