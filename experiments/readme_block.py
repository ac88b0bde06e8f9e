"""The README's results block, written from the studies' JSON between two markers.

    text = render_block(results, runs, figures, readme=Path("README.md"))
    rewrite_readme(Path("README.md"), text)

Everything between ``<!-- results:begin -->`` and ``<!-- results:end -->`` is
generated: one table row per study (what was measured, whether its target was
met, the command that produced the JSON, wall time and machine load) and one
image link per figure. Nothing outside the markers changes, byte for byte;
a README without exactly one well-ordered pair of markers is refused with a
:class:`ReadmeMarkerError` and left untouched. The per-study sentences live in
:mod:`experiments.readme_rows`.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from experiments.figures import FIGURES
from experiments.readme_rows import ROWS
from experiments.studies import STUDIES, StudyRun
from fedcollab.common.errors import FedcollabError

__all__ = ["BEGIN", "END", "ReadmeMarkerError", "render_block", "replace_block", "rewrite_readme"]

BEGIN = "<!-- results:begin -->"
END = "<!-- results:end -->"


class ReadmeMarkerError(FedcollabError):
    """The README has no well-formed results block to rewrite."""


def replace_block(text: str, block: str, *, source: str = "README") -> str:
    """``text`` with everything between the markers replaced by ``block``."""
    begins, ends = text.count(BEGIN), text.count(END)
    if begins != 1 or ends != 1 or text.index(BEGIN) > text.index(END):
        raise ReadmeMarkerError(
            f"{source} needs exactly one {BEGIN} followed by one {END} "
            f"(found {begins} begin, {ends} end marker(s)); nothing was written",
            hint=f"put {BEGIN} and {END}, each on its own line, around the results block, "
            "or pass --no-readme",
        )
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{block.strip()}\n{END}{tail}"


def rewrite_readme(path: Path, block: str) -> bool:
    """Replace ``path``'s results block; True when the file changed.

    Bytes outside the markers are kept exactly (line endings included); the
    file is replaced atomically.
    """
    old = path.read_bytes().decode("utf-8")
    new = replace_block(old, block, source=str(path))
    if new == old:
        return False
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(new.encode("utf-8"))
    tmp.replace(path)
    return True


def _command(result: Mapping[str, Any], run: StudyRun | None) -> str:
    if run is not None:
        return f"`{run.command_text()}`"
    command = result.get("command")
    return f"`{shlex.join(command)}`" if command else "(not recorded)"


def _cost(result: Mapping[str, Any], run: StudyRun | None) -> str:
    if run is not None:
        start, end = run.loadavg_at_start[0], run.loadavg_at_end[0]
        return f"{run.wall_time_s:,.0f} s; load {start:.1f} → {end:.1f}"
    wall = result.get("wall_time_s")
    return f"{wall:,.0f} s" if isinstance(wall, int | float) else "-"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_block(
    results: Mapping[str, Mapping[str, Any]],
    runs: Mapping[str, StudyRun],
    figures: Mapping[str, Path],
    *,
    readme: Path,
    out: Path,
    keep_missing: bool = False,
) -> str:
    """The markdown between the markers, from ``results`` (study name -> its JSON).

    With ``keep_missing``, a study with no JSON in ``out`` (a fresh clone: results are
    not committed) keeps its row and figure from ``readme``'s current block, so
    ``--only NAME`` on a new machine rewrites that study's row and leaves the others'
    measured rows alone.
    """
    kept_rows, kept_figures = _current_block(readme) if keep_missing else ({}, {})
    cpus = {r.get("machine", {}).get("cpus") for r in results.values()} - {None}
    if not cpus and keep_missing:  # only kept rows: they were measured here too
        cpus = {os.cpu_count()}
    machine = f"this {cpus.pop()}-core machine" if len(cpus) == 1 else "this machine"
    lines = [
        "Each prints a table and writes JSON next to it. "
        "`make experiments` (`python -m experiments.reproduce --out results/experiments`) "
        "reruns every study, redraws the figures below and regenerates this block from the "
        "JSON; `--only NAME` reruns one study, `--from-json` redraws from the JSON on disk. "
        f"Measured on {machine}, shared with other work: the last column is each run's wall "
        "time and the 1-minute load average at its start and end. Generated: edit "
        "`experiments/readme_rows.py`, not this text.",
        "",
        "| experiment | result | command | wall time, load |",
        "|---|---|---|---|",
    ]
    for study in STUDIES:
        result, last = results.get(study.name), runs.get(study.name)
        failed = f"latest run failed ({last.error})" if last and last.status == "failed" else ""
        if result is None:
            if study.name in kept_rows:  # measured before, on another machine
                lines.append(_annotated(kept_rows[study.name], failed))
            elif failed and last is not None:
                lines.append(f"| `{study.name}` | {_cell(failed)} | `{last.command_text()}` | - |")
            elif not study.optional:
                json_path = out / study.json_name
                lines.append(f"| `{study.name}` | not run: no `{json_path}` | - | - |")
            continue
        run = last if last is not None and last.wrote(out / study.json_name) else None
        title, row = ROWS[study.name](result)
        if failed:
            row += f". The JSON shown is older: the {failed}"
        lines.append(
            f"| `{study.name}` ({_cell(title)}) | {_cell(row)} "
            f"| {_command(result, run)} | {_cost(result, run)} |"
        )
    lines.append("")
    base = readme.resolve().parent
    for figure in FIGURES:
        path = figures.get(figure.name)
        if path is not None:
            link = Path(os.path.relpath(path.resolve(), base)).as_posix()
            lines.append(f"![{figure.title}]({link})")
            lines.append("")
        elif figure.title in kept_figures:
            lines.append(kept_figures[figure.title])
            lines.append("")
    return "\n".join(lines)


def _annotated(row: str, failed: str) -> str:
    """A kept row, with a failed rerun noted at the end of its result cell."""
    if not failed:
        return row
    cells = row.split(" | ")  # escaped pipes inside a cell are "\\|", never " | "
    cells[1] += f". The {_cell(failed).replace('latest run', 'latest rerun')}; this row is older"
    return " | ".join(cells)


def _current_block(readme: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Rows (study name -> line) and figure lines (title -> line) of ``readme``'s block."""
    if not readme.is_file():
        return {}, {}
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        return {}, {}
    rows: dict[str, str] = {}
    figures: dict[str, str] = {}
    for line in text[start + len(BEGIN) : end].splitlines():
        if line.startswith("| `") and "` " in line:
            name = line[3 : line.index("`", 3)]
            if "not run: no `" not in line:
                rows[name] = line
        elif line.startswith("![") and "](" in line:
            figures[line[2 : line.index("](")]] = line
    return rows, figures
