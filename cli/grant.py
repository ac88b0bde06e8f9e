"""``fedcollab grant``: sign and verify dataset grants (partners).

Commands::

    fedcollab grant sign --partner NAME --dataset NAME [--dataset-hash sha256:HEX]
        --purpose ID [--purpose ID ...] --valid-until ISO [--valid-from ISO]
        [--consent 'purpose:kind:evidence_ref:subjects:valid_until' ...]
        --key KEYFILE [--signer-name NAME] --out FILE
    fedcollab grant verify FILE --public-key PUB [--at ISO]

Times are ISO 8601 with a timezone (``2027-01-01T00:00:00Z``).  ``evidence_ref``
is an id in the partner's consent-management system, never personal data (see
:mod:`compliance.grants`).  A grant that does not verify, or is not valid at
``--at``, raises :class:`common.errors.PolicyRefusal` (exit 32).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, cast

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from fedcollab.common.errors import ComplianceError, PolicyRefusal
from fedcollab.common.keys import Signer, parse_verifier_key, public_key_from_pem
from fedcollab.compliance.grants import (
    ConsentKind,
    ConsentRecord,
    Grant,
    load_signed_grant,
    rfc3339,
    save_signed_grant,
    sign_grant,
    verify_grant,
)
from fedcollab.compliance.registry import format_validation_error

__all__ = ["app", "parse_consent", "parse_time"]

app = typer.Typer(help="Sign and verify dataset grants (which purposes may use which dataset).")
_out = Console()

# evidence_ref may hold ':' and the time always does, so anchor on both ends.
_CONSENT_RE = re.compile(
    r"^(?P<purpose>[^:]+):(?P<kind>[^:]+):(?P<ref>.+):(?P<subjects>\d+):"
    r"(?P<until>\d{4}-\d{2}-\d{2}T\S+)$"
)
_KINDS: tuple[ConsentKind, ...] = ("separate-provision", "sensitive-data", "explicit", "general")


def parse_time(text: str, *, option: str) -> datetime:
    """An ISO 8601 time with a timezone; ``typer.BadParameter`` otherwise."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not an ISO 8601 time, e.g. 2027-01-01T00:00:00Z", param_hint=option
        ) from None
    if value.tzinfo is None or value.utcoffset() is None:
        raise typer.BadParameter(
            f"{text!r} has no timezone; add one, e.g. {text}Z or {text}+08:00", param_hint=option
        )
    return value


def parse_consent(text: str) -> ConsentRecord:
    """``purpose:kind:evidence_ref:subjects:valid_until`` -> :class:`ConsentRecord`."""
    match = _CONSENT_RE.fullmatch(text)
    if match is None:
        raise typer.BadParameter(
            f"{text!r}: expected 'purpose:kind:evidence_ref:subjects:valid_until', e.g. "
            "'purchase-prediction:separate-provision:crm-consent/2026-03:12330:2027-01-01T00:00:00Z'",
            param_hint="--consent",
        )
    kind = match["kind"]
    if kind not in _KINDS:
        raise typer.BadParameter(
            f"consent kind {kind!r} is not one of {', '.join(_KINDS)}", param_hint="--consent"
        )
    until = parse_time(match["until"], option="--consent")
    try:
        return ConsentRecord(
            purpose=match["purpose"],
            kind=cast(ConsentKind, kind),
            evidence_ref=match["ref"],
            subjects_covered=int(match["subjects"]),
            valid_until=until,
        )
    except ValidationError as exc:
        raise ComplianceError(
            f"--consent {text!r} is invalid:\n{format_validation_error(exc)}",
            hint="evidence_ref must be an id in your consent system, never personal data",
        ) from exc


def _read_public_key(path: Path) -> bytes:
    """A ``*.pub`` file: a signed-note verifier key line, or a PEM public key."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ComplianceError(
            f"cannot read public key {path}: {exc.strerror}", hint="check --public-key"
        ) from exc
    if text.lstrip().startswith("-----BEGIN"):
        return public_key_from_pem(text)
    return parse_verifier_key(text)[1]


@app.command()
def sign(
    partner: Annotated[str, typer.Option(help="Your partner name in the federation.")],
    dataset: Annotated[str, typer.Option(help="The dataset name in your schema.")],
    purpose: Annotated[
        list[str], typer.Option("--purpose", help="A registered purpose id (repeatable).")
    ],
    valid_until: Annotated[str, typer.Option(help="End of validity, ISO 8601 with timezone.")],
    key: Annotated[Path, typer.Option(help="Your Ed25519 signing key (PEM, mode 0600).")],
    out: Annotated[Path, typer.Option(help="Where to write the signed grant (JSON).")],
    dataset_hash: Annotated[
        str | None, typer.Option(help="Pin the dataset content: sha256:<64 hex>.")
    ] = None,
    valid_from: Annotated[
        str | None, typer.Option(help="Start of validity (default: now).")
    ] = None,
    consent: Annotated[
        list[str] | None,
        typer.Option(help="'purpose:kind:evidence_ref:subjects:valid_until' (repeatable)."),
    ] = None,
    signer_name: Annotated[
        str | None, typer.Option(help="Name of the signing key (default: the partner).")
    ] = None,
) -> None:
    """Sign a grant allowing PURPOSEs to use DATASET until VALID_UNTIL."""
    now = datetime.now(UTC)
    start = now if valid_from is None else parse_time(valid_from, option="--valid-from")
    end = parse_time(valid_until, option="--valid-until")
    records = tuple(parse_consent(c) for c in consent or [])
    try:
        grant = Grant(
            partner=partner,
            dataset=dataset,
            dataset_hash=dataset_hash,
            purposes=tuple(purpose),
            valid_from=start,
            valid_until=end,
            consents=records,
            issued_at=now,
        )
    except ValidationError as exc:
        raise ComplianceError(
            f"invalid grant:\n{format_validation_error(exc)}",
            hint="fix the options named above ('fedcollab grant sign --help')",
        ) from exc
    if out.exists():
        raise ComplianceError(f"{out} already exists", hint="choose another --out path")
    signed = sign_grant(grant, Signer.load(key), signer_name=signer_name)
    save_signed_grant(signed, out)
    _out.print(f"signed grant {grant.digest()} written to {out}", highlight=False)


@app.command()
def verify(
    file: Annotated[Path, typer.Argument(help="The signed grant file.")],
    public_key: Annotated[
        Path, typer.Option(help="The partner's public key (*.pub verifier key or PEM).")
    ],
    at: Annotated[
        str | None, typer.Option(help="Check validity at this time (default: now).")
    ] = None,
) -> None:
    """Verify a grant's signature and that it is valid now (or --at); exit 32 if not."""
    signed = load_signed_grant(file)
    verify_grant(signed, _read_public_key(public_key))
    when = datetime.now(UTC) if at is None else parse_time(at, option="--at")
    grant = signed.grant
    if not grant.valid_from <= when < grant.valid_until:
        raise PolicyRefusal(
            f"grant of partner {grant.partner!r} is valid from {rfc3339(grant.valid_from)} "
            f"until {rfc3339(grant.valid_until)}, not at {rfc3339(when)}",
            hint="ask the partner to sign a grant for the period needed, or pass --at",
        )
    table = Table(title=f"Grant verified: {grant.partner} (signed by {signed.signer_name})")
    table.add_column("item")
    table.add_column("value")
    table.add_row("dataset", grant.dataset)
    table.add_row("dataset hash", grant.dataset_hash or "(not pinned)")
    table.add_row("purposes", ", ".join(grant.purposes))
    table.add_row("valid", f"{rfc3339(grant.valid_from)} .. {rfc3339(grant.valid_until)}")
    table.add_row("digest", grant.digest())
    for c in grant.consents:
        state = "valid" if c.is_valid_at(when) else "EXPIRED"
        table.add_row(
            f"consent {c.purpose} / {c.kind}",
            f"{c.evidence_ref}, {c.subjects_covered} subjects, "
            f"until {rfc3339(c.valid_until)} ({state})",
        )
    _out.print(table)
