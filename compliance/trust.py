"""The trust policy of audit verification: which keys count, and whose cosignatures are required.

Verification takes a :class:`TrustPolicy` as a required argument (the model is
sigstore-python's ``Verifier.verify(..., policy)``): only keys pinned in the
policy, obtained out of band from each party, make a signature count.  Keys a
bundle carries in its own ``keys/`` folder never do: a cosignature under a
name that is not pinned is reported as "unverified key" and never counted, and
a bundle key that differs from the pinned key of the same name is refused.

Keys are collected from the parties themselves:

* ``--trust NAME=FILE``: one party's verifier key (``NAME+keyid+base64`` line, as
  in ``audit.pub``) or a PEM Ed25519 public key;
* ``--trust-peers peers.json``: the registered partners' keys
  (``{"name": "<verifier key>"}``, as written by ``fedcollab federation peers``).
  These partners are the *registered* ones: ``audit report`` requires a
  cosignature from each of them unless ``--require-cosigners`` says otherwise.

>>> policy = TrustPolicy.from_keys({"coordinator": coordinator_pub})
>>> verified = verify_bundle(Path("bundle"), policy)

Notes
-----
* An empty policy is invalid (:class:`~common.errors.ComplianceError`): a
  verification that pins nothing only proves a bundle consistent with itself.
* A verifier-key file names its key; pinning it under another name is refused,
  so a key cannot be re-labelled on the command line by mistake.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from fedcollab.common.errors import AuditVerificationError, ComplianceError
from fedcollab.common.keys import check_key_name, parse_verifier_key, public_key_from_pem

__all__ = ["TrustPolicy", "parse_trust_options", "read_public_key"]


def read_public_key(path: Path, *, name: str | None = None) -> tuple[str, bytes]:
    """``(name, raw key)`` from a verifier-key line or a PEM key (named ``name`` or the stem)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ComplianceError(
            f"cannot read the key file {path}: {exc.strerror}",
            hint="pass the party's audit.pub, obtained from that party directly",
        ) from exc
    if text.lstrip().startswith("-----BEGIN"):
        return (name or path.stem), public_key_from_pem(text)
    try:
        key_name, pub = parse_verifier_key(text.strip())
    except AuditVerificationError as exc:
        raise ComplianceError(f"{path}: not a verifier key: {exc.message}") from exc
    if name is not None and key_name != name:
        raise ComplianceError(
            f"{path} holds the key of {key_name!r}, not of {name!r}",
            hint=f"pin it as --trust {key_name}={path}, or ask {name!r} for its own key",
        )
    return key_name, pub


@dataclass(frozen=True)
class TrustPolicy:
    """Pinned keys (name -> raw Ed25519 public key) and the cosigners that are required.

    ``registered`` are the partners registered with the federation (from a
    peers file); ``required_cosigners`` must each have cosigned a checkpoint
    under their pinned key.
    """

    keys: Mapping[str, bytes]
    required_cosigners: tuple[str, ...] = ()
    registered: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.keys:
            raise ComplianceError(
                "an empty trust policy verifies nothing",
                hint="pin the log's key: --trust NAME=PATH/TO/NAME.pub, obtained from NAME",
            )
        for name, pub in self.keys.items():
            check_key_name(name)
            if len(pub) != 32:
                raise ComplianceError(f"pinned key of {name!r} is not a raw Ed25519 key")
        frozen = MappingProxyType(dict(self.keys))
        object.__setattr__(self, "keys", frozen)  # a caller's dict cannot change the policy
        for name in (*self.required_cosigners, *self.registered):
            if name not in frozen:
                raise ComplianceError(
                    f"cosigner {name!r} is required but its key is not pinned",
                    hint=f"pin it with --trust {name}=PATH/TO/{name}.pub (from {name} directly)",
                )

    @classmethod
    def from_keys(
        cls,
        keys: Mapping[str, bytes],
        *,
        required_cosigners: Iterable[str] = (),
        registered: Iterable[str] = (),
    ) -> TrustPolicy:
        return cls(
            keys=dict(keys),
            required_cosigners=tuple(required_cosigners),
            registered=tuple(sorted(registered)),
        )

    def with_required(self, names: Iterable[str]) -> TrustPolicy:
        """The same pins, requiring cosignatures from ``names``."""
        return TrustPolicy(
            keys=dict(self.keys),
            required_cosigners=tuple(dict.fromkeys(names)),
            registered=self.registered,
        )

    def report_default(self, origin: str) -> TrustPolicy:
        """The compliance report's default: every registered partner must have cosigned
        ``origin``'s log; with none registered, every pinned party other than ``origin``.

        ``audit report`` (without ``--require-cosigners``) and the console's report
        download both apply it, so the two cannot drift apart.
        """
        return self.with_required(self.registered or [n for n in sorted(self.keys) if n != origin])

    def pinned(self, name: str) -> bytes | None:
        return self.keys.get(name)

    def without_requirements(self) -> TrustPolicy:
        """The same pins, requiring no cosigner (for partners' own logs, which nobody cosigns)."""
        return TrustPolicy(keys=dict(self.keys))


def _read_peers(path: Path) -> dict[str, bytes]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ComplianceError(f"cannot read the peers file {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ComplianceError(f"{path} is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or not all(isinstance(v, str) for v in doc.values()):
        raise ComplianceError(
            f"{path}: expected {{name: verifier key}}", hint="use the peers.json of the federation"
        )
    out: dict[str, bytes] = {}
    for name, vkey in doc.items():
        try:
            key_name, pub = parse_verifier_key(vkey.strip())
        except AuditVerificationError as exc:
            raise ComplianceError(f"{path}: entry {name!r}: {exc.message}") from exc
        if key_name != name:
            raise ComplianceError(f"{path}: entry {name!r} holds the key of {key_name!r}")
        out[name] = pub
    return out


def parse_trust_options(
    trust: Sequence[str] | None,
    *,
    peers: Path | None = None,
    require_cosigners: Sequence[str] | None = None,
) -> TrustPolicy:
    """The one parser of ``--trust NAME=FILE``, ``--trust-peers`` and ``--require-cosigners``.

    Used by ``audit verify``, ``audit crossref``, ``audit report`` and the console.
    """
    keys: dict[str, bytes] = {}
    registered: tuple[str, ...] = ()
    if peers is not None:
        keys.update(_read_peers(peers))
        registered = tuple(sorted(keys))
    for item in trust or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ComplianceError(f"--trust {item!r}: expected NAME=PATH")
        _, pub = read_public_key(Path(path), name=name)
        if keys.get(name, pub) != pub:
            raise ComplianceError(f"--trust {item!r}: {name!r} is pinned twice with different keys")
        keys[name] = pub
    return TrustPolicy(
        keys=keys,
        required_cosigners=tuple(dict.fromkeys(require_cosigners or ())),
        registered=registered,
    )
