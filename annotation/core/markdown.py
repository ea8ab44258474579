"""Completions as safe HTML: CommonMark (with tables and strikethrough) rendered by
markdown-it-py with raw HTML disabled, then cleaned by nh3 against an explicit allow-list.

Two layers on purpose: with HTML disabled, a `<script>` or `<img onerror>` a model wrote is
already text; the sanitiser is what guarantees it for everything the renderer does emit
(links, code, tables), so that no tag, attribute or URL scheme outside the lists below can
reach the page however the renderer changes."""

from __future__ import annotations

import nh3
from markdown_it import MarkdownIt

# Single newlines stay line breaks: model answers use them as such (the earlier renderer
# kept them too). Images are off: an image URL in an answer would make every annotator's
# browser fetch it from wherever the model pointed.
_MARKDOWN = (
    MarkdownIt("commonmark", {"html": False, "breaks": True})
    .enable(["table", "strikethrough"])
    .disable("image")
)

HTML_TAGS = frozenset(
    {
        "a", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6",
        "hr", "li", "ol", "p", "pre", "s", "strong", "table", "tbody", "td", "th", "thead",
        "tr", "ul",
    }
)  # fmt: skip
# No style, no on* handlers, no class or id: only what a link and a numbered list need.
HTML_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}}
URL_SCHEMES = frozenset({"http", "https", "mailto"})
LINK_REL = "nofollow noopener noreferrer"


def render_markdown(source: str) -> str:
    """HTML for a completion's Markdown; safe to put in a page unescaped."""
    rendered = _MARKDOWN.render(source.replace("\r\n", "\n"))
    return nh3.clean(
        rendered,
        tags=set(HTML_TAGS),
        attributes={tag: set(names) for tag, names in HTML_ATTRIBUTES.items()},
        url_schemes=set(URL_SCHEMES),
        link_rel=LINK_REL,
        strip_comments=True,
    ).strip()
