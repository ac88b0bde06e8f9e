"""A partner node's own policy check: is this job inside my signed grant?

Run for every request, after the data is validated and before anything is
computed: the node refuses a job whose purpose its grant does not cover, whose
grant or consent records have expired, or whose dataset is not the one the
grant names, even if the coordinator accepted the job. A node started without
a grant refuses every job (fail closed).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from fedcollab.client.partner_data import PartnerData
from fedcollab.common.dataset import Dataset
from fedcollab.common.errors import PolicyRefusal
from fedcollab.common.jobspec import JobSpec
from fedcollab.common.keys import Signer
from fedcollab.compliance.grants import load_signed_grant, verify_grant
from fedcollab.compliance.policy import check_partner_grant

__all__ = ["PURPOSE_TASKS", "check_grant", "check_own_grant"]

#: The task each of fedcollab's purposes is for (docs/compliance): a grant of a purpose
#: covers that analysis only, whatever task a job labelled with it asks for. A purpose
#: missing here (a registry's own) is checked by the grant alone.
PURPOSE_TASKS: Mapping[str, frozenset[str]] = {
    "purchase-prediction": frozenset({"purchase_prediction"}),
    "user-segmentation": frozenset({"segmentation"}),
    "payment-risk-scoring": frozenset({"vertical"}),
}


def check_grant(config: Mapping[str, str], data: PartnerData, spec: JobSpec) -> None:
    tasks = PURPOSE_TASKS.get(spec.purpose)
    if tasks is not None and spec.task not in tasks:
        raise PolicyRefusal(
            f"job {spec.name!r} is a {spec.task} job under purpose {spec.purpose!r}, which "
            f"covers {', '.join(sorted(tasks))} only",
            hint="submit the job under the purpose of its task; the partner's grant of one "
            "purpose does not cover another analysis",
        )
    grant_file, key_file = config.get("grant"), config.get("audit-key")
    if not grant_file or not key_file:
        raise PolicyRefusal(
            "this node holds no signed dataset grant, so it takes part in no job",
            hint="sign one with `fedcollab grant sign` and start the node with --grant "
            "and --audit-key",
        )
    check_partner_grant(
        purpose_id=spec.purpose,
        partner=data.partner,
        dataset=data.dataset.schema.dataset,
        dataset_hash=data.dataset.content_hash,
        grant=load_signed_grant(Path(grant_file)),
        own_public_key=Signer.load(key_file).public_key,
        now=datetime.now(UTC),
    )


def check_own_grant(grant_file: Path, audit_key: Path, *, partner: str, dataset: Dataset) -> None:
    """At node start: the grant is ours, signed by our key, for this dataset."""
    signed = load_signed_grant(grant_file)
    verify_grant(signed, Signer.load(audit_key).public_key)
    g = signed.grant
    if g.partner != partner:
        raise PolicyRefusal(
            f"{grant_file} is a grant of {g.partner!r}, not {partner!r}",
            hint="pass your own grant with --grant",
        )
    if g.dataset != dataset.schema.dataset:
        raise PolicyRefusal(
            f"{grant_file} grants dataset {g.dataset!r}, this node serves "
            f"{dataset.schema.dataset!r}",
            hint="sign a grant for this dataset with `fedcollab grant sign`",
        )
    if g.dataset_hash is not None and g.dataset_hash != dataset.content_hash:
        raise PolicyRefusal(
            f"{grant_file} pins another version of the data ({g.dataset_hash})",
            hint="sign a grant for the current file, or restore the granted version",
        )
