"""The partner side of dropout-tolerant secure aggregation: a state machine per session.

Long module: one state machine per secure-aggregation session.

Implements the client of Bonawitz et al. 2017 ("Practical Secure Aggregation
for Privacy-Preserving Machine Learning", ACM CCS, Fig. 4, malicious-server
variant with the consistency check), over the complete graph; Bell et al.
2020 ("Secure Single-Server Aggregation with (Poly)Logarithmic Overhead",
ACM CCS) restrict the same steps to a sparse neighbour graph. The stages,
each answered exactly once per session (:class:`Stage`):

1. :meth:`SecAggPartner.advertise`: fresh per-session keys, signed with the
   partner's audit key (:class:`~privacy.secagg_session.Advertisement`).
2. :meth:`SecAggPartner.share_keys`: check every peer's advertisement against
   the audit keys *this node* pinned (its own entry must be its own keys),
   Shamir-share (:mod:`privacy.shamir`, Shamir 1979) the masking private key
   ``s_u`` and the self-mask seed ``b_u`` t-of-n, and seal one share pair per
   peer (:func:`privacy.envelope.seal`: HPKE to the peer's advertised key,
   signed by this partner).
3. :meth:`SecAggPartner.masked_input`: open the peers' envelopes (the senders
   form ``U2``), return ``y_u = encode(x_u) + PRG(b_u) + sum_v +-PRG(s_uv)``.
4. :meth:`SecAggPartner.sign_survivors`: sign the survivor set ``U3`` (whose
   masked inputs the coordinator will sum) once.
5. :meth:`SecAggPartner.unmask`: only for the set this partner signed, and
   only if at least ``t`` members of it signed the same set (and no signature
   is on another), reveal ``b_v`` shares for survivors and ``s_v`` shares for
   the dropped peers the request names, never both kinds for one peer.
   With no dropout (every partner of U2 sent its input) stage 4 is skipped and
   only ``b_v`` shares are revealed, for exactly U2 (Notes, "No dropout").

Every method is pure with respect to the outside world (values in, values
out); a refused call raises :class:`~privacy.secagg_session.SecAggRefusal`
and leaves the state unchanged. :class:`SessionLedger` refuses a second
session for a (run, step, purpose) the node already took part in.

Notes
-----
*Once per stage.* A partner that answered a stage twice could be made to
mask one vector with two different peer sets (the difference of two replies
cancels most masks) or to sign two survivor sets; so every stage is a
one-way transition and a repeat is refused rather than re-answered.

*Survivor check.* As in Bonawitz et al. (round 3 of the malicious-server
variant), ``t`` signatures on the same survivor set suffice: a partner lost
between sending its masked input and signing stays a survivor (its input is
in the sum, its self-mask removed with the others' ``b`` shares), and the step
completes. What protects a live partner is that each honest partner signs one
set per session and reveals shares only for the set it signed, so the answerers
of two different sets overlap only in colluders (the threshold argument,
:mod:`privacy.secagg_session`, Notes); requiring ``t`` signatures on top of it
makes the coordinator show the set to a threshold of survivors before anyone
reveals a share. (Requiring *every* survivor's signature, as this module did
before, stopped the step whenever one survivor was lost there.)

*No dropout.* When every partner of U2 sent its masked input, the coordinator
asks for the unmasking at once (stage 4 skipped): no dropped peer, no
signatures, the survivors exactly this partner's U2. The reply holds ``b_v``
shares only. Signing exists to stop a coordinator that shows different
survivor sets to different partners from collecting ``b_v`` shares from some
and ``s_v`` shares from others; a partner answering this request reveals no
``s`` share and can sign nothing afterwards, so the partners revealing ``s_v``
(after ``t`` signatures on a set without ``v``) and those revealing ``b_v``
(here, or on a signed set with ``v``) still overlap only in colluders, and the
threshold argument (:mod:`privacy.secagg_session`, Notes) holds as before:
``2t - n > colluders``. Without a dropout the signed path reveals exactly the
same shares, so the coordinator learns nothing more; a dropout, claimed or
real, still goes through stage 4. It saves one message per partner and
aggregate in the common case.
"""

from __future__ import annotations

import base64
import enum
import json
import secrets
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace

import numpy.typing as npt

from fedcollab.common.errors import CiphertextError
from fedcollab.common.keys import Signer, verify_signature
from fedcollab.privacy.envelope import Envelope, open_envelope, seal
from fedcollab.privacy.key_transport import PeerKeys, TransportKey
from fedcollab.privacy.masking import MaskingKey
from fedcollab.privacy.secagg_messages import (
    MaskedInput,
    SurvivorSignature,
    UnmaskRequest,
    UnmaskResponse,
    input_statement,
    shares_topic,
    survivor_statement,
)
from fedcollab.privacy.secagg_session import (
    Advertisement,
    SecAggConfig,
    SecAggRefusal,
    commit_self_seed,
    mask_stream,
    pair_sign,
    pairwise_seed,
    self_mask_key,
)
from fedcollab.privacy.secagg_wire import dump, load_advertisement
from fedcollab.privacy.shamir import SHARE_BYTES, Share, split

__all__ = ["SecAggPartner", "SessionLedger", "Stage"]

_SHARES_MAGIC = b"FCSS1"


class Stage(enum.Enum):
    NEW = 0
    ADVERTISED = 1
    SHARED = 2
    MASKED = 3
    SIGNED = 4
    UNMASKED = 5


@dataclass(frozen=True)
class _State:
    stage: Stage = Stage.NEW
    adverts: Mapping[str, Advertisement] = field(default_factory=dict)
    held: Mapping[str, tuple[Share, Share]] = field(default_factory=dict)
    u2: frozenset[str] = frozenset()
    signed: tuple[str, ...] = ()


class SecAggPartner:
    """One partner's side of one session; see the module docstring for the stages."""

    def __init__(self, config: SecAggConfig, *, me: str, signer: Signer, peers: PeerKeys) -> None:
        config.index(me)
        if peers.get(me) != signer.public_key:
            raise SecAggRefusal(
                f"the pinned audit key under this node's own name {me!r} is not its key",
                hint="the peer list was altered; re-pin the partners' keys you checked yourself",
            )
        self.config = config
        self.me = me
        self._signer = signer
        self._peers = peers
        self._envelope_key = TransportKey.generate()
        self._masking_key = MaskingKey.generate()
        self._self_seed = secrets.token_bytes(32)
        self._state = _State()

    @property
    def stage(self) -> Stage:
        return self._state.stage

    def _expect(self, stage: Stage, action: str) -> None:
        if self._state.stage is not stage:
            raise SecAggRefusal(
                f"{action} refused: session {self.config.run}/{self.config.step}/"
                f"{self.config.purpose} is at stage {self._state.stage.name}, "
                f"expected {stage.name}",
                hint="each stage is answered once, in order; a repeated or out-of-order request "
                "is what a malicious coordinator would send",
            )

    def _advertisement(self) -> Advertisement:
        return Advertisement(
            self.me,
            self.config.digest,
            self._envelope_key.public_bytes(),
            self._masking_key.public_bytes(),
            commit_self_seed(self.config, self.me, self._self_seed),
        ).signed(self._signer)

    def advertise(self) -> Advertisement:
        self._expect(Stage.NEW, "advertising keys")
        adv = self._advertisement()
        self._state = replace(self._state, stage=Stage.ADVERTISED)
        return adv

    def share_keys(self, adverts: Mapping[str, Advertisement]) -> dict[str, Envelope]:
        """Check the peers' keys; one sealed share pair per peer in ``adverts`` (incl. self)."""
        self._expect(Stage.ADVERTISED, "sharing keys")
        cfg = self.config
        u1 = cfg.check_subset(frozenset(adverts), "the advertised key set")
        mine = self._advertisement()
        if adverts.get(self.me) != mine:
            raise SecAggRefusal(
                "the keys relayed under this partner's own name are not its own",
                hint="the coordinator substituted this partner's keys; refused",
            )
        seen: set[bytes] = set()
        for name, adv in adverts.items():
            if adv.partner != name:
                raise SecAggRefusal(f"advertisement of {adv.partner!r} relayed as {name!r}")
            adv.verify(cfg, self._peers)
            for key in (adv.envelope_key, adv.masking_key):
                if key in seen:
                    raise SecAggRefusal(
                        f"{name!r} advertised a key another partner uses",
                        hint="a replayed key would make masks cancel locally; refused",
                    )
                seen.add(key)
        holders = sorted(u1)
        xs = [cfg.index(v) for v in holders]
        key_shares = split(self._masking_key.to_bytes(), threshold=cfg.threshold, xs=xs)
        self_shares = split(self._self_seed, threshold=cfg.threshold, xs=xs)
        out: dict[str, Envelope] = {}
        for v, ks, bs in zip(holders, key_shares, self_shares, strict=True):
            payload = _SHARES_MAGIC + ks.y_bytes() + bs.y_bytes()
            out[v] = seal(
                payload,
                run=cfg.run,
                sender=self.me,
                recipient=v,
                topic=shares_topic(cfg),
                recipient_key=adverts[v].envelope_key,
                signer=self._signer,
            )
        self._state = replace(self._state, stage=Stage.SHARED, adverts=dict(adverts))
        return out

    def masked_input(self, inbox: Mapping[str, Envelope], values: npt.ArrayLike) -> MaskedInput:
        """Open the peers' share envelopes (their senders form U2) and mask ``values``."""
        self._expect(Stage.SHARED, "masking the input")
        cfg = self.config
        encoded = cfg.codec.encode(values)
        if encoded.size != cfg.length:
            raise SecAggRefusal(f"the vector has {encoded.size} values, the plan says {cfg.length}")
        if self.me not in inbox:
            raise SecAggRefusal("the coordinator withheld this partner's own share envelope")
        held: dict[str, tuple[Share, Share]] = {}
        x = cfg.index(self.me)
        for sender, env in inbox.items():
            if sender not in self._state.adverts:
                raise SecAggRefusal(f"shares from {sender!r}, who advertised no keys")
            try:
                payload = open_envelope(
                    env,
                    run=cfg.run,
                    me=self.me,
                    sender=sender,
                    topic=shares_topic(cfg),
                    key=self._envelope_key,
                    peers=self._peers,
                )
            except CiphertextError as exc:
                raise SecAggRefusal(f"shares from {sender!r} refused: {exc.message}") from exc
            if len(payload) != len(_SHARES_MAGIC) + 2 * SHARE_BYTES or not payload.startswith(
                _SHARES_MAGIC
            ):
                raise SecAggRefusal(f"shares from {sender!r} are malformed")
            body = payload[len(_SHARES_MAGIC) :]
            held[sender] = (
                Share.from_y_bytes(x, body[:SHARE_BYTES]),
                Share.from_y_bytes(x, body[SHARE_BYTES:]),
            )
        u2 = cfg.check_subset(frozenset(held), "the set of partners who shared keys")
        out = encoded + mask_stream(self_mask_key(cfg, self.me, self._self_seed), cfg.length)
        for v in sorted(u2 - {self.me}):
            seed = pairwise_seed(
                cfg,
                self._masking_key,
                me=self.me,
                peer=v,
                peer_public=self._state.adverts[v].masking_key,
            )
            if pair_sign(self.me, v) > 0:
                out += mask_stream(seed, cfg.length)
            else:
                out -= mask_stream(seed, cfg.length)
        words = out.astype("<u8").tobytes()
        signature = self._signer.sign(input_statement(cfg, self.me, words))
        self._state = replace(self._state, stage=Stage.MASKED, held=held, u2=u2)
        return MaskedInput(self.me, words, signature)

    def sign_survivors(self, survivors: Collection[str]) -> SurvivorSignature:
        """Sign the survivor set U3 (once): it must lie in U2, hold ``t`` partners and this one."""
        self._expect(Stage.MASKED, "signing the survivor set")
        u3 = self.config.check_subset(frozenset(survivors), "the survivor set")
        if not u3 <= self._state.u2:
            raise SecAggRefusal(
                f"survivors {sorted(u3 - self._state.u2)} never shared keys with this partner"
            )
        if self.me not in u3:
            raise SecAggRefusal(
                "the survivor set leaves out this partner, which sent its masked input",
                hint="the coordinator claims a live partner dropped; refused",
            )
        ordered = tuple(sorted(u3))
        signature = self._signer.sign(survivor_statement(self.config, ordered))
        self._state = replace(self._state, stage=Stage.SIGNED, signed=ordered)
        return SurvivorSignature(self.me, ordered, signature)

    def unmask(self, request: UnmaskRequest) -> UnmaskResponse:
        """Reveal shares for the survivor set this partner signed, checked as in the docstring;
        or, with no dropout (no signatures, no dropped peer), for the whole of U2."""
        if self._state.stage is Stage.MASKED and not request.signatures and not request.dropped:
            return self._unmask_complete(request)
        self._expect(Stage.SIGNED, "unmasking")
        cfg = self.config
        u3 = tuple(sorted(set(request.survivors)))
        if u3 != self._state.signed:
            raise SecAggRefusal(
                "the unmask request names another survivor set than the one this partner signed",
                hint="the coordinator showed partners different survivor sets; refused",
            )
        statement = survivor_statement(cfg, u3)
        signers: set[str] = set()
        for v, sig in request.signatures.items():
            if v not in u3 or not verify_signature(self._peers.get(v), sig, statement):
                raise SecAggRefusal(
                    f"{v!r}'s signature is not on this survivor set",
                    hint="the coordinator relayed a signature on another set; refused",
                )
            signers.add(v)
        if len(signers) < cfg.threshold:
            raise SecAggRefusal(
                f"survivors {sorted(set(u3) - signers)} did not sign this survivor set: "
                f"{len(signers)} signatures, {cfg.threshold} needed",
                hint="at least t survivors must sign the same set before any share is revealed",
            )
        dropped = set(request.dropped)
        both = dropped & set(u3)
        if both:
            raise SecAggRefusal(
                f"asked for masking-key shares of survivors {sorted(both)}",
                hint="revealing both kinds of share for one partner unmasks its vector; refused",
            )
        if not dropped <= self._state.u2:
            raise SecAggRefusal(
                f"asked for shares of {sorted(dropped - self._state.u2)}, who never shared keys"
            )
        response = UnmaskResponse(
            self.me,
            {v: self._state.held[v][1] for v in u3},
            {v: self._state.held[v][0] for v in sorted(dropped)},
        )
        self._state = replace(self._state, stage=Stage.UNMASKED)
        return response

    def _unmask_complete(self, request: UnmaskRequest) -> UnmaskResponse:
        """No dropout: ``b_v`` shares for every partner of this one's U2, and nothing else.

        Without a claimed dropout there is no survivor set to agree on: the request must
        name exactly the partners whose shares this one opened (U2), all of whose masks
        are in its input, and it asks for no masking-key share, so the reply removes
        self-masks only and cannot cancel a pairwise mask. The session ends here (no
        survivor set can be signed after it), so this partner never reveals ``s``
        shares in this session (module Notes, "No dropout")."""
        u3 = frozenset(request.survivors)
        if u3 != self._state.u2:
            raise SecAggRefusal(
                "an unmask request without survivor signatures must name exactly the partners "
                f"that shared keys with this one ({sorted(self._state.u2)}), got {sorted(u3)}",
                hint="a claimed dropout needs the survivors' signed set first; refused",
            )
        response = UnmaskResponse(self.me, {v: self._state.held[v][1] for v in sorted(u3)}, {})
        self._state = replace(self._state, stage=Stage.UNMASKED)
        return response

    # -- persistence -----------------------------------------------------------
    def to_bytes(self) -> bytes:
        """Secret: the whole session (keys, self-mask seed, held shares, stage) as JSON.

        A partner node serves each message in a fresh process, so it stores this between
        stages (0600, erased with the run's keys). The config is bound by its digest."""
        st = self._state
        body = {
            "type": "secagg.partner-state/v1",
            "config": self.config.digest,
            "me": self.me,
            "envelope_key": _b64(self._envelope_key.to_bytes()),
            "masking_key": _b64(self._masking_key.to_bytes()),
            "self_seed": _b64(self._self_seed),
            "stage": st.stage.value,
            "adverts": {n: _b64(_advert_bytes(a)) for n, a in st.adverts.items()},
            "held": {
                n: [ks.x, _b64(ks.y_bytes()), _b64(bs.y_bytes())] for n, (ks, bs) in st.held.items()
            },
            "u2": sorted(st.u2),
            "signed": list(st.signed),
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def restore(
        cls, raw: bytes, config: SecAggConfig, *, me: str, signer: Signer, peers: PeerKeys
    ) -> SecAggPartner:
        """The session :meth:`to_bytes` stored, for ``config`` only."""
        try:
            body = json.loads(raw)
            if body.get("type") != "secagg.partner-state/v1":
                raise ValueError("not a secure-aggregation session state")
            if body["config"] != config.digest or body["me"] != me:
                raise SecAggRefusal(
                    "the stored session belongs to another configuration",
                    hint="the request names another cohort or length than the session's "
                    "advertisement; refused",
                )
            partner = cls(config, me=me, signer=signer, peers=peers)
            partner._envelope_key = TransportKey.from_bytes(_unb64(body["envelope_key"]))
            partner._masking_key = MaskingKey.from_bytes(_unb64(body["masking_key"]))
            partner._self_seed = _unb64(body["self_seed"])
            held = {
                n: (Share.from_y_bytes(int(x), _unb64(k)), Share.from_y_bytes(int(x), _unb64(b)))
                for n, (x, k, b) in body["held"].items()
            }
            partner._state = _State(
                stage=Stage(int(body["stage"])),
                adverts={n: _load_advert(_unb64(a)) for n, a in body["adverts"].items()},
                held=held,
                u2=frozenset(str(n) for n in body["u2"]),
                signed=tuple(str(n) for n in body["signed"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SecAggRefusal(
                f"the stored secure-aggregation session is unreadable ({exc!r})",
                hint="the node's state was altered; this step is refused",
            ) from exc
        return partner


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _unb64(text: object) -> bytes:
    return base64.b64decode(str(text), validate=True)


def _advert_bytes(adv: Advertisement) -> bytes:
    return dump(adv)


def _load_advert(raw: bytes) -> Advertisement:
    return load_advertisement(raw)


class SessionLedger:
    """Sessions this node took part in: a (run, step, purpose) is opened once.

    In memory; the partner node persists its entries with the run's state so a
    restart cannot reopen a session.
    """

    def __init__(self, opened: Collection[tuple[str, int, str]] = ()) -> None:
        self._opened: set[tuple[str, int, str]] = set(opened)

    def open(
        self, config: SecAggConfig, *, me: str, signer: Signer, peers: PeerKeys
    ) -> SecAggPartner:
        key = (config.run, config.step, config.purpose)
        if key in self._opened:
            raise SecAggRefusal(
                f"session {key} was already opened at this node",
                hint="one vector per (run, step, purpose); a second would be masked afresh and "
                "the difference of the two replies would leak",
            )
        partner = SecAggPartner(config, me=me, signer=signer, peers=peers)
        self._opened.add(key)
        return partner

    @property
    def opened(self) -> frozenset[tuple[str, int, str]]:
        return frozenset(self._opened)
