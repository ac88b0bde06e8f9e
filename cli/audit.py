"""``fedcollab audit``: export and verify audit bundles (compliance officers).

Commands::

    fedcollab audit keygen KEYFILE --name NAME
    fedcollab audit export --log PATH --key KEYFILE --out DIR [--keys DIR]
    fedcollab audit verify BUNDLE --trust NAME=KEYFILE.pub ... [--trust-peers peers.json]
                                  [--require-cosigners NAME ...]

A failed verification raises :class:`common.errors.AuditVerificationError`,
which ``cli.app.main`` maps to exit code 31.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fedcollab.common.atomic import write_atomic
from fedcollab.common.errors import ComplianceError
from fedcollab.common.keys import Signer, format_verifier_key
from fedcollab.compliance.bundle import (
    EventSignatures,
    VerifiedBundle,
    export_bundle,
    verify_bundle,
)
from fedcollab.compliance.expected_head import (
    ExpectedHead,
    check_expected_heads,
    check_heads_apply,
    head_of,
)
from fedcollab.compliance.log import AuditLog
from fedcollab.compliance.trust import TrustPolicy, parse_trust_options, read_public_key

__all__ = [
    "ExpectHeadOption",
    "app",
    "heads_from_options",
    "parse_partners",
    "policy_from_options",
    "print_verified",
]

app = typer.Typer(help="Export and verify tamper-evident audit bundles.", no_args_is_help=True)
_out = Console()


@app.command()
def keygen(
    keyfile: Annotated[Path, typer.Argument(help="Where to write the private key (0600).")],
    name: Annotated[str, typer.Option(help="Key name (actor, cosigner or log origin).")],
) -> None:
    """Create an Ed25519 key; print its verifier key and write it beside as NAME.pub."""
    signer = Signer.generate(keyfile)
    vkey = format_verifier_key(name, signer.public_key)
    write_atomic(keyfile.with_suffix(".pub"), vkey + "\n")
    _out.print(vkey, highlight=False)


@app.command()
def export(
    log: Annotated[Path, typer.Option("--log", help="The audit log database.")],
    key: Annotated[Path, typer.Option("--key", help="The log's signing key (PEM).")],
    out: Annotated[Path, typer.Option("--out", help="New folder for the bundle.")],
    keys: Annotated[
        Path | None,
        typer.Option(
            "--keys",
            help="Folder of other actors' *.pub keys to ship in the bundle (a reader pins "
            "its own keys anyway).",
        ),
    ] = None,
) -> None:
    """Write a self-contained, verifiable bundle of the whole log."""
    if keys is not None and not keys.is_dir():
        raise typer.BadParameter(f"{keys} is not a folder", param_hint="--keys")
    public_keys: dict[str, bytes] = {}
    for path in sorted(keys.glob("*.pub")) if keys else []:
        name, pub = read_public_key(path)
        public_keys[name] = pub
    with AuditLog.open(log, origin=AuditLog.stored_origin(log), signer=Signer.load(key)) as audit:
        cp = export_bundle(audit, out, public_keys=public_keys)
    _out.print(f"exported {cp.checkpoint.size} entries to {out}", highlight=False)


TrustOption = Annotated[
    list[str] | None,
    typer.Option(
        "--trust",
        help="Pin a key: NAME=PATH to NAME's audit.pub (or PEM), obtained from NAME (repeatable).",
    ),
]
TrustPeersOption = Annotated[
    Path | None,
    typer.Option(
        "--trust-peers",
        help="Pin the registered partners' keys from a peers.json ({name: verifier key}).",
    ),
]
RequireOption = Annotated[
    list[str] | None,
    typer.Option(
        "--require-cosigners",
        help="A partner that must have cosigned under its pinned key (repeatable).",
    ),
]

ExpectHeadOption = Annotated[
    list[str] | None,
    typer.Option(
        "--expect-head",
        help="NAME=SIZE:ROOT: a head of log NAME seen before (what audit verify printed, or "
        "the checkpoint a partner cosigned); NAME's bundle must extend it, or it was cut "
        "back (repeatable).",
    ),
]


def heads_from_options(items: list[str] | None) -> list[ExpectedHead]:
    """The pinned heads of ``--expect-head`` (:mod:`compliance.expected_head`)."""
    return [ExpectedHead.parse(text) for text in items or []]


def policy_from_options(
    trust: list[str] | None, peers: Path | None, require: list[str] | None
) -> TrustPolicy:
    """The one parser of the trust options of every ``audit`` command."""
    return parse_trust_options(trust, peers=peers, require_cosigners=require)


def print_verified(verified: VerifiedBundle, console: Console) -> None:
    policy = verified.policy
    table = Table(title=f"Audit bundle verified: {verified.origin}")
    table.add_column("item")
    table.add_column("value")
    table.add_row("entries", str(verified.size))
    table.add_row("root (sha256)", verified.root_hex)
    for cp in verified.checkpoints:
        names = [verified.origin] + [
            n if st == "verified" else f"{n} (UNVERIFIED KEY, not counted)"
            for n, st in cp.cosignatures
        ]
        table.add_row(f"checkpoint @ {cp.size}", ", ".join(names))
    for name, kid, pinned in verified.keys:
        table.add_row(f"key {name}", f"key id {kid}" + (" (pinned)" if pinned else " (bundle)"))
    for actor, count in verified.actors:
        # signed with the log key: authenticated by the log's signed checkpoints
        via = " (via checkpoints)" if actor in verified.checkpoint_authenticated else ""
        table.add_row(f"events by {actor}", f"{count}{via}")
    if verified.unpinned_actors:
        table.add_row("actors not pinned", ", ".join(verified.unpinned_actors))
    for name in policy.required_cosigners:
        table.add_row(f"required cosigner {name}", "cosigned under its pinned key")
    console.print(table)
    console.print(
        f"to refuse a cut-back copy of this log later: {head_of(verified).option()}",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


@app.command()
def verify(
    bundle: Annotated[Path, typer.Argument(help="The bundle folder.")],
    trust: TrustOption = None,
    trust_peers: TrustPeersOption = None,
    require_cosigners: RequireOption = None,
    partner: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME=BUNDLE: a partner's bundle to cross-check against (repeatable; "
            "runs the checks of audit crossref)."
        ),
    ] = None,
    expect_head: ExpectHeadOption = None,
    workers: Annotated[int | None, typer.Option(help="Processes (default: CPUs).")] = None,
    all_event_signatures: Annotated[
        bool,
        typer.Option(
            "--all-event-signatures",
            help="Also verify the signature of each of the log's own events (they are "
            "authenticated by the signed checkpoints already); slower.",
        ),
    ] = False,
) -> None:
    """Verify a bundle offline under pinned keys; exit 31 with the reason if anything fails.

    The log's own key must be pinned with --trust (obtained out of band); a
    cosignature counts only under its cosigner's pinned key.  With --partner,
    the partners' bundles are verified too and cross-checked against BUNDLE.
    A bundle cut back to one of its earlier checkpoints verifies on its own:
    --expect-head (a head seen before) or --partner bundles catch that.
    """
    from fedcollab.compliance.crossref import cross_check

    policy = policy_from_options(trust, trust_peers, require_cosigners)
    heads = heads_from_options(expect_head)
    mode: EventSignatures = "all" if all_event_signatures else "uncovered"
    verified = verify_bundle(bundle, policy, workers=workers, event_signatures=mode)
    check_expected_heads(verified, heads)
    partners = parse_partners(partner or [])
    check_heads_apply(heads, [verified.origin, *partners])
    print_verified(verified, _out)
    if partners:
        others = {
            name: verify_bundle(
                folder, policy.without_requirements(), workers=workers, event_signatures=mode
            )
            for name, folder in partners.items()
        }
        for other in others.values():
            check_expected_heads(other, heads)
        result = cross_check(verified, others)
        for what in result.cut_short:
            _out.print(f"  cut short: {what}", highlight=False, markup=False)
        for finding in result.findings:
            _out.print(f"finding {finding}", highlight=False, markup=False)
        result.raise_on_findings()
        _out.print(f"cross-checked against {', '.join(sorted(partners))}: the logs agree")


def parse_partners(items: list[str]) -> dict[str, Path]:
    """``NAME=BUNDLE`` pairs of ``--partner``."""
    partners: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ComplianceError(f"--partner {item!r}: expected NAME=BUNDLE")
        partners[name] = Path(path)
    return partners
