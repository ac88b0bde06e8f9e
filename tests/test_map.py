"""Where each product module is tested (issue 17: tests a newcomer can find).

A product module is a ``.py`` file other than ``__init__.py`` under ``common/``,
``privacy/``, ``protocols/``, ``compliance/``, ``client/``, ``coordinator/``,
``federation/``, ``demo/`` or ``cli/``. Its tests are found in one of three ways:

1. **By name.** ``<pkg>/<module>.py`` is tested by ``tests/<pkg>/test_<module>.py``
   or ``tests/<pkg>/test_<pkg>_<module>.py``; the web console
   (``coordinator/console/<module>.py``) by ``tests/console/test_<module>.py`` or
   ``tests/console/test_console_<module>.py``.
2. **By the map** :data:`COVERED_BY`, for every module without a file named so:
   module -> (the 1-3 most direct test files, how they exercise it).
3. **As untested** in :data:`UNTESTED`, with the reason (kept honest: no invented
   coverage).

The checks below make the map trustworthy. A listed test file *reaches* a module
when that file, a ``conftest.py`` pytest loads for it, or a ``tests.*`` module it
imports (one level):

- imports it (``import fedcollab.x.y``, ``from fedcollab.x.y import ...`` or
  ``from fedcollab.x import y``), or
- has a string literal that is its dotted path, maybe followed by ``:name`` or
  ``.name`` (``"fedcollab.client.client_app:app"``, ``"-m", "fedcollab.x.y"``, a
  ``monkeypatch.setattr`` target; a mention inside a sentence does not count), or
- for a ``cli/`` module, invokes one of its commands: the command path (group then
  command, e.g. ``"budget", "set"``; as wired in ``cli/app.py``) appears as
  consecutive string literals among the positional arguments of a call or the
  elements of a list/tuple (``runner.invoke(app, ["budget", "set", ...])``,
  ``[BIN / "fedcollab", "budget", "set", ...]``, ``run(monkeypatch, "registry",
  "init", ...)``). A top-level command (``run``, ``demo``) has one word: that string
  must also follow an argument or callee whose source mentions ``fedcollab``
  (``fedcollab("run", ...)``), so Flower's own ``flwr run`` does not count.

An entry none of whose files reaches the module must say so: its phrase contains
``indirect:`` and names the product module(s) it goes through
(``indirect: ... via coordinator/job.py``); one of the files must reach such an
entry module, and that entry module must import the mapped module, directly or
through other product modules (imports and dotted names in string literals, as
above). Run one package's tests with ``pytest tests/<pkg>`` (docs/architecture.md).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path

from tests.test_layers import LAYERS

ROOT = Path(__file__).resolve().parents[1]
#: The product packages, as the layer contract lists them (lowest first).
PACKAGES = tuple(LAYERS)
INDIRECT = "indirect:"

#: Module -> (test files that exercise it, how). Only modules without a name-matched
#: test file; the most direct files first.
COVERED_BY: dict[str, tuple[tuple[str, ...], str]] = {
    # --- cli/: the `fedcollab` command --------------------------------------------
    "cli/app.py": (
        ("tests/cli/test_cli_hints.py", "tests/cli/test_cli_data.py"),
        "walks the command tree; runs `main()` with sys.argv and checks exit codes",
    ),
    "cli/audit.py": (
        ("tests/compliance/test_compliance_bundle.py", "tests/adversarial/test_audit_attacks.py"),
        "`fedcollab audit export/verify` on honest and tampered bundles",
    ),
    "cli/budget.py": (
        ("tests/integration/test_budget.py",),
        "`fedcollab budget set` before a DP job on a real federation",
    ),
    "cli/console.py": (
        ("tests/console/test_console_cli.py",),
        "`fedcollab console init/user/ledger/start` through the typer app",
    ),
    "cli/coordinator.py": (
        ("tests/integration/test_multihost.py",),
        "`fedcollab coordinator start` in its own network namespace",
    ),
    "cli/crossref.py": (
        ("tests/adversarial/test_audit_attacks.py",),
        "`fedcollab audit crossref` against a malicious coordinator operator",
    ),
    "cli/data_schema.py": (
        ("tests/cli/test_cli_newcomer.py", "tests/cli/test_data_schema_paths.py"),
        "`fedcollab data schema` on a new CSV, then the job it drafts; output paths and "
        "label errors",
    ),
    "cli/example.py": (
        ("tests/install/test_wheel.py",),
        "`fedcollab example purchase` from the installed wheel in another folder",
    ),
    "cli/federation.py": (
        ("tests/integration/test_multihost.py",),
        "`fedcollab federation register` of each partner host's node key",
    ),
    "cli/grant.py": (
        ("tests/cli/test_cli_registry_grant.py",),
        "`fedcollab grant sign/verify` with typed-error exits",
    ),
    "cli/node.py": (
        (
            "tests/cli/test_node_peer_confirmation.py",
            "tests/integration/test_node_bad_data.py",
            "tests/integration/test_federation.py",
        ),
        "`fedcollab node start`: the peer list's confirmation; bad data stops the node; an "
        "unregistered node is refused",
    ),
    "cli/registry.py": (
        ("tests/cli/test_cli_registry_grant.py",),
        "`fedcollab registry init/add-purpose/show`",
    ),
    "cli/report.py": (
        ("tests/compliance/test_compliance_report.py", "tests/adversarial/test_audit_attacks.py"),
        "`fedcollab audit report` through its typer app and `main()`",
    ),
    "cli/run.py": (
        ("tests/install/test_wheel.py", "tests/cli/test_cli_newcomer.py"),
        "`fedcollab run` in Flower's simulation engine on the example's partner files",
    ),
    # --- client/: what a partner runs ----------------------------------------------
    "client/runtime_local.py": (
        ("tests/client/test_node_runtime_serve.py", "tests/adversarial/test_outsider.py"),
        "the executor serves a task on the SuperNode's own state; a finished task's calls act"
        " on nothing; every deployed test's nodes run it",
    ),
    "client/vertical_oprf.py": (
        ("tests/client/test_client_vertical.py", "tests/adversarial/test_cm20_attacks.py"),
        "a vertical job's full schedule with vertical.psi = 'cm20' over the in-memory relay "
        "(exact alignment, the relay holds no plaintext), its plan, a relay's size lie refused; "
        "relay swaps, replays, truncations, reordered or repeated steps and size lies refused "
        "through client_app._serve, and an aligned order that says nothing of the label "
        "holder's rows",
    ),
    "client/unanswered.py": (
        ("tests/adversarial/test_unanswered_messages.py",),
        "Flower's own push loop on Flower's node state: a message whose task ended "
        "without a reply gets an error reply instead of stalling the node (on Flower alone "
        "the loop waits forever); a running task or a stored reply is never answered for",
    ),
    "client/budget.py": (
        ("tests/adversarial/test_dp_releases.py", "tests/adversarial/test_run_contract.py"),
        "every DP release charged to the partner's ledger; uncapped datasets refused",
    ),
    "client/client_app.py": (
        (
            "tests/adversarial/test_redteam_contract.py",
            "tests/coordinator/test_coordinator_masked.py",
        ),
        "a malicious coordinator drives `_serve`; real jobs over the in-memory Grid",
    ),
    "compliance/contribution.py": (
        ("tests/adversarial/test_redteam_contract.py", "tests/adversarial/test_audit_attacks.py"),
        "contributions bound to their request and checked before a decryption; the"
        " shared-request digests the audit commands compare",
    ),
    "client/grant_check.py": (
        ("tests/adversarial/test_dp_releases.py", "tests/integration/test_federation.py"),
        "indirect: the partner's grant check at each handshake via client/client_app.py;"
        " a withdrawn purpose refused (test_killed_partner_does_not_stop_the_job)",
    ),
    "client/handlers.py": (
        ("tests/client/test_client_permutation.py",),
        "the permutation-importance reply handler on real partner data",
    ),
    "client/handler_rows.py": (
        ("tests/client/test_client_permutation.py", "tests/adversarial/test_dp_releases.py"),
        "indirect: the rows, encoding, floors and DP plan of every handler, via"
        " client/handlers.py (the permutation floor; DP releases of each request)",
    ),
    "client/handlers_training.py": (
        ("tests/client/test_client_permutation.py", "tests/adversarial/test_dp_releases.py"),
        "indirect: training, evaluation and permutation replies, via client/handlers.py",
    ),
    "client/handlers_segmentation.py": (
        ("tests/adversarial/test_dp_releases.py", "tests/adversarial/test_redteam_contract.py"),
        "indirect: k-means and segment-profile replies (DP, suppressed small clusters),"
        " via client/handlers.py",
    ),
    "client/he_keys.py": (
        ("tests/client/test_client_encryption.py",),
        "the CKKS key ceremony, sealed keys, one decryption per step, erasure",
    ),
    "client/partner_data.py": (
        ("tests/client/test_client_permutation.py", "tests/client/test_client_vertical.py"),
        "loads each partner's data and settings for the handlers",
    ),
    "client/centroid_chain.py": (
        ("tests/adversarial/test_centroid_chain.py",),
        "indirect: a malicious coordinator's chosen centroids and forged sums refused by real "
        "partners via client/client_app.py",
    ),
    "client/secagg_node.py": (
        ("tests/adversarial/test_secagg_node.py",),
        "indirect: a malicious coordinator through the `query.secagg` stages at a real "
        "node, via client/client_app.py",
    ),
    "client/vertical_inference.py": (
        ("tests/adversarial/test_vertical_attacks.py", "tests/client/test_client_vertical.py"),
        "indirect: the label holder's predict steps via client/vertical.py"
        " (a second predict with another alignment refused)",
    ),
    "client/vertical_rows.py": (
        ("tests/adversarial/test_vertical_attacks.py",),
        "aligned rows of each party under relay and party attacks",
    ),
    "client/vertical_split.py": (
        ("tests/client/test_client_vertical.py", "tests/adversarial/test_vertical_attacks.py"),
        "indirect: split-NN steps via client/vertical.py (embedding DP charged first,"
        " repeated evaluation refused)",
    ),
    "client/vertical_store.py": (
        ("tests/client/test_client_vertical.py", "tests/adversarial/test_vertical_attacks.py"),
        "each party's stored vertical state across the message schedule",
    ),
    "client/vertical_training.py": (
        ("tests/client/test_client_vertical.py", "tests/adversarial/test_vertical_attacks.py"),
        "indirect: vertical LR training steps via client/vertical.py (crafted gradients refused)",
    ),
    # --- common/ ---------------------------------------------------------------------
    "common/child_process.py": (
        ("tests/integration/test_federation.py", "tests/adversarial/test_outsider.py"),
        "indirect: the coordinator and node processes started by"
        " federation/local_federation.py start and stop their Flower children",
    ),
    "common/csv_table.py": (
        ("tests/common/test_common_dataset.py",),
        "indirect: CSV reading behind load_dataset via common/dataset.py",
    ),
    "common/job_fab.py": (
        ("tests/client/test_fab_check.py",),
        "the job app written by submit is accepted, changed ones refused",
    ),
    "common/jobspec.py": (
        (
            "tests/common/test_common_jobspec_serde.py",
            "tests/common/test_common_jobspec_vertical.py",
        ),
        "job specs parsed and refused with typed errors",
    ),
    "common/jobspec_privacy.py": (
        ("tests/common/test_common_jobspec_serde.py",),
        "indirect: the [privacy] section's aggregation defaults and refused DP settings,"
        " via common/jobspec.py",
    ),
    "common/jobspec_sections.py": (
        ("tests/common/test_common_jobspec_serde.py",),
        "indirect: the model, training, evaluation and segmentation sections' bounds"
        " (hidden sizes, timeouts, NaN refused), via common/jobspec.py",
    ),
    "common/keys.py": (
        ("tests/compliance/test_compliance_signing.py", "tests/client/test_peer_trust.py"),
        "Ed25519 keys, signed-note verifier keys, pinned peer keys",
    ),
    "common/messages/base.py": (
        ("tests/common/test_messages.py",),
        "the request head and bounds: real requests decode; wrong types, missing fields and"
        " out-of-bound values are ProtocolErrors",
    ),
    "common/messages/protection.py": (
        ("tests/common/test_messages.py", "tests/adversarial/test_malformed_requests.py"),
        "key ceremony, decryption, masked-aggregation and cosign requests as the coordinator"
        " builds them, and malformed ones refused",
    ),
    "common/messages/statistics.py": (
        ("tests/common/test_messages.py", "tests/adversarial/test_malformed_requests.py"),
        "the horizontal jobs' data requests as the coordinator builds them, and malformed ones"
        " refused by the real partner code path",
    ),
    "common/messages/vertical.py": (
        ("tests/common/test_messages.py",),
        "one model per vertical phase, chosen by the phase; malformed phases refused",
    ),
    "common/batch.py": (
        (
            "tests/adversarial/test_batch_requests.py",
            "tests/coordinator/test_coordinator_masked.py",
            "tests/coordinator/test_broadcast.py",
        ),
        "several requests in one message: each answered as if alone, malformed envelopes"
        " refused whole, masked steps' stages batched per partner",
    ),
    "common/runtime_fast.py": (
        ("tests/coordinator/test_serverappio_fast.py", "tests/client/test_runtime_fast.py"),
        "the SuperLink's and the SuperNode's runtime calls answered as Flower's apps, byte"
        " for byte; failed checks left to them",
    ),
    "common/serde.py": (
        (
            "tests/common/test_common_jobspec_serde.py",
            "tests/common/test_messages.py",
            "tests/coordinator/test_broadcast.py",
        ),
        "wire round trips, typed reads (Payload.as_) and malformed messages refused",
    ),
    "common/release_text.py": (
        ("tests/console/test_console_jobs.py", "tests/cli/test_cli_progress.py"),
        "the released model and its warnings, on the job page and in the terminal",
    ),
    "common/schema_label.py": (
        ("tests/common/test_common_schema_draft.py", "tests/cli/test_data_schema_paths.py"),
        "the label guess of `fedcollab data schema`: never past the best-named column",
    ),
    # --- compliance/ -----------------------------------------------------------------
    "compliance/bundle_files.py": (
        ("tests/adversarial/test_bundle_files.py",),
        "symbolic links and special files in a bundle refused; the console's copy",
    ),
    "compliance/expected_head.py": (
        ("tests/adversarial/test_audit_rollback.py",),
        "a bundle cut back without a key, refused against the head `audit verify` printed",
    ),
    "compliance/bundle_entries.py": (
        ("tests/compliance/test_compliance_bundle.py",),
        "canonical-JSON and envelope checks of exported entries",
    ),
    "compliance/checkpoint.py": (
        (
            "tests/compliance/test_compliance_signing.py",
            "tests/compliance/test_compliance_cosigning.py",
        ),
        "signed-note checkpoints and their cosignatures",
    ),
    "compliance/events.py": (
        ("tests/compliance/test_compliance_log.py", "tests/compliance/test_compliance_signing.py"),
        "signed events appended, proven and verified",
    ),
    "compliance/report_jobs.py": (
        ("tests/compliance/test_compliance_report.py",),
        "indirect: the report's job sections via compliance/report.py",
    ),
    "compliance/report_model.py": (
        ("tests/compliance/test_compliance_report.py",),
        "indirect: the report model every section fills via compliance/report.py",
    ),
    "compliance/report_render.py": (
        (
            "tests/compliance/test_compliance_report_insights.py",
            "tests/compliance/test_compliance_report.py",
        ),
        "HTML/PDF rendering of the compliance report",
    ),
    "compliance/store.py": (
        ("tests/adversarial/test_audit_attacks.py", "tests/compliance/test_compliance_log.py"),
        "the log's SQLite store: a back-dated append refused, tampering found",
    ),
    "compliance/trail.py": (
        ("tests/console/test_console_audit.py", "tests/coordinator/test_coordinator_recovery.py"),
        "audit trails written by the roles and read by the console",
    ),
    # --- coordinator/ ----------------------------------------------------------------
    "coordinator/node_journal.py": (
        ("tests/coordinator/test_superlink_launch.py",),
        "journaled registrations replayed with the same ids; corrupt, unreadable and legacy "
        "journals",
    ),
    "coordinator/audit.py": (
        (
            "tests/coordinator/test_coordinator_encryption.py",
            "tests/adversarial/test_secagg_node.py",
        ),
        "the job's audit records of refused ciphertexts and masked rounds",
    ),
    "coordinator/cosign.py": (
        ("tests/coordinator/test_coordinator_masked.py",),
        "indirect: every partner cosigns the checkpoint at job end via coordinator/job.py",
    ),
    "coordinator/job.py": (
        (
            "tests/coordinator/test_coordinator_rounds.py",
            "tests/coordinator/test_coordinator_masked.py",
        ),
        "`run_job` end to end on the in-memory Grid",
    ),
    "coordinator/local_grants.py": (
        ("tests/integration/test_federation.py", "tests/coordinator/test_coordinator_masked.py"),
        "the example registry and grants of loopback and in-memory federations",
    ),
    "coordinator/membership.py": (
        ("tests/coordinator/test_coordinator_refusals.py", "tests/adversarial/test_secagg_node.py"),
        "indirect: discovery, handshake refusals and dropouts via coordinator/roster.py",
    ),
    "coordinator/outputs.py": (
        ("tests/coordinator/test_coordinator_recovery.py", "tests/console/test_console_jobs.py"),
        "job output folders written, recovered after a crash, read by the console",
    ),
    "coordinator/policy_gate.py": (
        ("tests/console/test_console_jobs.py", "tests/integration/test_multihost.py"),
        "indirect: a submission refused by the policy gate via coordinator/submit.py",
    ),
    "coordinator/prediction.py": (
        (
            "tests/coordinator/test_coordinator_rounds.py",
            "tests/coordinator/test_coordinator_attributions.py",
        ),
        "indirect: purchase-prediction rounds and attributions via coordinator/job.py",
    ),
    "coordinator/prediction_release.py": (
        ("tests/coordinator/test_coordinator_rounds.py", "tests/cli/test_cli_progress.py"),
        "the released model, its warnings and DP-estimate marks, through run_job",
    ),
    "coordinator/preprocess.py": (
        ("tests/coordinator/test_coordinator_masked.py",),
        "indirect: federated preprocessing before each masked job via coordinator/job.py",
    ),
    "coordinator/roster.py": (
        (
            "tests/coordinator/test_coordinator_encryption.py",
            "tests/coordinator/test_coordinator_refusals.py",
        ),
        "ciphertext sums refused and logged; all partners refusing fails fast",
    ),
    "coordinator/secagg.py": (
        ("tests/adversarial/test_secagg_node.py",),
        "the coordinator's masked sum against real partners with dropouts",
    ),
    "coordinator/secagg_setup.py": (
        ("tests/coordinator/test_secagg_round.py", "tests/coordinator/test_coordinator_masked.py"),
        "the key set-up stages and their ahead variants through the real coordinator and "
        "partners (refusals, dropouts, a failed set-up)",
    ),
    "coordinator/segmentation.py": (
        ("tests/coordinator/test_coordinator_masked.py",),
        "indirect: a masked segmentation job equals the plaintext one via coordinator/job.py",
    ),
    "coordinator/server_app.py": (
        ("tests/adversarial/test_server_app_run_config.py",),
        "a run config cannot switch off the policy gate or the audit trail",
    ),
    "coordinator/superlink.py": (
        ("tests/coordinator/test_superlink_launch.py", "tests/integration/test_federation.py"),
        "the SuperLink's command line and config; the real coordinator process",
    ),
    "coordinator/vertical.py": (
        ("tests/client/test_client_vertical.py", "tests/adversarial/test_vertical_attacks.py"),
        "the coordinator's vertical schedule over an in-memory relay",
    ),
    # --- coordinator/console/: the web console ---------------------------------------
    "coordinator/console/app.py": (
        ("tests/console/test_console_access.py", "tests/console/test_console_login.py"),
        "the app made by `create_app` (tests/console/conftest.py) over HTTP",
    ),
    "coordinator/console/audit_view.py": (
        ("tests/console/test_console_audit.py",),
        "indirect: the audit pages (verification, entry browser) via coordinator/console/app.py",
    ),
    "coordinator/console/auth.py": (
        ("tests/console/test_console_login.py", "tests/console/test_console_access.py"),
        "users, password hashing, sessions, lockout",
    ),
    "coordinator/console/charts.py": (
        ("tests/console/test_console_jobs.py", "tests/console/test_console_access.py"),
        "indirect: the metric and budget SVG charts via coordinator/console/app.py",
    ),
    "coordinator/console/context.py": (
        ("tests/console/test_console_access.py",),
        "indirect: the page renderer and per-process state via coordinator/console/app.py",
    ),
    "coordinator/console/permissions.py": (
        ("tests/console/test_console_access.py",),
        "indirect: the role access matrix via coordinator/console/app.py",
    ),
    "coordinator/console/routes_audit.py": (
        ("tests/console/test_console_audit.py",),
        "indirect: /audit pages and the report export via coordinator/console/app.py",
    ),
    "coordinator/console/routes_jobs.py": (
        ("tests/console/test_console_jobs.py",),
        "indirect: /jobs pages, API and submission form via coordinator/console/app.py",
    ),
    "coordinator/console/routes_partners.py": (
        ("tests/console/test_console_access.py",),
        "indirect: /participants and /budgets pages via coordinator/console/app.py",
    ),
    "coordinator/console/settings.py": (
        ("tests/console/test_console_cli.py", "tests/console/test_console_audit.py"),
        "console config, `init_console`, registered ledgers and bundles",
    ),
    "coordinator/console/sources.py": (
        ("tests/console/test_console_access.py",),
        "indirect: ledgers read without writing, each partner's own via coordinator/console/app.py",
    ),
    "coordinator/console/submission.py": (
        ("tests/console/test_console_jobs.py",),
        "indirect: /jobs/new submissions (policy refusal, double click) via"
        " coordinator/console/app.py",
    ),
    # --- federation/: both roles on one machine ---------------------------------------
    "federation/local_federation.py": (
        ("tests/integration/test_federation.py",),
        "a coordinator and partner SuperNodes as real processes on loopback",
    ),
    "federation/simulation.py": (
        ("tests/federation/test_inmemory.py", "tests/install/test_wheel.py"),
        "the simulated partners' settings, audit set-up and policy (through the in-memory "
        "federation); `fedcollab run` from the wheel",
    ),
    # --- privacy/ --------------------------------------------------------------------
    "privacy/ckks_params.py": (
        ("tests/privacy/test_privacy_ckks.py",),
        "chunk layout and the parameter sets through every encrypt, sum and decrypt",
    ),
    "privacy/ckks_wire.py": (
        ("tests/privacy/test_privacy_ckks.py",),
        "seeded fresh ciphertexts at half the bytes, loaded, summed and decrypted by TenSEAL",
    ),
    "privacy/secagg_messages.py": (
        ("tests/privacy/test_secagg_wire.py",),
        "every message of a session round-trips; malformed ones refused",
    ),
    "privacy/secagg_partner.py": (
        ("tests/privacy/test_secagg.py",),
        "the partner's stages answered once and in order, with dropouts",
    ),
    "privacy/secagg_session.py": (
        ("tests/privacy/test_secagg.py", "tests/adversarial/test_secagg_coordinator.py"),
        "session configs, thresholds and a malicious coordinator",
    ),
    "privacy/secagg_unmask.py": (
        ("tests/privacy/test_secagg.py", "tests/privacy/test_secagg_ckks.py"),
        "exact sums after unmasking, dropouts included",
    ),
    "privacy/verified_decryption.py": (
        ("tests/adversarial/test_secagg_decryptor.py", "tests/privacy/test_secagg_ckks.py"),
        "forged aggregates and repeated decryptions refused",
    ),
    # --- protocols/ ------------------------------------------------------------------
    "protocols/_checks.py": (
        (
            "tests/protocols/test_protocols_vector_sum.py",
            "tests/protocols/test_protocols_fedavg.py",
        ),
        "indirect: malformed vectors refused via protocols/vector_sum.py and protocols/fedavg.py",
    ),
    "protocols/dp_segments.py": (
        ("tests/protocols/test_protocols_client_dp.py",),
        "bounded-contribution segment statistics for DP segmentation",
    ),
    "protocols/params.py": (
        ("tests/protocols/test_protocols_models.py", "tests/protocols/test_protocols_fedavg.py"),
        "indirect: flatten/unflatten round trips via protocols/models.py",
    ),
    "protocols/split_nn_dp.py": (
        ("tests/protocols/test_split_nn.py",),
        "DP accounting of clipped, noised split-NN embedding releases",
    ),
    "protocols/vertical_data.py": (
        ("tests/client/test_client_vertical.py", "tests/integration/test_vertical.py"),
        "indirect: party matrices on aligned rows via client/vertical.py",
    ),
    "demo/checks.py": (
        ("tests/integration/test_federation.py", "tests/integration/test_vertical.py"),
        "every party's bundle exported, verified under pinned keys and cross-checked after "
        "real jobs",
    ),
    "demo/horizontal.py": (
        ("tests/demo/test_demo_run.py", "tests/experiments/test_bench_deployment.py"),
        "the demo's brand partners and job files from the shipped data",
    ),
    "demo/vertical.py": (
        ("tests/client/test_client_vertical.py", "tests/common/test_common_jobspec_vertical.py"),
        "the vertical parties and jobs the partner code path runs",
    ),
    "demo/vertical_summary.py": (
        ("tests/client/test_client_vertical.py",),
        "the true alignment and pooled baselines the vertical results are checked against",
    ),
    "protocols/vertical_local.py": (
        ("tests/protocols/test_vertical_lr.py", "tests/protocols/test_split_nn.py"),
        "every role of vertical LR and split NN in one process, against the pooled fit",
    ),
}

#: Modules no test exercises, with the reason.
UNTESTED: dict[str, str] = {
    "cli/demo.py": (
        "`fedcollab demo` runs only under `make demo` (a whole federation, ~40 min);"
        " tests/install/test_wheel.py runs only its --help from the installed wheel, and"
        " tests/demo/ test the demo's parts (fedcollab.demo), not the command"
    ),
}


def product_modules() -> list[str]:
    return sorted(
        p.relative_to(ROOT).as_posix()
        for package in PACKAGES
        for p in (ROOT / package).rglob("*.py")
        if p.name != "__init__.py"
    )


def _test_folder(module: str) -> str:
    parts = module.split("/")
    return "console" if parts[:2] == ["coordinator", "console"] else parts[0]


def name_matched(module: str) -> list[str]:
    """The test files named after ``module`` (rule 1 of the module docstring)."""
    folder, stem = _test_folder(module), Path(module).stem
    names = (f"tests/{folder}/test_{stem}.py", f"tests/{folder}/test_{folder}_{stem}.py")
    return [n for n in names if (ROOT / n).is_file()]


def dotted(module: str) -> str:
    return "fedcollab." + module.removesuffix(".py").replace("/", ".")


@cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


@cache
def _nodes(path: Path) -> tuple[ast.AST, ...]:
    return tuple(ast.walk(_tree(path)))


@cache
def _imported(path: Path) -> frozenset[str]:
    names: set[str] = set()
    for node in _nodes(path):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return frozenset(names)


_DOTTED = re.compile(r"(fedcollab(?:\.\w+)+)(?::\w+)?")


@cache
def _named(path: Path) -> frozenset[str]:
    """Dotted paths a string literal of ``path`` is, maybe with an attribute
    (``"fedcollab.x.y:app"``, ``"fedcollab.x.y.attr"``), and their parents."""
    found: set[str] = set()
    for node in _nodes(path):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = _DOTTED.fullmatch(node.value)
            if match:
                parts = match.group(1).split(".")
                found.update(".".join(parts[:i]) for i in range(2, len(parts) + 1))
    return frozenset(found)


def _is_app_call(node: ast.expr, method: str) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == method
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "app"
    )


def _first_level_names(path: Path) -> list[str]:
    """Commands and sub-groups a cli module adds to its ``app`` (typer's naming)."""
    names = []
    for node in _nodes(path):
        if isinstance(node, ast.FunctionDef):
            for deco in node.decorator_list:
                if _is_app_call(deco, "command"):
                    assert isinstance(deco, ast.Call)
                    first = deco.args[0] if deco.args else None
                    if isinstance(first, ast.Constant) and isinstance(first.value, str):
                        names.append(first.value)
                    else:
                        names.append(node.name.replace("_", "-"))
        elif isinstance(node, ast.Call) and _is_app_call(node, "add_typer"):
            names += [
                str(kw.value.value)
                for kw in node.keywords
                if kw.arg == "name" and isinstance(kw.value, ast.Constant)
            ]
    return names


@cache
def cli_commands() -> dict[str, frozenset[tuple[str, ...]]]:
    """cli module -> its command paths, from ``_GROUPS`` in cli/app.py."""
    groups: list[tuple[str, str | None]] = []
    for node in _tree(ROOT / "cli" / "app.py").body:
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.target.id == "_GROUPS"
            and node.value is not None
        ):
            groups = ast.literal_eval(node.value)
    assert groups, "cli/app.py has no _GROUPS list: update tests/test_map.py"
    paths: dict[str, set[tuple[str, ...]]] = {}
    for name, group in groups:
        module = name.removeprefix("fedcollab.").replace(".", "/") + ".py"
        for command in _first_level_names(ROOT / module):
            paths.setdefault(module, set()).add((group, command) if group else (command,))
    return {m: frozenset(p) for m, p in paths.items()}


@cache
def _sequences(path: Path) -> tuple[tuple[list[ast.expr], ast.expr | None], ...]:
    """Positional arguments of every call (with its callee) and list/tuple elements."""
    found: list[tuple[list[ast.expr], ast.expr | None]] = []
    for node in _nodes(path):
        if isinstance(node, ast.Call):
            found.append((list(node.args), node.func))
        elif isinstance(node, (ast.List, ast.Tuple)):
            found.append((list(node.elts), None))
    return tuple(found)


def _invokes(path: Path, command: tuple[str, ...]) -> bool:
    for elements, callee in _sequences(path):
        values = [e.value if isinstance(e, ast.Constant) else None for e in elements]
        for i in range(len(values) - len(command) + 1):
            if tuple(values[i : i + len(command)]) != command:
                continue
            if len(command) > 1:
                return True
            before = elements[i - 1] if i > 0 else callee
            if before is not None and "fedcollab" in ast.unparse(before):
                return True
    return False


def _with_helpers(test: Path) -> list[Path]:
    """The test file, the conftest.py files pytest loads for it, the tests.* it imports."""
    found = [test]
    folder = test.parent
    while folder != ROOT and folder != folder.parent:
        if (folder / "conftest.py").is_file():
            found.append(folder / "conftest.py")
        folder = folder.parent
    for name in sorted(_imported(test)):
        candidate = ROOT / (name.replace(".", "/") + ".py")
        if name.startswith("tests.") and candidate.is_file() and candidate not in found:
            found.append(candidate)
    return found


def reaches(test: str, module: str) -> bool:
    """Does ``test`` import, name or invoke ``module`` (rule in the module docstring)?"""
    name = dotted(module)
    commands = cli_commands().get(module, frozenset())
    return any(
        name in _imported(path)
        or name in _named(path)
        or any(_invokes(path, command) for command in commands)
        for path in _with_helpers(ROOT / test)
    )


@cache
def _product_edges() -> dict[str, frozenset[str]]:
    """Product module -> the product modules it imports or names by dotted path."""
    modules = {dotted(m): m for m in product_modules()}
    edges = {}
    for module in modules.values():
        path = ROOT / module
        targets = {modules[n] for n in _imported(path) if n in modules}
        targets |= {m for d, m in modules.items() if m != module and d in _named(path)}
        edges[module] = frozenset(targets)
    return edges


def depends_on(entry: str, module: str) -> bool:
    """Does ``entry`` import ``module``, directly or through other product modules?"""
    seen: set[str] = set()
    todo = [entry]
    while todo:
        for nxt in _product_edges().get(todo.pop(), frozenset()) - seen:
            if nxt == module:
                return True
            seen.add(nxt)
            todo.append(nxt)
    return False


_MODULE_PATH = re.compile(rf"\b(?:{'|'.join(PACKAGES)})/[\w/]+\.py\b")


def entry_points(how: str) -> list[str]:
    """The product modules an ``indirect:`` phrase says it goes through."""
    return _MODULE_PATH.findall(how.split(INDIRECT, 1)[1]) if INDIRECT in how else []


# --- the checks: each returns its findings, so the self-test can feed it a bad map ----


def unmapped(covered: Mapping[str, object], untested: Mapping[str, str]) -> list[str]:
    return [
        m
        for m in product_modules()
        if not name_matched(m) and m not in covered and m not in untested
    ]


def missing_files(covered: Mapping[str, tuple[tuple[str, ...], str]]) -> list[str]:
    return [
        f"{module}: {test}"
        for module, (tests, _) in covered.items()
        for test in tests or ("(no test file listed)",)
        if not (Path(test).name.startswith("test_") and (ROOT / test).is_file())
    ]


def unreached(covered: Mapping[str, tuple[tuple[str, ...], str]]) -> list[str]:
    problems = []
    for module, (tests, how) in covered.items():
        tests = tuple(t for t in tests if (ROOT / t).is_file())
        if any(reaches(t, module) for t in tests):
            continue
        if INDIRECT not in how:
            problems.append(f"{module}: no listed file imports, names or invokes it")
            continue
        entries = entry_points(how)
        if not any(
            (ROOT / e).is_file() and depends_on(e, module) and any(reaches(t, e) for t in tests)
            for e in entries
        ):
            problems.append(
                f"{module}: indirect via {entries or 'no module path'}, but no listed file"
                " reaches an entry module that imports it"
            )
    return problems


def stale(covered: Mapping[str, object], untested: Mapping[str, str]) -> list[str]:
    modules = set(product_modules())
    problems = []
    for module in [*covered, *untested]:
        if module not in modules:
            problems.append(f"{module}: no such product module")
        elif name_matched(module):
            problems.append(f"{module}: now has {name_matched(module)}; drop its entry")
    problems += [f"{m}: both covered and untested" for m in set(covered) & set(untested)]
    return problems


def test_every_module_has_a_test_file_or_an_entry() -> None:
    missing = unmapped(COVERED_BY, UNTESTED)
    assert missing == [], (
        "add tests/<pkg>/test_<module>.py, or an entry in COVERED_BY (or UNTESTED, with"
        f" the reason) in tests/test_map.py for: {missing}"
    )


def test_listed_test_files_exist() -> None:
    assert missing_files(COVERED_BY) == []


def test_listed_test_files_reach_their_module() -> None:
    assert unreached(COVERED_BY) == []


def test_no_stale_entries() -> None:
    assert stale(COVERED_BY, UNTESTED) == []


def test_the_rules_find_what_they_should() -> None:
    assert name_matched("protocols/fedavg.py") == ["tests/protocols/test_protocols_fedavg.py"]
    assert name_matched("coordinator/console/jobs.py") == ["tests/console/test_console_jobs.py"]
    assert ("budget", "set") in cli_commands()["cli/budget.py"]
    assert ("audit", "report") in cli_commands()["cli/report.py"]
    assert cli_commands()["cli/run.py"] == {("run",)}
    assert reaches("tests/integration/test_budget.py", "cli/budget.py")  # a subprocess
    assert reaches("tests/cli/test_cli_registry_grant.py", "cli/registry.py")  # run(...)
    # Flower's `flwr run` is not `fedcollab run`:
    assert not reaches("tests/adversarial/test_outsider.py", "cli/run.py")
    assert depends_on("coordinator/job.py", "coordinator/prediction.py")
    assert not depends_on("common/errors.py", "coordinator/job.py")


def test_each_check_fails_on_a_bad_map() -> None:
    covered = dict(COVERED_BY)
    one = next(iter(covered))
    del covered[one]
    assert unmapped(covered, UNTESTED) == [one]

    assert missing_files({"cli/budget.py": (("tests/cli/test_nope.py",), "x")}) != []
    assert missing_files({"cli/budget.py": (("tests/support/integration.py",), "x")}) != []
    assert missing_files({"cli/budget.py": ((), "x")}) != []

    # A test that never touches the module, claimed directly and through a wrong entry.
    far = "tests/protocols/test_protocols_vector_sum.py"
    assert unreached({"cli/budget.py": ((far,), "direct")}) != []
    assert unreached({"cli/budget.py": ((far,), "indirect: via protocols/vector_sum.py")}) != []
    assert unreached({"cli/budget.py": ((far,), "indirect: somehow")}) != []
    # The entry module is reached but does not import the module.
    vertical = "tests/client/test_client_vertical.py"
    assert unreached({"cli/budget.py": ((vertical,), "indirect: via client/vertical.py")}) != []
    assert unreached({"protocols/vertical_data.py": ((vertical,), "direct")}) != []
    assert unreached({"protocols/vertical_data.py": COVERED_BY["protocols/vertical_data.py"]}) == []

    assert stale({"common/atomic.py": ((), "x")}, {}) != []  # has a name-matched file
    assert stale({}, {"common/gone.py": "x"}) != []
    assert stale({"cli/demo.py": ((), "x")}, {"cli/demo.py": "y"}) != []
