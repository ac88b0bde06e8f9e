"""``fedcollab node``: a partner creates its node key and runs its node."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from fedcollab.client.grant_check import check_own_grant
from fedcollab.client.partner_data import PartnerSource
from fedcollab.client.peer_trust import confirm_peers as check_peer_list
from fedcollab.client.run_contract import DEFAULT_MAX_RUNS_PER_DAY
from fedcollab.client.supernode import (
    NodeConfig,
    explain_exit,
    is_refusal,
    node_command,
    validate_partner_data,
)
from fedcollab.common.errors import PolicyRefusal
from fedcollab.compliance.trail import create_party_key
from fedcollab.coordinator.workspace import check_name, generate_node_key

__all__ = ["app"]

app = typer.Typer(help="Partner: create a node key, run a node on your own data.")


@app.command("keygen")
def keygen(
    directory: Annotated[Path, typer.Argument(help="Where to write the keys.")],
    partner: Annotated[str, typer.Option(help="Your partner name.")],
) -> None:
    """Create this partner's keys: node.key (connects to the coordinator) and
    audit.key (signs your audit trail, grants and cosignatures).

    Keep the .key files here; send node.pub and audit.pub to the operator.
    """
    check_name("partner", partner)
    # 0700: the audit log, ledger and run contract live beside the keys (each 0600).
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    private, public = generate_node_key(directory)
    audit_private, audit_public = create_party_key(directory, partner)
    typer.echo(f"private keys: {private}, {audit_private} (keep them here)")
    typer.echo(f"public keys:  {public}, {audit_public} (send to the operator)")


@app.command("start")
def start(
    partner: Annotated[str, typer.Option(help="Your partner name, as registered.")],
    data: Annotated[Path, typer.Option(help="Your dataset (CSV).")],
    schema: Annotated[Path, typer.Option(help="Its schema file (JSON).")],
    ca: Annotated[Path, typer.Option(help="The federation's CA certificate (ca.crt).")],
    key: Annotated[Path, typer.Option(help="Your node's private key (node.key).")],
    superlink: Annotated[str, typer.Option(help="Coordinator address host:port.")] = (
        "127.0.0.1:9092"
    ),
    port: Annotated[
        int, typer.Option(help="Local port of this node's runtime API (127.0.0.1, TLS).")
    ] = 9094,
    audit_key: Annotated[
        Path | None, typer.Option(help="Your audit.key (required): signs your audit trail.")
    ] = None,
    audit_db: Annotated[
        Path | None, typer.Option(help="Your audit log (default: audit.db beside audit.key).")
    ] = None,
    coordinator_key: Annotated[
        Path | None, typer.Option(help="The coordinator's audit.pub, to check what you cosign.")
    ] = None,
    grant: Annotated[
        Path | None,
        typer.Option(help="Your signed dataset grant (required; `fedcollab grant sign`)."),
    ] = None,
    peer_keys: Annotated[
        Path | None,
        typer.Option(
            help="Partners' audit keys (`fedcollab federation peers`): needed for encrypted jobs."
        ),
    ] = None,
    confirm_peers: Annotated[
        str | None,
        typer.Option(
            help="The fingerprint of --peer-keys, after you compared every key id with that "
            "partner yourself (printed by a first start; kept beside your audit key)."
        ),
    ] = None,
    budget_db: Annotated[
        Path | None,
        typer.Option(help="Your privacy-budget ledger (default: budget.db beside audit.db)."),
    ] = None,
    share_explanations: Annotated[
        bool,
        typer.Option(
            help="Vertical jobs: let the other parties and the operator see your per-feature "
            "explanation (default: only your party-level importance leaves the node)."
        ),
    ] = False,
    vertical_queries: Annotated[
        Path | None,
        typer.Option(
            help="Label holder, vertical joint inference: a file of ids to score, one per "
            "line (default: every row of your data)."
        ),
    ] = None,
    dp_only: Annotated[
        bool | None,
        typer.Option(
            "--dp-only/--no-dp-only",
            help="Serve only differentially private jobs (a job with privacy.dp = 'none' is "
            "refused and logged). Default: only on a dataset with a privacy-budget cap; "
            "--no-dp-only also serves jobs without DP there (their releases are not charged).",
        ),
    ] = None,
    max_runs_per_day: Annotated[
        int,
        typer.Option(
            min=1,
            help="Accept at most this many job runs in any 24 hours (each run is a fresh "
            "plan of requests; more are refused and logged).",
        ),
    ] = DEFAULT_MAX_RUNS_PER_DAY,
    allow_plaintext_vertical: Annotated[
        bool,
        typer.Option(
            help="Label holder, testing only: serve vertical jobs without encryption (your "
            "residuals go to the feature parties in the clear, with label-DP noise)."
        ),
    ] = False,
    allow_unverified_centroids: Annotated[
        bool,
        typer.Option(
            help="Serve segmentation jobs without DP whose centroids this node cannot "
            "derive itself (plaintext aggregation or k-FED seeding): the coordinator then "
            "chooses every step's centroids and can read rows by differencing."
        ),
    ] = False,
    label_epsilon: Annotated[
        float | None,
        typer.Option(
            help="Label holder: label-DP epsilon of the residuals you release per vertical "
            "job, charged to your budget ledger (default 8)."
        ),
    ] = None,
    split_validation: Annotated[
        float, typer.Option(help="Share of your rows held out for validation (your constant).")
    ] = 0.1,
    split_test: Annotated[
        float, typer.Option(help="Share of your rows held out for testing (your constant).")
    ] = 0.2,
    split_seed: Annotated[
        int, typer.Option(help="Seed of your id-hash split; jobs must use the same split.")
    ] = 0,
    connect_timeout: Annotated[
        float, typer.Option(help="Seconds to keep trying to reach the coordinator.")
    ] = 300.0,
) -> None:
    """Validate your data, then run your node in the foreground.

    If the data fails validation the node does not start and nothing is sent.

    Example: fedcollab node start --partner acme --data acme.csv --schema acme.schema.json
    --ca ca.crt --key node/node.key --audit-key node/audit.key --grant acme-grant.json
    --coordinator-key coordinator-audit.pub --peer-keys peers.json
    --superlink coordinator.example:9092 (a first start prints the peer keys and the
    --confirm-peers FINGERPRINT to add once you compared them with each partner)
    """
    source = PartnerSource(partner=check_name("partner", partner), data=data, schema=schema)
    ds = validate_partner_data(source)
    if grant is None or audit_key is None:
        raise PolicyRefusal(
            "a node needs a signed dataset grant and its audit key: without them it would "
            "refuse every job",
            hint="create keys with `fedcollab node keygen`, sign a grant with "
            "`fedcollab grant sign`, then pass --grant and --audit-key",
        )
    check_own_grant(grant, audit_key, partner=source.partner, dataset=ds)
    if peer_keys is not None:
        confirmed = check_peer_list(
            peer_keys,
            partner=source.partner,
            audit_key=audit_key,
            confirm=confirm_peers,
            kept=audit_key.with_name("peers.confirmed"),
        )
        typer.echo(f"peer keys {peer_keys} (fingerprint {confirmed.fingerprint}):")
        for entry in confirmed.lines:
            typer.echo(f"  {entry}")
    typer.echo(f"{data}: {ds.n_rows} rows valid ({ds.content_hash}); connecting to {superlink}")
    if audit_key is not None and audit_db is None:
        audit_db = audit_key.with_name("audit.db")
    cfg = NodeConfig(
        source=source,
        superlink=superlink,
        ca_cert=ca,
        node_key=key,
        port=port,
        audit_db=audit_db,
        audit_key=audit_key,
        coordinator_key=coordinator_key,
        connect_timeout_s=connect_timeout,
        grant=grant,
        peer_keys=peer_keys,
        budget_db=budget_db,
        share_explanations=share_explanations,
        vertical_queries=vertical_queries,
        dp_only=dp_only,
        max_runs_per_day=max_runs_per_day,
        allow_plaintext_vertical=allow_plaintext_vertical,
        allow_unverified_centroids=allow_unverified_centroids,
        label_epsilon=label_epsilon,
        split_validation=split_validation,
        split_test=split_test,
        split_seed=split_seed,
    )
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(node_command(cfg), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            sys.stdout.buffer.write(line)
            sys.stdout.flush()
            if is_refusal(line.decode(errors="replace")):
                # The coordinator answered and refused this key: retrying cannot help.
                proc.terminate()
                proc.wait(timeout=30)
                raise explain_exit(1, line.decode(errors="replace"))
        code = proc.wait()
        if code != 0:
            log.seek(0)
            raise explain_exit(code, log.read().decode(errors="replace"))
