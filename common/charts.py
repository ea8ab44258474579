"""Every SVG chart the pages show, self-contained (no scripts, no external assets).

Pure: no Django import. One frame (`_frame`) gives every chart the same root element, font and
title, and one escaping rule (`_text`) is applied to every string a chart writes, in text and
in attribute values alike; that is what makes embedding a chart unescaped in a page safe.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from html import escape

WIDTH, HEIGHT, PAD = 420, 180, 28
PALETTE = ("#3056d3", "#d9480f", "#2b8a3e", "#862e9c", "#e67700", "#0b7285")

_BLUE, _WHITE, _RED = (33, 102, 172), (255, 255, 255), (178, 24, 43)
_NONE_FILL = "#e4e7ec"
# Characters XML 1.0 forbids even when escaped: dropped, so the SVG always parses.
_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _text(value: object) -> str:
    """Escape for XML text and attribute values (quotes included): every string put into a
    chart goes through here."""
    return escape(_INVALID_XML.sub("", str(value)), quote=True)


def _frame(width: float, height: float, title: str, body: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'aria-label="{_text(title)}" font-family="system-ui, sans-serif" font-size="12">'
        f"<title>{_text(title)}</title>"
        f'<text x="4" y="16" font-size="14" font-weight="600">{_text(title)}</text>'
        + "".join(body)
        + "</svg>"
    )


def _empty(title: str, message: str) -> str:
    return _frame(WIDTH, HEIGHT + 40, title, [f'<text x="{PAD}" y="60">{_text(message)}</text>'])


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _format(value: float | None) -> str:
    value = _finite(value)
    if value is None:
        return "—"
    text = f"{value:.2f}"
    return "0.00" if text == "-0.00" else text


def diverging_colour(value: float | None) -> str:
    """-1 blue, 0 white, +1 red (linear in between); grey where undefined."""
    value = _finite(value)
    if value is None:
        return _NONE_FILL
    t = max(-1.0, min(1.0, value))
    end = _RED if t > 0 else _BLUE
    rgb = (round(w + (e - w) * abs(t)) for w, e in zip(_WHITE, end, strict=True))
    return "#{:02x}{:02x}{:02x}".format(*rgb)


# --- counts: vertical bars, histograms -------------------------------------------------------


def bars_svg(
    labels: Sequence[str],
    counts: Sequence[float | None],
    title: str,
    colour: str = PALETTE[0],
) -> str:
    """Vertical bars on axes, scaled to the largest count, each labelled with its count.

    A zero is drawn as a hairline on the axis with its "0": an empty chart would read as a
    chart that failed to draw. None is a value that does not exist (a run that never
    finished): no bar at all, and "n/a" where its count would be, so it never reads as 0."""
    if not counts:
        return _empty(title, "no data")
    largest = max((c for c in counts if c is not None), default=0.0)
    top = largest or 1
    slot = (WIDTH - 2 * PAD) / len(counts)
    # Room above the tallest bar for its count, below the title.
    ceiling, base = 36, 24 + (HEIGHT - 40)
    body = [
        f'<line class="axis" x1="{PAD}" y1="{base}" x2="{WIDTH - PAD}" y2="{base}" stroke="#999"/>',
        f'<line class="axis" x1="{PAD}" y1="{ceiling}" x2="{PAD}" y2="{base}" stroke="#999"/>',
        f'<text x="{PAD - 3}" y="{base}" font-size="9" text-anchor="end">0</text>',
    ]
    if largest > 0:  # with nothing above zero, a second "0" at the top would say nothing
        body.append(
            f'<text x="{PAD - 3}" y="{ceiling + 6}" font-size="9" text-anchor="end">'
            f"{largest:.3g}</text>"
        )
    for i, (label, count) in enumerate(zip(labels, counts, strict=True)):
        x = PAD + i * slot
        y: float = base
        if count is not None:
            height = max((base - ceiling) * count / top, 1.0)
            y = base - height
            body.append(
                f'<rect class="bar" x="{x + 2:.1f}" y="{y:.1f}" width="{max(slot - 4, 1):.1f}" '
                f'height="{height:.1f}" fill="{_text(colour)}">'
                f"<title>{_text(label)}: {count:g}</title></rect>"
            )
        if len(counts) <= 16:
            shown = "n/a" if count is None else f"{count:.3g}"
            body.append(
                f'<text class="value" x="{x + slot / 2:.1f}" y="{y - 3:.1f}" font-size="9" '
                f'text-anchor="middle">{shown}</text>'
            )
            body.append(
                f'<text x="{x + slot / 2:.1f}" y="{HEIGHT + 4}" font-size="9" '
                f'text-anchor="middle">{_text(label)}</text>'
            )
    return _frame(WIDTH, HEIGHT + 40, title, body)


def histogram_svg(histogram: Mapping[str, list], title: str, colour: str = PALETTE[0]) -> str:
    """A histogram given as {"edges": [...], "counts": [...]}, one bar per bin."""
    edges, counts = histogram.get("edges", []), histogram.get("counts", [])
    # Whole numbers once the range is wide: decimals crowd a 35-pixel bar label.
    wide = bool(edges) and edges[-1] - edges[0] > 10
    labels = [f"{round(edges[i])}" if wide else f"{edges[i]:.3g}" for i in range(len(counts))]
    return bars_svg(labels, counts, title, colour)


# --- statistics in [-1, 1]: horizontal bars, heatmaps ----------------------------------------


def unit_bars_svg(labels: Sequence[str], values: Sequence[float | None], title: str) -> str:
    """Horizontal bars on a fixed scale: 0..1 when every value is non-negative, else -1..1,
    so that charts of the same statistic compare at a glance. None is shown as "—"."""
    defined = [v for v in map(_finite, values) if v is not None]
    low = -1.0 if any(v < 0 for v in defined) else 0.0
    left, plot, row = 150, 300, 24
    top = 40
    width, height = left + plot + 60, top + row * len(labels) + 24

    def x_of(v: float) -> float:
        return left + (max(low, min(1.0, v)) - low) / (1.0 - low) * plot

    body = []
    for i, (label, raw) in enumerate(zip(labels, values, strict=True)):
        value = _finite(raw)
        y = top + i * row
        body.append(
            f'<text class="bar-label" x="{left - 6}" y="{y + row / 2:.0f}" text-anchor="end" '
            f'dominant-baseline="middle">{_text(label)}</text>'
        )
        if value is not None:
            x0, x1 = sorted((x_of(0.0), x_of(value)))
            body.append(
                f'<rect class="bar" x="{x0:.1f}" y="{y + 4}" width="{x1 - x0:.1f}" '
                f'height="{row - 8}" fill="{diverging_colour(value)}" stroke="#667085" '
                f'stroke-width="0.5"/>'
            )
        body.append(
            f'<text class="bar-value" x="{left + plot + 6}" y="{y + row / 2:.0f}" '
            f'dominant-baseline="middle">{_text(_format(value))}</text>'
        )
    axis_bottom = top + row * len(labels)
    zero = x_of(0.0)
    body.append(
        f'<line x1="{zero:.1f}" y1="{top}" x2="{zero:.1f}" y2="{axis_bottom}" stroke="#1d2330"/>'
    )
    for tick in (low, 0.0, 1.0) if low < 0 else (0.0, 0.5, 1.0):
        body.append(
            f'<text x="{x_of(tick):.1f}" y="{axis_bottom + 16}" text-anchor="middle" '
            f'fill="#667085">{tick:g}</text>'
        )
    return _frame(width, height, title, body)


def heatmap_svg(labels: Sequence[str], matrix: Sequence[Sequence[float | None]], title: str) -> str:
    """A square matrix of values in [-1, 1]: coloured cells with their values, row and column
    labels, a colour legend."""
    size, cell = len(labels), 64
    left, top = 140, 130
    legend_x = left + size * cell + 24
    width, height = legend_x + 70, top + max(size * cell, 200) + 12
    body = [
        '<defs><linearGradient id="diverging" x1="0" y1="0" x2="0" y2="1">'
        f'<stop offset="0" stop-color="{diverging_colour(1)}"/>'
        f'<stop offset="0.5" stop-color="{diverging_colour(0)}"/>'
        f'<stop offset="1" stop-color="{diverging_colour(-1)}"/>'
        "</linearGradient></defs>"
    ]
    for i, label in enumerate(labels):
        y = top + i * cell + cell / 2
        x = left + i * cell + cell / 2
        body.append(
            f'<text class="row-label" x="{left - 6}" y="{y:.0f}" text-anchor="end" '
            f'dominant-baseline="middle">{_text(label)}</text>'
        )
        # Column labels slant upwards so that long names do not overlap.
        body.append(
            f'<text class="col-label" x="{x:.0f}" y="{top - 6}" '
            f'transform="rotate(-45 {x:.0f} {top - 6})">{_text(label)}</text>'
        )
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            x, y = left + j * cell, top + i * cell
            shown = _format(value)
            finite = _finite(value)
            ink = "#fff" if finite is not None and abs(finite) > 0.6 else "#1d2330"
            body.append(
                f"<g><title>{_text(labels[i])} vs {_text(labels[j])}: {_text(shown)}</title>"
                f'<rect class="cell" x="{x}" y="{y}" width="{cell}" height="{cell}" '
                f'fill="{diverging_colour(value)}" stroke="#fff" data-value="{_text(shown)}"/>'
                f'<text x="{x + cell / 2:.0f}" y="{y + cell / 2:.0f}" text-anchor="middle" '
                f'dominant-baseline="middle" fill="{ink}">{_text(shown)}</text></g>'
            )
    body.append(
        f'<rect class="legend" x="{legend_x}" y="{top}" width="16" height="200" '
        'fill="url(#diverging)" stroke="#d9dee7"/>'
    )
    for text, dy in (("+1", 0), ("0", 100), ("-1", 200)):
        body.append(
            f'<text x="{legend_x + 22}" y="{top + dy}" dominant-baseline="middle">{text}</text>'
        )
    return _frame(width, height, title, body)


# --- curves ---------------------------------------------------------------------------------


def lines_svg(
    series: Mapping[str, Sequence[tuple[float, float]]], title: str, x_label: str = "step"
) -> str:
    """One polyline per named series of (x, y) points on shared axes, with a legend and the
    y range written at the axis (no scale library: a few hundred points at most)."""
    points = [p for values in series.values() for p in values]
    if not points:
        return _empty(title, "no data yet")
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    left, top, right, bottom = PAD + 24, 28, WIDTH - 8, HEIGHT - 8

    def sx(x: float) -> float:
        return left + (right - left) * (x - x0) / (x1 - x0)

    def sy(y: float) -> float:
        return bottom - (bottom - top) * (y - y0) / (y1 - y0)

    body = [
        f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#999"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="#999"/>',
        f'<text x="{left - 4}" y="{top + 4}" font-size="9" text-anchor="end">{y1:.3g}</text>',
        f'<text x="{left - 4}" y="{bottom}" font-size="9" text-anchor="end">{y0:.3g}</text>',
        f'<text x="{left}" y="{bottom + 14}" font-size="9">{x0:g}</text>',
        f'<text x="{right}" y="{bottom + 14}" font-size="9" text-anchor="end">'
        f"{_text(x_label)} {x1:g}</text>",
    ]
    if y0 < 0 < y1:
        body.append(
            f'<line x1="{left}" y1="{sy(0):.1f}" x2="{right}" y2="{sy(0):.1f}" '
            'stroke="#ccc" stroke-dasharray="3,3"/>'
        )
    for i, (name, values) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in values)
        body.append(
            f'<polyline class="series" data-series="{_text(name)}" points="{path}" '
            f'fill="none" stroke="{colour}" stroke-width="1.5"/>'
        )
        if len(values) == 1:
            x, y = values[0]
            body.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{colour}"/>')
        body.append(
            f'<text x="{left + 8 + 110 * i}" y="{HEIGHT + 30}" font-size="10" '
            f'fill="{colour}">— {_text(name)}</text>'
        )
    return _frame(WIDTH, HEIGHT + 40, title, body)


# --- estimates with intervals: grouped bars with whiskers -----------------------------------


def grouped_bars_svg(
    groups: Sequence[str],
    series: Sequence[str],
    values: Sequence[Sequence[float | None]],
    intervals: Sequence[Sequence[Sequence[float] | None]],
    title: str,
) -> str:
    """Bars grouped by `groups` (e.g. question kinds), one bar per series in every group,
    coloured by series with a legend; `values[s][g]` is series s in group g and
    `intervals[s][g]` its (low, high), drawn as a whisker over the bar.

    The axis runs from 0 to the highest bar or whisker. As in bars_svg, a zero is a hairline
    and a None value has no bar but an "n/a" where it would be, so that it never reads as 0;
    a None interval has no whisker."""
    if len(values) != len(series) or len(intervals) != len(series):
        raise ValueError("values and intervals need one row per series")
    if any(len(row) != len(groups) for row in (*values, *intervals)):
        raise ValueError("every row of values and intervals needs one entry per group")
    if not groups or not series:
        return _empty(title, "no data")
    bar, group_gap = 16, 18
    group_width = len(series) * bar + group_gap
    left, ceiling, base = PAD + 10, 36, HEIGHT - 16
    width = max(WIDTH, left + len(groups) * group_width + 8)
    legend_width = 170  # room for "rejection-sampling SFT" at font size 10
    per_legend_row = max(1, int((width - left) // legend_width))
    legend_rows = math.ceil(len(series) / per_legend_row)
    height = base + 36 + 14 * legend_rows
    highs = [
        finite
        for s, row in enumerate(values)
        for g, value in enumerate(row)
        for v in (value, *(intervals[s][g] or ()))
        if (finite := _finite(v)) is not None
    ]
    top = max(highs, default=0.0) or 1.0

    def y_of(v: float) -> float:
        return base - (base - ceiling) * max(v, 0.0) / top

    body = [
        f'<line class="axis" x1="{left}" y1="{base}" x2="{width - 8}" y2="{base}" stroke="#999"/>',
        f'<line class="axis" x1="{left}" y1="{ceiling}" x2="{left}" y2="{base}" stroke="#999"/>',
        f'<text x="{left - 3}" y="{base}" font-size="9" text-anchor="end">0</text>',
        f'<text x="{left - 3}" y="{ceiling + 6}" font-size="9" text-anchor="end">{top:.3g}</text>',
    ]
    for g, group in enumerate(groups):
        x0 = left + group_gap / 2 + g * group_width
        body.append(
            f'<text class="group-label" x="{x0 + len(series) * bar / 2:.1f}" y="{base + 14}" '
            f'font-size="10" text-anchor="middle">{_text(group)}</text>'
        )
        for s, name in enumerate(series):
            x, colour = x0 + s * bar, PALETTE[s % len(PALETTE)]
            value, interval = _finite(values[s][g]), intervals[s][g]
            if value is None:
                body.append(
                    f'<text class="missing" x="{x + bar / 2:.1f}" y="{base - 3}" font-size="8" '
                    f'text-anchor="middle">n/a</text>'
                )
            else:
                y = min(y_of(value), base - 1.0)
                shown = f"{_text(group)} · {_text(name)}: {_format(value)}"
                if interval is not None:
                    shown += f" [{_format(interval[0])}, {_format(interval[1])}]"
                body.append(
                    f'<rect class="bar" x="{x + 1:.1f}" y="{y:.1f}" width="{bar - 2}" '
                    f'height="{base - y:.1f}" fill="{colour}" data-series="{_text(name)}" '
                    f'data-group="{_text(group)}"><title>{shown}</title></rect>'
                )
            low, high = (_finite(v) for v in interval) if interval is not None else (None, None)
            if low is not None and high is not None:
                mid, y_low, y_high = x + bar / 2, y_of(low), y_of(high)
                body.append(
                    f'<line class="whisker" x1="{mid:.1f}" y1="{y_low:.1f}" x2="{mid:.1f}" '
                    f'y2="{y_high:.1f}" stroke="#1d2330" stroke-width="1.2"/>'
                )
                for y_cap in (y_low, y_high):
                    body.append(
                        f'<line class="whisker-cap" x1="{mid - 4:.1f}" y1="{y_cap:.1f}" '
                        f'x2="{mid + 4:.1f}" y2="{y_cap:.1f}" stroke="#1d2330"/>'
                    )
    for s, name in enumerate(series):
        row, column = divmod(s, per_legend_row)
        body.append(
            f'<text class="legend" x="{left + legend_width * column}" y="{base + 32 + 14 * row}" '
            f'font-size="10" fill="{PALETTE[s % len(PALETTE)]}">■ {_text(name)}</text>'
        )
    return _frame(width, height, title, body)


def deltas_svg(
    labels: Sequence[str],
    values: Sequence[float | None],
    intervals: Sequence[Sequence[float] | None],
    title: str,
    unit: float = 100.0,
) -> str:
    """A horizontal bar per label from a zero line (gains right, losses left), each with its
    interval as a whisker; values are multiplied by `unit` (fractions shown as points). A
    None value has no bar and reads "n/a"."""
    if len(values) != len(labels) or len(intervals) != len(labels):
        raise ValueError("values and intervals need one entry per label")
    if not labels:
        return _empty(title, "no data")
    row, left, right = 22, 120, WIDTH - 60  # the values are written right of the bars
    scaled = [None if _finite(v) is None else v * unit for v in values]  # type: ignore[operator]
    ends = [abs(v) for v in scaled if v is not None]
    ends += [abs(b * unit) for ci in intervals if ci for b in ci if _finite(b) is not None]
    reach = max(ends, default=0.0) or 1.0
    zero = (left + right) / 2
    top = 30
    height = top + row * len(labels) + 24

    def x_of(v: float) -> float:
        return zero + (right - zero) * v / reach

    body = [
        f'<line class="axis zero" x1="{zero:.1f}" y1="{top}" x2="{zero:.1f}" '
        f'y2="{height - 20}" stroke="#999"/>',
        f'<text x="{left}" y="{height - 6}" font-size="9">{-reach:+.3g}</text>',
        f'<text x="{zero:.1f}" y="{height - 6}" font-size="9" text-anchor="middle">0</text>',
        f'<text x="{right}" y="{height - 6}" font-size="9" text-anchor="end">{reach:+.3g}</text>',
    ]
    for i, (label, value, interval) in enumerate(zip(labels, scaled, intervals, strict=True)):
        y = top + i * row
        body.append(
            f'<text x="{left - 6}" y="{y + 14}" font-size="11" text-anchor="end">'
            f"{_text(label)}</text>"
        )
        if value is None:
            body.append(f'<text class="missing" x="{zero + 4:.1f}" y="{y + 14}">n/a</text>')
            continue
        x0, x1 = sorted((zero, x_of(value)))
        colour = PALETTE[2] if value >= 0 else PALETTE[1]
        shown = f"{_text(label)}: {value:+.1f}"
        low, high = (_finite(b) for b in interval) if interval else (None, None)
        if low is not None and high is not None:
            shown += f" [{low * unit:+.1f}, {high * unit:+.1f}]"
        body.append(
            f'<rect class="bar" x="{x0:.1f}" y="{y + 4}" width="{max(x1 - x0, 1.0):.1f}" '
            f'height="{row - 8}" fill="{colour}" data-label="{_text(label)}">'
            f"<title>{shown}</title></rect>"
        )
        if low is not None and high is not None:
            xl, xh, mid = x_of(low * unit), x_of(high * unit), y + row / 2
            body.append(
                f'<line class="whisker" x1="{xl:.1f}" y1="{mid:.1f}" x2="{xh:.1f}" '
                f'y2="{mid:.1f}" stroke="#1d2330" stroke-width="1.2"/>'
            )
        body.append(
            f'<text class="value" x="{WIDTH - 6}" y="{y + 14}" font-size="10" '
            f'text-anchor="end">{value:+.1f}</text>'
        )
    return _frame(WIDTH, height, title, body)
