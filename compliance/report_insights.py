"""The "Model insights" of a job folder, for the compliance report.

Read from ``attributions.json`` (top 10 attributions, with method and note)
and ``segments.json`` (label, size, share, purchase rate, lift, description),
when present.  Both files come from a job output folder and are untrusted:
they meet strict pydantic models at the door; a file that does not parse
becomes a warning finding, never a crash.  Whether each file is the one the
log's ``model.released`` event hashed is stated next to it.

>>> insights, problems = read_insights(Path("results/job-1"), released={})
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError

from fedcollab.compliance.report_model import JobInsights

__all__ = ["JobInsights", "pdf_insights", "read_insights"]

TOP_ATTRIBUTIONS = 10
_MAX_BYTES = 8 << 20  # a job's insight files are kilobytes; refuse to read a huge one


class _Entry(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    feature: str
    importance: float
    direction: Literal["+", "-"] | None = None


class _Attributions(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    job: str
    model: str
    method: str
    metric: str
    baseline: float | None = None
    note: str = ""
    features: list[_Entry]


class _Segment(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    segment: int
    size: int
    share: float
    purchase_rate: float | None = None
    lift: float | None = None
    label: str = ""
    description: str = ""


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.1%}"


def _attested(path: Path, data: bytes, released: Mapping[str, str]) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    if path.name not in released:
        return "not named in the log's model.released (unattested)"
    if released[path.name] != digest:
        return "differs from the hash in model.released (do not rely on it)"
    return "matches the hash in model.released"


def _read(path: Path, problems: list[str]) -> bytes | None:
    try:
        if path.stat().st_size > _MAX_BYTES:
            problems.append(f"{path}: larger than {_MAX_BYTES} bytes; not read")
            return None
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        problems.append(f"{path} cannot be read: {exc.strerror}")
        return None


def read_insights(
    folder: Path, *, released: Mapping[str, str]
) -> tuple[JobInsights | None, list[str]]:
    """The folder's insights (None if it has neither file) and what could not be read.

    ``released``: file name -> sha256 digest from the log's ``model.released``.
    """
    problems: list[str] = []
    sources: list[tuple[str, str]] = []
    attrs: _Attributions | None = None
    segs: list[_Segment] = []
    path = folder / "attributions.json"
    if (raw := _read(path, problems)) is not None:
        try:
            attrs = _Attributions.model_validate_json(raw)
            sources.append((path.name, _attested(path, raw, released)))
        except ValidationError as exc:
            problems.append(f"{path} is not an attributions file: {exc.errors()[0]['msg']}")
    path = folder / "segments.json"
    if (raw := _read(path, problems)) is not None:
        try:
            segs = [_Segment.model_validate(s) for s in _json_list(raw)]
            sources.append((path.name, _attested(path, raw, released)))
        except (ValidationError, ValueError) as exc:
            problems.append(f"{path} is not a segments file: {str(exc).splitlines()[0]}")
    if attrs is None and not segs:
        return None, problems
    top = sorted(attrs.features, key=lambda f: -f.importance)[:TOP_ATTRIBUTIONS] if attrs else []
    return (
        JobInsights(
            method=attrs.method if attrs else "",
            metric=attrs.metric if attrs else "",
            baseline="" if attrs is None or attrs.baseline is None else f"{attrs.baseline:.4f}",
            note=attrs.note if attrs else "",
            attributions=tuple((f.feature, f"{f.importance:.4f}", f.direction or "") for f in top),
            segments=tuple(
                (
                    s.label or f"segment {s.segment}",
                    str(s.size),
                    _pct(s.share),
                    _pct(s.purchase_rate),
                    "" if s.lift is None else f"{s.lift:.2f}",
                    s.description,
                )
                for s in segs
            ),
            sources=tuple(sources),
        ),
        problems,
    )


def _json_list(raw: bytes) -> list[object]:
    data = json.loads(raw)
    if not isinstance(data, list):
        raise ValueError("expected a JSON list of segments")
    return data


class _Doc(Protocol):
    def heading(self, text: str, level: int = 1) -> None: ...
    def para(self, text: str, *, bold: bool = False, size: float = 8.5) -> None: ...
    def grid(
        self,
        headers: Sequence[str] | None,
        rows: Sequence[Sequence[str]],
        widths: Sequence[float] | None = None,
    ) -> None: ...


def pdf_insights(doc: _Doc, insights: JobInsights) -> None:
    """The "Model insights" sub-section of a job in the PDF."""
    doc.heading("Model insights", 3)
    doc.para("; ".join(f"{name}: {check}" for name, check in insights.sources))
    if insights.attributions:
        base = f", baseline {insights.baseline}" if insights.baseline else ""
        doc.para(f"Top attributions ({insights.method}, {insights.metric}{base}). {insights.note}")
        doc.grid(["Feature", "Importance", "Direction"], insights.attributions, (5, 2, 1))
    if insights.segments:
        doc.grid(
            ["Segment", "Size", "Share", "Purchase rate", "Lift", "Description"],
            insights.segments,
            (3, 1, 1, 1.2, 1, 5),
        )
