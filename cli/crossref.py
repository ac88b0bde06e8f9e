"""``fedcollab audit crossref``: do the coordinator's and partners' logs agree?

Every bundle is verified under the same pinned keys (:mod:`compliance.trust`),
then :func:`compliance.crossref.cross_check` compares them; any finding exits
31 (:class:`common.errors.AuditVerificationError`) after all are printed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fedcollab.cli.audit import (
    ExpectHeadOption,
    RequireOption,
    TrustOption,
    TrustPeersOption,
    heads_from_options,
    parse_partners,
    policy_from_options,
)
from fedcollab.compliance.bundle import verify_bundle
from fedcollab.compliance.crossref import cross_check
from fedcollab.compliance.expected_head import check_expected_heads, check_heads_apply

__all__ = ["app"]

app = typer.Typer()


@app.command("crossref")
def crossref(
    coordinator: Annotated[Path, typer.Argument(help="The coordinator's exported bundle.")],
    partner: Annotated[
        list[str], typer.Option(help="NAME=BUNDLE: a partner's exported bundle (repeatable).")
    ],
    trust: TrustOption = None,
    trust_peers: TrustPeersOption = None,
    require_cosigners: RequireOption = None,
    expect_head: ExpectHeadOption = None,
) -> None:
    """Verify each bundle under the pinned keys, then check that the logs tell one story:
    contributions, runs, cosigned sizes and roots, cosignature lines, requests per step
    and decryptions."""
    partners = parse_partners(partner)
    console = Console()
    policy = policy_from_options(trust, trust_peers, require_cosigners)
    heads = heads_from_options(expect_head)
    coord = verify_bundle(coordinator, policy)
    check_expected_heads(coord, heads)
    check_heads_apply(heads, [coord.origin, *partners])
    console.print(f"verified {coordinator}: {coord.size} entries, origin {coord.origin}")
    verified = {}
    for name, folder in partners.items():
        verified[name] = verify_bundle(folder, policy.without_requirements())
        check_expected_heads(verified[name], heads)
        console.print(f"verified {folder}: {verified[name].size} entries, origin {name}")
    result = cross_check(coord, verified)
    for name, count in sorted(result.matched.items()):
        console.print(f"  {name}: {count} contributions match the coordinator's log")
    for c in result.cosigned:
        where = "on the coordinator's note" if c.on_coordinator_note else "NOT on the note"
        console.print(f"  {c.partner}: newest cosigned checkpoint size {c.size} ({where})")
    console.print(f"  requests compared across partners: {result.requests_compared} steps")
    for what in result.not_compared:
        console.print(f"  not compared: {what}")
    for what in result.cut_short:
        console.print(f"  cut short: {what}", highlight=False, markup=False)
    for finding in result.findings:
        console.print(f"finding {finding}", highlight=False, markup=False)
    result.raise_on_findings()
    jobs = f"{result.jobs} job" + ("" if result.jobs == 1 else "s")
    console.print(f"[green]logs agree[/] across {jobs}")
