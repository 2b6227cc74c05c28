"""Components done over time per stage as an inline SVG, drawn on the server (pure)."""

from __future__ import annotations

from datetime import datetime
from html import escape

COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")


def done_svg(series: dict[str, list[tuple[str, int]]], *, width: int = 720, height: int = 260) -> str:
    """A step line per stage: cumulative components done (y) against time (x)."""
    pad_l, pad_r, pad_t, pad_b = 60, 110, 16, 36
    pts = {st: [(datetime.fromisoformat(t).timestamp(), n) for t, n in s] for st, s in series.items() if s}
    if not pts:
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="60" role="img" '
                'aria-label="no components done yet"><text x="10" y="30">no components done yet</text></svg>')  # fmt: skip
    t0 = min(p[0][0] for p in pts.values())
    t1 = max(p[-1][0] for p in pts.values())
    t1 = t1 if t1 > t0 else t0 + 1
    ymax = max(max(n for _, n in p) for p in pts.values()) or 1
    w, h = width - pad_l - pad_r, height - pad_t - pad_b

    def x(t: float) -> float:
        return pad_l + (t - t0) / (t1 - t0) * w

    def y(n: float) -> float:
        return pad_t + h - n / ymax * h

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             'aria-label="components done over time per stage" font-family="sans-serif" font-size="11">',
             f'<line x1="{pad_l}" y1="{pad_t + h}" x2="{pad_l + w}" y2="{pad_t + h}" stroke="#444"/>',
             f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{pad_t + h}" stroke="#444"/>',
             f'<text x="{pad_l - 6}" y="{pad_t + 4}" text-anchor="end">{ymax}</text>',
             f'<text x="{pad_l - 6}" y="{pad_t + h}" text-anchor="end">0</text>',
             f'<text x="{pad_l}" y="{height - 8}">{escape(datetime.fromtimestamp(t0).strftime("%m-%d %H:%M"))}</text>',
             f'<text x="{pad_l + w}" y="{height - 8}" text-anchor="end">'
             f'{escape(datetime.fromtimestamp(t1).strftime("%m-%d %H:%M"))}</text>']  # fmt: skip
    for i, (stage, p) in enumerate(sorted(pts.items())):
        colour = COLOURS[i % len(COLOURS)]
        d = [f"M{x(p[0][0]):.1f},{y(0):.1f}"]
        prev = 0
        for t, n in p:
            d.append(f"L{x(t):.1f},{y(prev):.1f} L{x(t):.1f},{y(n):.1f}")
            prev = n
        d.append(f"L{pad_l + w:.1f},{y(prev):.1f}")
        parts.append(f'<path d="{" ".join(d)}" fill="none" stroke="{colour}" stroke-width="2"/>')
        ly = pad_t + 14 * (i + 1)
        parts.append(f'<text x="{pad_l + w + 8}" y="{ly}" fill="{colour}">{escape(stage)}: {prev}</text>')
    parts.append("</svg>")
    return "".join(parts)
