"""Completions render as Markdown (fences, headings, tables, nested lists) and nothing a model
writes becomes a tag, an attribute or a script URL (pure: no database)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from annotation.core.markdown import render_markdown


def _attributes(html: str) -> dict[str, dict[str, str]]:
    """Every tag the browser would build from `html`, with the attributes it would see."""
    seen: dict[str, dict[str, str]] = {}

    class Collect(HTMLParser):
        def handle_starttag(self, tag, attrs):
            seen.setdefault(tag, {}).update({k: v or "" for k, v in attrs})

    Collect().feed(html)
    return seen


def test_a_code_fence_is_a_pre_block_with_its_text_escaped():
    html = render_markdown("Run:\n\n```python\nif a < b:\n    print('**x**')\n```\n")
    assert "<pre><code>if a &lt; b:\n    print('**x**')\n</code></pre>" in html
    assert "<strong>" not in html  # no emphasis inside code


def test_headings_and_inline_markup():
    html = render_markdown("## Answer\n\nThe **cat** is *left* of `x`, ~~not~~ right.")
    assert "<h2>Answer</h2>" in html
    assert "<strong>cat</strong>" in html and "<em>left</em>" in html
    assert "<code>x</code>" in html and "<s>not</s>" in html


def test_a_table_renders_as_a_table():
    html = render_markdown("| colour | count |\n|---|--:|\n| red | 2 |\n| blue | 3 |\n")
    cells = re.findall(r"<t[hd]>([^<]*)</t[hd]>", html)
    assert "<table>" in html and cells == ["colour", "count", "red", "2", "blue", "3"]
    assert "style" not in html  # column alignment is dropped with the attribute


def test_nested_lists_nest():
    html = render_markdown("1. one\n   - a\n   - b\n2. two\n")
    compact = html.replace("\n", "")
    assert compact.startswith("<ol><li>one<ul><li>a</li><li>b</li></ul></li><li>two</li></ol>")


def test_single_newlines_stay_line_breaks():
    assert render_markdown("first\nsecond") == "<p>first<br>\nsecond</p>"


@pytest.mark.parametrize(
    "source",
    [
        "<script>alert(1)</script>",
        "<img src=x onerror=alert(2)>",
        '<a href="https://e.org" onclick="alert(3)">x</a>',
        '<p style="position:fixed">x</p>',
        "<iframe src=https://e.org></iframe>",
    ],
)
def test_raw_html_is_shown_as_text(source):
    html = render_markdown(source)
    assert "<" not in html.removeprefix("<p>").removesuffix("</p>")
    assert "&lt;" in html


@pytest.mark.parametrize(
    "source",
    [
        "[click](javascript:alert(1))",
        "[click](JaVaScRiPt:alert(1))",
        "[click](vbscript:msgbox(1))",
        "[click](data:text/html;base64,PHNjcmlwdD4=)",
        "[click](ftp://e.org/x)",
        "<javascript:alert(1)>",
    ],
)
def test_links_to_other_schemes_are_not_links(source):
    html = render_markdown(source)
    assert "href" not in html and "script" not in str(_attributes(html))


def test_attribute_injection_stays_inside_the_value():
    link = _attributes(render_markdown('[x](https://e.org/"onmouseover="a "t\\" onfocus=\\"y")'))
    assert set(link) == {"p", "a"} and set(link["a"]) == {"href", "title", "rel"}
    assert link["a"]["href"] == "https://e.org/%22onmouseover=%22a"
    assert link["a"]["title"] == 't" onfocus="y'
    fence = _attributes(render_markdown('```" onmouseover="alert(1)\nbody\n```'))
    assert fence == {"pre": {}, "code": {}}
    html = render_markdown('![a" onerror="alert(1)](https://e.org/i.png)')
    assert set(_attributes(html)["a"]) == {"href", "rel"}
    assert "<img" not in html  # images are off: no fetch from wherever a model points


def test_a_link_is_nofollow_and_an_http_one_keeps_its_url():
    html = render_markdown('[docs](https://example.org/a?b=1&c=2 "the docs")')
    assert html == (
        '<p><a href="https://example.org/a?b=1&amp;c=2" title="the docs" '
        'rel="nofollow noopener noreferrer">docs</a></p>'
    )
    mail = render_markdown("[me](mailto:me@example.org)")
    assert 'href="mailto:me@example.org"' in mail
