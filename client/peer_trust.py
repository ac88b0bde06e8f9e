"""A partner's own confirmation of the peer keys it pins (issue 14: trust anchors).

``peers.json`` (the partners' audit keys, ``fedcollab federation peers``) is written by
the coordinator's operator. Every secure-aggregation and key-ceremony signature is
checked against it, so a swapped entry is a swapped partner. At ``node start`` the
node therefore:

1. refuses a list whose entry for itself is missing or not its own audit key;
2. shows every peer's key id (the C2SP signed-note key id, :func:`common.keys.
   key_id`), for the partner to compare with each peer out of band (as SSH shows
   a host key fingerprint on first contact, RFC 4251 section 4.1);
3. requires ``--confirm-peers FINGERPRINT`` (SHA-256 over the sorted entries, printed
   by the first run) and keeps the confirmed fingerprint beside its audit key
   (``peers.confirmed``, 0600). A later start with the same list needs no flag; a
   changed list is refused until the partner confirms the new fingerprint.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from fedcollab.client.he_keys import check_own_entry, write_private
from fedcollab.common.errors import PolicyRefusal
from fedcollab.common.keys import key_id
from fedcollab.privacy.key_transport import PeerKeys

__all__ = ["PeerConfirmation", "confirm_peers", "fingerprint"]


def fingerprint(peers: PeerKeys) -> str:
    """SHA-256 over ``name \\n hex(key) \\n`` of every entry, sorted by name."""
    h = hashlib.sha256(b"fedcollab/peers/v1\n")
    for name in sorted(peers.keys):
        h.update(name.encode() + b"\n" + peers.keys[name].hex().encode() + b"\n")
    return h.hexdigest()


@dataclass(frozen=True)
class PeerConfirmation:
    fingerprint: str
    #: ``name  key id`` lines, one per peer, to show the partner.
    lines: tuple[str, ...]
    #: True when this start confirmed a new list (the fingerprint was written).
    newly_confirmed: bool


def confirm_peers(
    path: Path, *, partner: str, audit_key: Path, confirm: str | None, kept: Path
) -> PeerConfirmation:
    """Check ``path`` as described in the module docstring; raise :class:`PolicyRefusal`
    when it is not this node's to use yet."""
    try:
        peers = PeerKeys.from_json(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PolicyRefusal(
            f"cannot read peer keys {path}: {exc}", hint="check --peer-keys"
        ) from exc
    check_own_entry(peers, {"partner": partner, "audit-key": str(audit_key)})
    fp = fingerprint(peers)
    lines = tuple(
        f"{name:<24} key id {key_id(name, peers.keys[name]).hex()}"
        + ("  (this node)" if name == partner else "")
        for name in sorted(peers.keys)
    )
    previous = kept.read_text(encoding="utf-8").strip() if kept.exists() else None
    if confirm is None and previous == fp:
        return PeerConfirmation(fp, lines, newly_confirmed=False)
    if confirm is None or confirm.strip().lower() != fp:
        changed = previous is not None and previous != fp
        raise PolicyRefusal(
            ("the peer list changed since you confirmed it" if changed else
             "you have not confirmed these peer keys yet")
            + f": {len(lines)} peers, fingerprint {fp}\n"
            + "\n".join(lines),
            hint="compare each key id with that partner out of band (not through the "
            f"coordinator), then start again with --confirm-peers {fp}",
        )  # fmt: skip
    write_private(kept, (fp + "\n").encode())
    return PeerConfirmation(fp, lines, newly_confirmed=True)
