"""Job output folders (``audit report --job``) checked against the run they hold.

One job spec may run many times, each run releasing its own outputs under the same
digest, so a folder is first matched to its run and then compared with *that* run's
``model.released`` only (never with another run's).  A folder names its job and
digest (``model_card.json``) but the coordinator writes no run id into it, so the
run is the first of:

1. a run id the folder states: ``model_card.json``'s ``job.run``, or the ``run`` of
   ``progress.jsonl``'s ``job_start`` line;
2. the checkpoint the partners cosigned after the job (``audit.json``, or the
   ``cosigned`` line of ``progress.jsonl``): the run whose ``checkpoint.cosignatures``
   event in the log names that size and root;
3. the run whose ``model.released`` hashed the folder's very ``model_card.json``;
4. the one run of the digest that released outputs (or the one run of the digest).

A folder none of these places is an error finding, and its files are not compared.

>>> check_job_dir(Path("results/purchase"), jobs, findings)  # jobs: JobProvenance list

Notes
-----
* The folder's files are not signed: what they claim only picks the run to compare
  with.  A folder claiming another run still has to hash to that run's release.
* Output names come from the log and are looked up only when they are plain file
  names, so a crafted name cannot make the report hash files elsewhere.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from fedcollab.common.errors import ComplianceError
from fedcollab.compliance.report_insights import read_insights
from fedcollab.compliance.report_model import (
    Finding,
    JobProvenance,
    Output,
    as_map,
    text,
)

__all__ = ["check_job_dir"]


class _CardJob(BaseModel):
    # A model card has many fields the report does not use: only these are read,
    # strictly typed; the rest is ignored rather than refused.
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    name: str
    digest: str
    run: str = ""


class _CardPartner(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    name: str
    dataset_hash: str


class _ModelCard(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    job: _CardJob
    partners: list[_CardPartner] = []


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _json(data: str) -> dict[str, object]:
    """A JSON object, or ``{}`` for anything else (these files are only hints)."""
    try:
        return as_map(json.loads(data))
    except ValueError:
        return {}


def _folder_claims(folder: Path, card: _ModelCard) -> tuple[str, set[tuple[str, str]]]:
    """The run id the folder states ("" if none) and the checkpoints it says were cosigned."""
    progress = [_json(line) for line in _read(folder / "progress.jsonl").splitlines()]
    run = card.job.run or next(
        (text(e.get("run")) for e in progress if e.get("event") == "job_start"), ""
    )
    cosigned = [as_map(e.get("checkpoint")) for e in progress if e.get("event") == "cosigned"]
    cosigned.append(as_map(_json(_read(folder / "audit.json")).get("checkpoint")))
    return run, {(text(c.get("size")), text(c.get("root"))) for c in cosigned if c}


def _which_run(
    folder: Path, card: _ModelCard, jobs: list[JobProvenance], found: list[Finding]
) -> tuple[int | None, str]:
    """The index in ``jobs`` of the run ``folder`` holds, and how it was matched."""
    digest = card.job.digest
    runs = [i for i, j in enumerate(jobs) if j.digest == digest]
    if not runs:
        msg = f"{folder}: model card of job {card.job.name!r} has digest {digest}, "
        found.append(Finding("error", "", msg + "which appears nowhere in the log"))
        return None, ""
    run, cosigned = _folder_claims(folder, card)
    if run:
        at = next((i for i in runs if jobs[i].run == run), None)
        if at is None:
            msg = f"{folder}: the folder names run {run} of job {card.job.name!r}, "
            found.append(Finding("error", digest, msg + "which the log does not record"))
            return None, ""
        return at, "the run id it records"
    for i in runs:
        hit = cosigned.intersection(jobs[i].checkpoints)
        if hit:
            size, _root = sorted(hit)[0]
            return i, f"the checkpoint of size {size} its audit.json records cosigned"
    card_hash = _sha256_file(folder / "model_card.json")
    by_card = [i for i in runs if _released(jobs[i], "model_card.json") == card_hash]
    if len(by_card) == 1:
        return by_card[0], "its model_card.json, which this run released"
    released = [i for i in runs if jobs[i].released]
    if len(released) == 1:
        return released[0], "the only run of its job digest that released outputs"
    if len(runs) == 1:
        return runs[0], "the only run of its job digest in the log"
    names = ", ".join(jobs[i].run or "(no run id)" for i in runs)
    found.append(
        Finding(
            "error",
            digest,
            f"{folder}: cannot tell which of the {len(runs)} runs of job {card.job.name!r} "
            f"({names}) it holds: it records no run id, no checkpoint a run's cosigning "
            "recorded, and a model_card.json no run released; its outputs were not checked",
        )
    )
    return None, ""


def _released(job: JobProvenance, filename: str) -> str:
    return next((o.sha256 for o in job.outputs if o.filename == filename), "")


def _check_output(folder: Path, o: Output, d: str, found: list[Finding]) -> Output:
    name = o.filename
    if name in ("", ".", "..") or Path(name).name != name or "\\" in name:
        found.append(Finding("warning", d, f"output name {name!r} is not a plain file name"))
        return replace(o, check="not checked: not a plain file name")
    path = folder / name
    if not path.is_file():
        found.append(Finding("warning", d, f"{folder}: released output {name} is missing"))
        return replace(o, check=f"missing from {folder}")
    actual = _sha256_file(path)
    if actual != o.sha256:
        msg = f"{folder}/{name}: hash {actual} differs from the released {o.sha256}"
        found.append(Finding("error", d, msg))
        return replace(o, check=f"MISMATCH: {folder} holds {actual}")
    return replace(o, check=f"matches {folder}")


def check_job_dir(folder: Path, jobs: list[JobProvenance], found: list[Finding]) -> None:
    """Cross-check one job folder against the run it holds; replaces that run in ``jobs``."""
    card_path = folder / "model_card.json"
    try:
        card = _ModelCard.model_validate_json(card_path.read_bytes())
    except OSError as exc:
        raise ComplianceError(
            f"{card_path} cannot be read: {exc.strerror}",
            hint="pass the output folder of a job (the one holding model_card.json)",
        ) from exc
    except ValidationError as exc:
        raise ComplianceError(f"{card_path} is not a model card: {exc.errors()[0]['msg']}") from exc
    at, how = _which_run(folder, card, jobs, found)
    if at is None:
        return
    job = jobs[at]
    d = job.key
    logged = {p.name: p.dataset_hash for p in job.participants if p.dataset_hash}
    for p in card.partners:
        if p.name not in logged:
            msg = f"{folder}: model card lists {p.name!r}, whom the log does not record joining"
            found.append(Finding("error", d, msg))
        elif logged[p.name] != p.dataset_hash:
            msg = f"{folder}: model card gives {p.name!r} dataset {p.dataset_hash}, "
            found.append(Finding("error", d, msg + f"the log records {logged[p.name]}"))
    if not job.released:
        msg = f"{folder}: the log records no model.released for this run; outputs are unattested"
        found.append(Finding("error", d, msg))
    outputs = tuple(_check_output(folder, o, d, found) for o in job.outputs)
    insights, problems = read_insights(folder, released={o.filename: o.sha256 for o in job.outputs})
    found.extend(Finding("warning", d, p) for p in problems)
    folders = (*job.folders, f"{folder} (matched by {how})")
    jobs[at] = replace(job, outputs=outputs, insights=insights, folders=folders)
