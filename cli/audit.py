"""``fedcollab audit``: export and verify audit bundles (compliance officers).

Commands::

    fedcollab audit keygen KEYFILE --name NAME
    fedcollab audit export --log PATH --key KEYFILE --out DIR [--keys DIR]
    fedcollab audit verify BUNDLE [--trust NAME=KEYFILE.pub]

A failed verification raises :class:`common.errors.AuditVerificationError`,
which ``cli.app.main`` maps to exit code 31.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fedcollab.common.errors import AuditVerificationError, ComplianceError
from fedcollab.compliance.bundle import export_bundle, verify_bundle
from fedcollab.compliance.keys import (
    Signer,
    format_verifier_key,
    parse_verifier_key,
    public_key_from_pem,
)
from fedcollab.compliance.log import AuditLog

__all__ = ["app"]

app = typer.Typer(help="Export and verify tamper-evident audit bundles.", no_args_is_help=True)
_out = Console()


def _read_public_key(path: Path) -> tuple[str, bytes]:
    """A ``*.pub`` file: a verifier key line, or a PEM key named after the file."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("-----BEGIN"):
        return path.stem, public_key_from_pem(text)
    return parse_verifier_key(text)


@app.command()
def keygen(
    keyfile: Annotated[Path, typer.Argument(help="Where to write the private key (0600).")],
    name: Annotated[str, typer.Option(help="Key name (actor, cosigner or log origin).")],
) -> None:
    """Create an Ed25519 key; print its verifier key and write it beside as NAME.pub."""
    signer = Signer.generate(keyfile)
    vkey = format_verifier_key(name, signer.public_key)
    keyfile.with_suffix(".pub").write_text(vkey + "\n", encoding="utf-8")
    _out.print(vkey, highlight=False)


@app.command()
def export(
    log: Annotated[Path, typer.Option("--log", help="The audit log database.")],
    key: Annotated[Path, typer.Option("--key", help="The log's signing key (PEM).")],
    out: Annotated[Path, typer.Option("--out", help="New folder for the bundle.")],
    keys: Annotated[
        Path | None, typer.Option("--keys", help="Folder of actors' *.pub keys.")
    ] = None,
) -> None:
    """Write a self-contained, verifiable bundle of the whole log."""
    public_keys: dict[str, bytes] = {}
    for path in sorted(keys.glob("*.pub")) if keys else []:
        name, pub = _read_public_key(path)
        public_keys[name] = pub
    with AuditLog.open(log, origin=AuditLog.stored_origin(log), signer=Signer.load(key)) as audit:
        cp = export_bundle(audit, out, public_keys=public_keys)
    _out.print(f"exported {cp.checkpoint.size} entries to {out}", highlight=False)


def parse_trust(trust: list[str] | None) -> dict[str, bytes]:
    pinned: dict[str, bytes] = {}
    for item in trust or []:
        name, sep, path = item.partition("=")
        if not sep:
            raise ComplianceError(f"--trust {item!r}: expected NAME=PATH")
        pinned[name] = _read_public_key(Path(path))[1]
    return pinned


def require_pinned(origin: str, pinned: dict[str, bytes], *, unsafe: bool) -> None:
    if origin not in pinned and not unsafe:
        raise AuditVerificationError(
            f"the key of log {origin!r} was not pinned: the bundle is only consistent "
            "with the key it carries",
            hint=f"pass --trust {origin}=PATH/TO/{origin}.pub, obtained from {origin} directly",
        )


@app.command()
def verify(
    bundle: Annotated[Path, typer.Argument(help="The bundle folder.")],
    trust: Annotated[
        list[str] | None,
        typer.Option(help="Pin a key: NAME=PATH to a *.pub file (repeatable)."),
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Processes (default: CPUs).")] = None,
    unsafe_trust_bundle_keys: Annotated[
        bool,
        typer.Option(
            "--unsafe-trust-bundle-keys",
            help="Accept the log key shipped inside the bundle (proves consistency only).",
        ),
    ] = False,
) -> None:
    """Verify a bundle offline; exit 31 with the reason if anything fails.

    The log's own key must be pinned with --trust (obtained out of band): a bundle
    that carries its own key only proves that it is consistent with itself.
    """
    pinned = parse_trust(trust)
    report = verify_bundle(bundle, trusted_keys=pinned, workers=workers)
    require_pinned(report.origin, pinned, unsafe=unsafe_trust_bundle_keys)
    table = Table(title=f"Audit bundle verified: {report.origin}")
    table.add_column("item")
    table.add_column("value")
    table.add_row("entries", str(report.size))
    table.add_row("root (sha256)", report.root_hex)
    for size, signers in report.checkpoints:
        table.add_row(f"checkpoint @ {size}", ", ".join(signers))
    for name, kid in report.keys:
        table.add_row(f"key {name}", f"key id {kid}" + (" (pinned)" if name in pinned else ""))
    for actor, count in report.actors:
        table.add_row(f"events by {actor}", str(count))
    _out.print(table)
