"""Small inline-SVG charts for the HTML report (no plotting library, no scripts, no network).

Every chart is a ``<svg>`` string of fixed size with axes, ticks, a title and a legend; each
data point or bar is one element with ``class="pt"`` or ``class="bar"`` and a ``<title>``
tooltip, so the report stays readable as text and testable by parsing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

W, H = 560, 280
LEFT, RIGHT, TOP, BOTTOM = 58, 16, 34, 46
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf")


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi]."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 2.5, 5, 10) if m * step >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + i * step, 10) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _num(x: float) -> str:
    return f"{x:.3g}"


class _Axes:
    """Maps data coordinates onto the plotting area."""

    def __init__(self, xlim: tuple[float, float], ylim: tuple[float, float]):
        self.x0, self.x1 = xlim if xlim[1] > xlim[0] else (xlim[0] - 1, xlim[0] + 1)
        self.y0, self.y1 = ylim if ylim[1] > ylim[0] else (ylim[0] - 1, ylim[0] + 1)

    def x(self, v: float) -> float:
        return LEFT + (v - self.x0) / (self.x1 - self.x0) * (W - LEFT - RIGHT)

    def y(self, v: float) -> float:
        return H - BOTTOM - (v - self.y0) / (self.y1 - self.y0) * (H - TOP - BOTTOM)


def _legend(names: Sequence[str], colors: dict[str, str] | None = None
            ) -> tuple[list[str], float]:
    """Legend entries in rows under the x label (never over the data); returns the
    elements and the height they add."""
    parts, x, y = [], float(LEFT), H + 4.0
    for i, name in enumerate(names):
        width = 14 + 6.2 * len(name) + 18
        if x + width > W - RIGHT and x > LEFT:
            x, y = float(LEFT), y + 16
        color = (colors or {}).get(name, COLORS[i % len(COLORS)])
        parts.append(f'<rect x="{x:.0f}" y="{y:.0f}" width="10" height="10" '
                     f'fill="{color}"/>')
        parts.append(f'<text x="{x + 14:.0f}" y="{y + 9:.0f}">{escape(name)}</text>')
        x += width
    return parts, (y - H + 16 if names else 0.0)


def _frame(title: str, xlabel: str, ylabel: str, ax: _Axes, xticks: Sequence[tuple[float, str]],
           body: list[str], legend: Sequence[str] = (),
           colors: dict[str, str] | None = None) -> str:
    keys, extra = _legend(legend, colors)
    height = H + extra
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height:.0f}" '
             f'viewBox="0 0 {W} {height:.0f}" role="img" aria-label="{escape(title)}">',
             f'<text x="{W / 2}" y="18" text-anchor="middle" class="title">{escape(title)}</text>',
             f'<line x1="{LEFT}" y1="{H - BOTTOM}" x2="{W - RIGHT}" y2="{H - BOTTOM}" '
             'stroke="#333"/>',
             f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{H - BOTTOM}" stroke="#333"/>']
    for v in _ticks(ax.y0, ax.y1):
        y = ax.y(v)
        parts.append(f'<line x1="{LEFT - 4}" y1="{y:.1f}" x2="{W - RIGHT}" y2="{y:.1f}" '
                     'stroke="#ddd"/>')
        parts.append(f'<text x="{LEFT - 7}" y="{y + 4:.1f}" text-anchor="end">{_num(v)}</text>')
    for v, label in xticks:
        x = ax.x(v)
        parts.append(f'<line x1="{x:.1f}" y1="{H - BOTTOM}" x2="{x:.1f}" y2="{H - BOTTOM + 4}" '
                     'stroke="#333"/>')
        for row, text in enumerate(label.split("\n")[:2]):  # a second line: a date
            parts.append(f'<text x="{x:.1f}" y="{H - BOTTOM + 16 + 11 * row}" '
                         f'text-anchor="middle">{escape(text)}</text>')
    parts.append(f'<text x="{(LEFT + W - RIGHT) / 2}" y="{H - 8}" text-anchor="middle">'
                 f'{escape(xlabel)}</text>')
    parts.append(f'<text transform="translate(14 {(TOP + H - BOTTOM) / 2}) rotate(-90)" '
                 f'text-anchor="middle">{escape(ylabel)}</text>')
    parts += body + keys
    parts.append("</svg>")
    return "".join(parts)


def bars(title: str, labels: Sequence[str], series: dict[str, Sequence[float | None]],
         ylabel: str, ylim: tuple[float, float] | None = None, xlabel: str = "") -> str:
    """Grouped bar chart: one group per label, one bar per series (None = no bar)."""
    values = [v for vs in series.values() for v in vs if v is not None]
    lo = min(0.0, *values) if values else 0.0
    hi = max(values) if values else 1.0
    ax = _Axes((0, max(len(labels), 1)), ylim or (lo, hi * 1.05 if hi > 0 else 1.0))
    width = 0.8 / max(len(series), 1)
    body = []
    for s, (name, vs) in enumerate(series.items()):
        for i, v in enumerate(vs):
            if v is None:
                continue
            x0, x1 = ax.x(i + 0.1 + s * width), ax.x(i + 0.1 + (s + 1) * width)
            y0, y1 = ax.y(max(v, ax.y0)), ax.y(max(ax.y0, min(0.0, v)))
            body.append(f'<rect class="bar" x="{x0:.1f}" y="{min(y0, y1):.1f}" '
                        f'width="{x1 - x0:.1f}" height="{abs(y1 - y0):.1f}" '
                        f'fill="{COLORS[s % len(COLORS)]}"><title>{escape(name)} '
                        f'{escape(labels[i])}: {_num(v)}</title></rect>')
    step = max(1, len(labels) // 26)
    xticks = [(i + 0.5, lab) for i, lab in enumerate(labels) if i % step == 0]
    return _frame(title, xlabel, ylabel, ax, xticks, body,
                  list(series) if len(series) > 1 else ())


def lines(title: str, series: dict[str, Sequence[tuple[float, float, str]]], xlabel: str,
          ylabel: str, log_x: bool = False, label_points: bool = False,
          in_order: frozenset[str] = frozenset(), colors: dict[str, str] | None = None,
          rings: frozenset[str] = frozenset(), dashed: frozenset[str] = frozenset(),
          xticks: Sequence[tuple[float, str]] | None = None) -> str:
    """Points joined by lines, one colour per series (``colors`` names some); each point is
    ``(x, y, label)``, written beside the point when ``label_points``. A series is joined by
    x, or, named in ``in_order``, in the order given (a training run, step by step); one in
    ``rings`` has rings for points, one in ``dashed`` a dashed line. A log axis is ticked
    at the data; ``xticks`` gives the ticks (``"label"`` or ``"line\nline"``)."""
    fx = (lambda v: math.log10(v)) if log_x else (lambda v: v)
    # a point may carry a fourth element, its standard error, drawn as an error bar
    series = {k: [(p[0], p[1], p[2], p[3] if len(p) > 3 else None) for p in v]
              for k, v in series.items()}
    pts = [(fx(x), y + sign * (e or 0.0)) for s in series.values() for x, y, _, e in s
           if y is not None and (x > 0 or not log_x) for sign in (-1, 1)]
    xs, ys = [p[0] for p in pts] or [0.0], [p[1] for p in pts] or [0.0]
    pad_x = (max(xs) - min(xs)) * 0.05 or 0.5
    pad_y = (max(ys) - min(ys)) * 0.1 or 0.05
    ax = _Axes((min(xs) - pad_x, max(xs) + pad_x), (min(ys) - pad_y, max(ys) + pad_y))
    body = []
    colors = {name: (colors or {}).get(name, COLORS[s % len(COLORS)])
              for s, name in enumerate(series)}
    for name, points in series.items():
        color, ring = colors[name], name in rings
        kept = [(fx(x), y, lab, err) for x, y, lab, err in points
                if y is not None and (x > 0 or not log_x)]
        if name not in in_order:
            kept.sort()
        if len(kept) > 1:
            path = " ".join(f"{ax.x(x):.1f},{ax.y(y):.1f}" for x, y, _, _ in kept)
            dash = ' stroke-dasharray="4 3"' if name in dashed else ""
            body.append(f'<polyline points="{path}" fill="none" stroke="{color}" '
                        f'stroke-width="1.5"{dash}/>')
        for x, y, _lab, err in kept:
            if err:
                top, bottom, cx = ax.y(y + err), ax.y(y - err), ax.x(x)
                body.append(f'<path class="err" d="M{cx:.1f},{top:.1f}V{bottom:.1f}'
                            f"M{cx - 3:.1f},{top:.1f}h6M{cx - 3:.1f},{bottom:.1f}h6\" "
                            f'stroke="{color}" fill="none"/>')
        for x, y, lab, _err in kept:
            paint = (f'r="5" fill="white" stroke="{color}" stroke-width="2"' if ring
                     else f'r="3.5" fill="{color}"')
            body.append(f'<circle class="pt" cx="{ax.x(x):.1f}" cy="{ax.y(y):.1f}" {paint}>'
                        f'<title>{escape(name)} {escape(lab)}: {_num(y)}</title></circle>')
            if label_points:
                # right of the point, or left of it in the right half, so it is never clipped
                right = ax.x(x) > (LEFT + W - RIGHT) / 2
                anchor = ' text-anchor="end"' if right else ""
                body.append(f'<text x="{ax.x(x) + (-6 if right else 6):.1f}" '
                            f'y="{ax.y(y) - 6:.1f}"{anchor}>{escape(lab)}</text>')
    if xticks is not None:
        xticks = [(fx(x), label) for x, label in xticks]
    elif log_x:
        xticks = [(t, _num(10 ** t)) for t in sorted(set(xs))][:12]
    else:
        xticks = [(t, _num(t)) for t in _ticks(ax.x0, ax.x1)]
    return _frame(title, xlabel, ylabel, ax, xticks, body, list(series) if len(series) > 1
                  else (), colors)


def histogram(title: str, values: Sequence[float], edges: Sequence[float], xlabel: str,
              extra: tuple[str, int] | None = None) -> str:
    """Counts of ``values`` in the bins ``edges``; ``extra`` adds one labelled bar in front
    (e.g. dead latents, which have no place on a log axis)."""
    counts = [0] * (len(edges) - 1)
    for v in values:
        for i in range(len(counts)):
            if edges[i] <= v < edges[i + 1] or (i == len(counts) - 1 and v == edges[-1]):
                counts[i] += 1
                break
    labels = [_num(e) for e in edges[:-1]]
    data: list[float | None] = [float(c) for c in counts]
    if extra is not None:
        labels.insert(0, extra[0])
        data.insert(0, float(extra[1]))
    return bars(title, labels, {"latents": data}, "latents", xlabel=xlabel)
