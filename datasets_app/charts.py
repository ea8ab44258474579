"""Small self-contained SVG bar charts for version statistics (pure; all text escaped)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from xml.sax.saxutils import escape

WIDTH, HEIGHT, PAD = 420, 180, 28


def _svg(body: list[str], title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT + 40}" '
        f'width="{WIDTH}" height="{HEIGHT + 40}" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>"
        f'<text x="{PAD}" y="16" font-size="13" font-weight="600">{escape(title)}</text>'
        + "".join(body)
        + "</svg>"
    )


def bars_svg(
    labels: Sequence[str], counts: Sequence[float], title: str, colour: str = "#3056d3"
) -> str:
    """Vertical bars on axes, scaled to the largest count, each labelled with its count.

    A zero is drawn as a hairline on the axis with its "0": an empty chart would read as a
    chart that failed to draw."""
    if not counts:
        return _svg([f'<text x="{PAD}" y="60" font-size="12">no data</text>'], title)
    top = max(counts) or 1
    slot = (WIDTH - 2 * PAD) / len(counts)
    # Room above the tallest bar for its count, below the title.
    ceiling, base = 36, 24 + (HEIGHT - 40)
    body = [
        f'<line class="axis" x1="{PAD}" y1="{base}" x2="{WIDTH - PAD}" y2="{base}" stroke="#999"/>',
        f'<line class="axis" x1="{PAD}" y1="{ceiling}" x2="{PAD}" y2="{base}" stroke="#999"/>',
        f'<text x="{PAD - 3}" y="{ceiling + 6}" font-size="9" text-anchor="end">{top:.3g}</text>',
        f'<text x="{PAD - 3}" y="{base}" font-size="9" text-anchor="end">0</text>',
    ]
    for i, (label, count) in enumerate(zip(labels, counts, strict=True)):
        height = max((base - ceiling) * count / top, 1.0)
        x = PAD + i * slot
        y = base - height
        body.append(
            f'<rect class="bar" x="{x + 2:.1f}" y="{y:.1f}" width="{max(slot - 4, 1):.1f}" '
            f'height="{height:.1f}" fill="{colour}">'
            f"<title>{escape(label)}: {count:g}</title></rect>"
        )
        if len(counts) <= 16:
            body.append(
                f'<text class="value" x="{x + slot / 2:.1f}" y="{y - 3:.1f}" font-size="9" '
                f'text-anchor="middle">{count:.3g}</text>'
            )
            body.append(
                f'<text x="{x + slot / 2:.1f}" y="{HEIGHT + 4}" font-size="9" '
                f'text-anchor="middle">{escape(label)}</text>'
            )
    return _svg(body, title)


def histogram_svg(histogram: Mapping[str, list], title: str, colour: str = "#3056d3") -> str:
    edges, counts = histogram.get("edges", []), histogram.get("counts", [])
    # Whole numbers once the range is wide: decimals crowd a 35-pixel bar label.
    wide = bool(edges) and edges[-1] - edges[0] > 10
    labels = [f"{round(edges[i])}" if wide else f"{edges[i]:.3g}" for i in range(len(counts))]
    return bars_svg(labels, counts, title, colour)


PALETTE = ("#3056d3", "#d9480f", "#2b8a3e", "#862e9c", "#e67700", "#0b7285")


def lines_svg(
    series: Mapping[str, Sequence[tuple[float, float]]], title: str, x_label: str = "step"
) -> str:
    """One polyline per named series of (x, y) points on shared axes, with a legend and the
    y range written at the axis (no scale library: a few hundred points at most)."""
    points = [p for values in series.values() for p in values]
    if not points:
        return _svg([f'<text x="{PAD}" y="60" font-size="12">no data yet</text>'], title)
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
        f"{escape(x_label)} {x1:g}</text>",
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
            f'<polyline class="series" data-series="{escape(name)}" points="{path}" '
            f'fill="none" stroke="{colour}" stroke-width="1.5"/>'
        )
        if len(values) == 1:
            x, y = values[0]
            body.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{colour}"/>')
        body.append(
            f'<text x="{left + 8 + 110 * i}" y="{HEIGHT + 30}" font-size="10" '
            f'fill="{colour}">— {escape(name)}</text>'
        )
    return _svg(body, title)
