"""A log head the officer pinned out of band: the bundle must extend it.

A bundle is as long as whoever hands it over makes it. Cut back to one of its own
earlier checkpoints (the entries, notes and proofs after it removed, the unsigned
manifest rewritten), it still verifies on its own, without any key: every remaining
checkpoint is genuine and covers every remaining entry. Nothing inside a bundle can
tell, so its length must be bound by a tree head obtained elsewhere:

* the head an earlier verification printed (``audit verify`` prints the
  ``--expect-head`` option that pins the head it verified);
* the coordinator checkpoint a partner last cosigned: the partner's node keeps it in
  ``audit.db.cosigned.json`` and logs it as ``checkpoint.cosigned``, which
  ``audit crossref`` (and ``--partner`` / ``--ledger``) compare when the partners'
  bundles are given.

``--expect-head NAME=SIZE:ROOT`` pins one: the bundle of log NAME must hold at least
SIZE entries and its first SIZE entries must hash to ROOT. This is the monitor's
check of a log against a tree head seen before (RFC 6962 section 5.3; RFC 9162
sections 2.1.4 and 8.2), done on the entries themselves: the bundle carries them all,
so the root of the first SIZE entries is recomputed rather than proved.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass

from fedcollab.common.errors import AuditVerificationError
from fedcollab.compliance import merkle
from fedcollab.compliance.bundle import VerifiedBundle

__all__ = ["ExpectedHead", "check_expected_heads", "check_heads_apply", "head_of"]

_FORM = re.compile(r"^(?P<name>[^=\s]+)=(?P<size>[0-9]{1,12}):(?P<root>[0-9a-fA-F]{64})$")


@dataclass(frozen=True)
class ExpectedHead:
    """The (size, root) a log named ``origin`` had when the officer saw it last."""

    origin: str
    size: int
    root: bytes

    @classmethod
    def parse(cls, text: str) -> ExpectedHead:
        """``NAME=SIZE:ROOT`` (ROOT: 64 hex digits), as ``audit verify`` prints it.

        >>> ExpectedHead.parse("coordinator=12:" + "ab" * 32).size
        12
        """
        m = _FORM.match(text.strip())
        if m is None or int(m["size"]) <= 0:
            raise AuditVerificationError(
                f"--expect-head {text!r} is not NAME=SIZE:ROOT",
                hint="copy it from what `fedcollab audit verify` printed (e.g. "
                "coordinator=199:<64 hex digits>), or from the size and root of the "
                "checkpoint a partner cosigned (its audit.db.cosigned.json)",
            )
        return cls(m["name"], int(m["size"]), bytes.fromhex(m["root"]))

    def option(self) -> str:
        return f"--expect-head {self.origin}={self.size}:{self.root.hex()}"


def head_of(bundle: VerifiedBundle) -> ExpectedHead:
    """The head this bundle verified at, to pin next time."""
    return ExpectedHead(bundle.origin, bundle.size, bytes.fromhex(bundle.root_hex))


def check_expected_heads(bundle: VerifiedBundle, heads: Iterable[ExpectedHead]) -> None:
    """Raise AuditVerificationError unless ``bundle`` extends every head pinned for its log."""
    mine = [h for h in heads if h.origin == bundle.origin]
    if not mine:
        return
    leaves = [merkle.leaf_hash(data) for data in bundle.raw_entries()]
    for head in mine:
        where = f"{bundle.path}: the log {bundle.origin!r}"
        if len(leaves) < head.size:
            raise AuditVerificationError(
                f"{where} has {len(leaves)} entries, fewer than the {head.size} of the head "
                "pinned with --expect-head: it was cut back (rolled back) to an earlier "
                "checkpoint",
                hint="ask its owner for the whole log (fedcollab audit export of the "
                "current database); a log is only ever appended to",
            )
        root = merkle.mth(leaves[: head.size])
        if not hmac.compare_digest(root, head.root):
            raise AuditVerificationError(
                f"{where}: its first {head.size} entries hash to {root.hex()}, not to the "
                f"root {head.root.hex()} pinned with --expect-head: its history was "
                "rewritten",
                hint="check that the pinned head is this log's (same name, same size); if "
                "it is, the log was rewritten after that head was seen",
            )


def check_heads_apply(heads: Iterable[ExpectedHead], origins: Iterable[str]) -> None:
    """Raise AuditVerificationError for a head that names none of the bundles given: a
    misspelled name would otherwise protect nothing, without a word."""
    given = set(origins)
    for head in heads:
        if head.origin not in given:
            raise AuditVerificationError(
                f"--expect-head names the log {head.origin!r}, but no bundle of that log was "
                f"given (logs given: {', '.join(sorted(given))})",
                hint="use the log's name as `audit verify` printed it (NAME=SIZE:ROOT), or "
                "give that log's bundle",
            )
