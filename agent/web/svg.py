"""Rate charts as server-rendered SVG: nothing is fetched, nothing runs in the browser."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape


@dataclass(frozen=True, slots=True)
class RatePoint:
    start: datetime  # the 5-minute bucket's start
    out_bps: float
    in_bps: float


def _runs(points: Sequence[RatePoint], step_s: float) -> list[list[RatePoint]]:
    """Contiguous runs: a missing bucket is a gap in the line, never a line drawn across it."""
    runs: list[list[RatePoint]] = []
    for p in points:
        if runs and (p.start - runs[-1][-1].start).total_seconds() <= step_s * 1.5:
            runs[-1].append(p)
        else:
            runs.append([p])
    return runs


def rate_chart(points: Sequence[RatePoint], cap_at: Callable[[datetime], int], start: datetime, end: datetime, *,
               width: int = 720, height: int = 200, labels: Callable[[datetime], str] | None = None,
               title: str = "", step_s: float = 300.0) -> str:
    """Out (solid), in (dotted) and the cap (dashed, following dated cap changes) over [start, end)."""
    pad_l, pad_b = (64, 20) if labels else (0, 0)
    w, h = width - pad_l, height - pad_b
    span = max((end - start).total_seconds(), 1.0)
    caps = [cap_at(start), cap_at(end)] + [cap_at(p.start) for p in points]
    top = max([1.0, *caps, *(max(p.out_bps, p.in_bps) for p in points)]) * 1.1

    def x(at: datetime) -> float:
        return pad_l + w * min(max((at - start).total_seconds() / span, 0.0), 1.0)

    def y(bps: float) -> float:
        return h - h * bps / top

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img"><title>{escape(title)}</title>',
             f'<rect x="{pad_l}" y="0" width="{w}" height="{h}" fill="#fafafa" stroke="#ccc"/>']
    # The cap as a step line: a dated cap change shows where it took effect.
    cap_pts = [(start, cap_at(start))] + [(p.start, cap_at(p.start)) for p in points] + [(end, cap_at(end))]
    d = []
    for i, (at, c) in enumerate(cap_pts):
        if i and c != cap_pts[i - 1][1]:
            d.append(f"{x(at):.1f},{y(cap_pts[i - 1][1]):.1f}")
        d.append(f"{x(at):.1f},{y(c):.1f}")
    parts.append(f'<polyline class="cap" points="{" ".join(d)}" fill="none" stroke="#c00" '
                 'stroke-dasharray="6 3" stroke-width="1.5"/>')
    for run in _runs(points, step_s):
        for attr, cls, colour, style in (("out_bps", "out", "#06c", 'stroke="#06c" stroke-width="1.5"'),
                                         ("in_bps", "in", "#2a2",
                                          'stroke="#2a2" stroke-width="1" stroke-dasharray="2 2"')):
            pts = " ".join(f"{x(p.start):.1f},{y(getattr(p, attr)):.1f}" for p in run)
            if len(run) == 1:
                parts.append(f'<circle class="{cls}" cx="{x(run[0].start):.1f}" '
                             f'cy="{y(getattr(run[0], attr)):.1f}" r="2" fill="{colour}"/>')
            else:
                parts.append(f'<polyline class="{cls}" points="{pts}" fill="none" {style}/>')
    if labels:
        parts.append(f'<text x="{pad_l - 4}" y="10" text-anchor="end" font-size="10">{top / 1e6:.1f} Mb/s</text>')
        parts.append(f'<text x="{pad_l - 4}" y="{h}" text-anchor="end" font-size="10">0</text>')
        parts.append(f'<text x="{pad_l}" y="{height - 4}" font-size="10">{escape(labels(start))}</text>')
        parts.append(f'<text x="{width}" y="{height - 4}" text-anchor="end" font-size="10">'
                     f'{escape(labels(end))}</text>')
    parts.append("</svg>")
    return "".join(parts)
