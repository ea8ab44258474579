"""A small, safe Markdown subset for completions: everything is HTML-escaped first, then
paragraphs, line breaks, lists, **bold**, *italic* and `code` are added. Nothing a model
wrote can become a tag or an attribute (a `<script>` or `<img onerror>` shows as text)."""

from __future__ import annotations

import html
import re

_CODE = re.compile(r"`([^`\n]+)`")
_BOLD = re.compile(r"\*\*([^*\n]+)\*\*")
_ITALIC = re.compile(r"(?<![*\w])\*([^*\n]+)\*(?![*\w])")
_BULLET = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+(.*)$")


def _inline(text: str) -> str:
    text = _CODE.sub(r"<code>\1</code>", text)
    text = _BOLD.sub(r"<strong>\1</strong>", text)
    return _ITALIC.sub(r"<em>\1</em>", text)


def render_markdown(source: str) -> str:
    escaped = html.escape(source.replace("\r\n", "\n"), quote=True)
    blocks = []
    for block in re.split(r"\n\s*\n", escaped.strip()):
        lines = block.split("\n")
        bullets = [_BULLET.match(line) for line in lines]
        if all(bullets):
            items = "".join(f"<li>{_inline(m.group(1))}</li>" for m in bullets if m)
            blocks.append(f"<ul>{items}</ul>")
        else:
            blocks.append("<p>" + "<br>".join(_inline(line) for line in lines) + "</p>")
    return "".join(blocks)
