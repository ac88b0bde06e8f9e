"""Server-side SVG charts: a line chart for metric curves, bar charts for budgets and drivers.

Pure functions from numbers to geometry; the templates draw the SVG elements
(autoescaped) and ``static/console.js`` redraws the line chart's polyline from
the same :func:`line_points` numbers the API returns.  No inline styles: the
Content-Security-Policy forbids them, so colours are SVG presentation
attributes and CSS classes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Bar", "BarChart", "LineChart", "bar_chart", "line_chart", "line_points"]

WIDTH, HEIGHT, PAD = 640, 240, 40


@dataclass(frozen=True)
class LineChart:
    points: str  # the polyline's "x,y x,y ..." (empty: no round yet)
    y_min: float
    y_max: float
    x_max: int
    width: int = WIDTH
    height: int = HEIGHT
    pad: int = PAD


def _range(values: Sequence[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if math.isclose(lo, hi):
        span = abs(lo) * 0.05 or 1.0
        return lo - span, hi + span
    return lo, hi


def line_points(series: Sequence[tuple[int, float]], *, total: int | None = None) -> LineChart:
    """Scale ``(round, value)`` pairs into the chart's box."""
    if not series:
        return LineChart("", 0.0, 1.0, total or 1)
    x_max = max(total or 0, max(x for x, _ in series), 1)
    lo, hi = _range([y for _, y in series])
    inner_w, inner_h = WIDTH - 2 * PAD, HEIGHT - 2 * PAD

    def xy(x: int, y: float) -> str:
        px = PAD + inner_w * (x / x_max)
        py = HEIGHT - PAD - inner_h * ((y - lo) / (hi - lo))
        return f"{px:.1f},{py:.1f}"

    return LineChart(" ".join(xy(x, y) for x, y in series), lo, hi, x_max)


line_chart = line_points


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    limit: float | None  # a cap drawn as a marker (budgets), None for plain bars
    y: float
    width: float
    limit_x: float | None
    over: bool
    negative: bool


@dataclass(frozen=True)
class BarChart:
    bars: tuple[Bar, ...]
    width: int
    height: int
    label_w: int
    scale_max: float
    row_h: int = 22


def bar_chart(
    items: Sequence[tuple[str, float, float | None]], *, width: int = WIDTH, label_w: int = 220
) -> BarChart:
    """Horizontal bars for ``(label, value, limit)``; bar length is ``|value|``."""
    row_h = 22
    top = max([abs(v) for _, v, _ in items] + [lim or 0.0 for _, _, lim in items] + [1e-12])
    inner = width - label_w - 60
    bars = []
    for i, (label, value, limit) in enumerate(items):
        bars.append(
            Bar(
                label=label,
                value=value,
                limit=limit,
                y=8 + i * row_h,
                width=max(inner * abs(value) / top, 1.0),
                limit_x=label_w + inner * limit / top if limit is not None else None,
                over=limit is not None and value > limit,
                negative=value < 0,
            )
        )
    return BarChart(tuple(bars), width, 16 + row_h * max(len(items), 1), label_w, top)
