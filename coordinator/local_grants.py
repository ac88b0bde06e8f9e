"""Grants for local federations: the demo, tests and simulations.

In a real federation each partner signs its own grant with ``fedcollab grant
sign`` on its premises. When one machine plays every partner (``fedcollab
demo``, ``fedcollab run``, the integration tests), this module signs, with
each simulated partner's own audit key, a grant for the given purposes that
holds the consent records those purposes require (referencing demo consent
records, never personal data). Policy checks then run exactly as in a real
federation.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fedcollab.common.keys import Signer
from fedcollab.compliance.grants import (
    ConsentRecord,
    Grant,
    SignedGrant,
    save_signed_grant,
    sign_grant,
)
from fedcollab.compliance.policy import required_consents
from fedcollab.compliance.registry import Registry, load_registry

__all__ = ["EXAMPLE_REGISTRY", "demo_grant", "example_registry"]

EXAMPLE_REGISTRY = Path(__file__).resolve().parent.parent / "data" / "registry.example.json"


def example_registry() -> Registry:
    return load_registry(EXAMPLE_REGISTRY)


def demo_grant(
    *,
    partner: str,
    dataset: str,
    audit_key: Path,
    registry: Registry,
    purposes: Sequence[str],
    out: Path,
    subjects: int = 1000,
    days: int = 90,
) -> SignedGrant:
    """Sign and save a grant of ``dataset`` for ``purposes`` with ``partner``'s key."""
    now = datetime.now(UTC).replace(microsecond=0)
    until = now + timedelta(days=days)
    consents = tuple(
        ConsentRecord(
            purpose=pid,
            kind=kind,
            evidence_ref=f"demo-consent:{partner}:{pid}:{kind}",
            subjects_covered=subjects,
            valid_until=until,
        )
        for pid in purposes
        for kind in required_consents(registry.purpose(pid))
    )
    grant = Grant(
        partner=partner,
        dataset=dataset,
        purposes=tuple(purposes),
        valid_from=now - timedelta(minutes=5),
        valid_until=until,
        consents=consents,
        issued_at=now,
    )
    signed = sign_grant(grant, Signer.load(audit_key))
    out.parent.mkdir(parents=True, exist_ok=True)
    save_signed_grant(signed, out)
    return signed
