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
    """Vertical bars scaled to the largest count, each labelled with its count."""
    if not counts:
        return _svg([f'<text x="{PAD}" y="60" font-size="12">no data</text>'], title)
    top = max(counts) or 1
    slot = (WIDTH - 2 * PAD) / len(counts)
    body = []
    for i, (label, count) in enumerate(zip(labels, counts, strict=True)):
        height = (HEIGHT - 40) * count / top
        x = PAD + i * slot
        y = 24 + (HEIGHT - 40) - height
        body.append(
            f'<rect class="bar" x="{x + 2:.1f}" y="{y:.1f}" width="{max(slot - 4, 1):.1f}" '
            f'height="{height:.1f}" fill="{colour}">'
            f"<title>{escape(label)}: {count:g}</title></rect>"
        )
        if len(counts) <= 16:
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
