"""Strict bases, bounds and field types of the partner's request models, and the head
every request carries (:mod:`common.messages`).

Notes
-----
Bounds: names at most :data:`MAX_NAME` characters; lists of partners at most
:data:`MAX_PARTNERS` (the job spec's own bound on participants, common.jobspec); a
round at most :data:`MAX_ROUNDS` (the spec's bound on rounds); lengths fit 31 bits;
floats are finite (Python's ``json.loads``, which common.serde uses, accepts ``NaN``).
The run's form (a folder name, letters, digits, ``_`` and ``-``) is the run contract's
check (client.run_contract), which logs its refusal in the partner's trail: the head
only bounds its length.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, JsonValue

__all__ = [
    "MAX_BLOB_CHARS",
    "MAX_ITEMS",
    "MAX_JOB_CHARS",
    "MAX_NAME",
    "MAX_PARTNERS",
    "MAX_ROUNDS",
    "Blob",
    "Closed",
    "Finite",
    "Length",
    "Name",
    "Offers",
    "Partners",
    "RequestHead",
    "Strict",
]

#: A job spec's canonical JSON (the largest field of any request; a vertical job's spec
#: holds every party's schema): 1 MiB leaves room for thousands of columns.
MAX_JOB_CHARS = 1 << 20
#: Partner, column, step and parameter-set names.
MAX_NAME = 256
#: The job spec's bound on participants (common.jobspec).
MAX_PARTNERS = 10_000
#: The job spec's bound on rounds (common.jobspec).
MAX_ROUNDS = 10_000
#: Columns of a layout or preprocessor, values of one vocabulary, centroid rows/columns.
MAX_ITEMS = 100_000
#: A base64 field (envelopes, advertisements, signatures, proofs): 64 MiB of text.
MAX_BLOB_CHARS = 1 << 26

Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME)]
Blob = Annotated[str, Field(max_length=MAX_BLOB_CHARS)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
Length = Annotated[int, Field(ge=1, le=2**31 - 1)]
Partners = Annotated[list[Name], Field(max_length=MAX_PARTNERS)]
#: Signed transport-key offers by partner, each checked by privacy.key_transport
#: .verify_offer: a malformed offer is that partner's rejection (the key dealer reports
#: it in ``rejected``), not a refusal of the whole key ceremony.
Offers = Annotated[dict[Name, dict[str, JsonValue]], Field(max_length=MAX_PARTNERS)]


class Strict(BaseModel):
    """Strict types, frozen; unknown keys ignored (:mod:`common.messages`, Notes)."""

    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")


class Closed(Strict):
    """A nested object with one builder, which never adds other keys: those are refused."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")


class RequestHead(Strict):
    """What every request carries (coordinator.membership.Membership.job_meta): the job
    spec as JSON and the run the request belongs to."""

    job: Annotated[str, Field(min_length=1, max_length=MAX_JOB_CHARS)]
    #: Missing reads as "", which the run contract refuses after the request is logged
    #: (client.client_app decodes the head before the partner's trail is bound).
    run: Annotated[str, Field(max_length=MAX_NAME)] = ""
