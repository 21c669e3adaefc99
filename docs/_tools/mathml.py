"""MkDocs hook: turn the pages' LaTeX into MathML when the site is built.

``pymdownx.arithmatex`` (``generic: true``) marks the maths of every page, API
pages included, as ``<span class="arithmatex">\\(...\\)</span>`` (inline) or
``<div class="arithmatex">\\[...\\]</div>`` (display). This hook replaces each
with the MathML that ``latex2mathml`` makes of it, so browsers render the maths
natively, with no script and no network (MathJax from a CDN showed raw LaTeX
offline). A formula that cannot be converted fails the build, naming the page.

Used by mkdocs.yml (``hooks:``). :func:`render` needs only the standard library
(the converter is passed in), so the test suite checks it without latex2mathml.
"""
from __future__ import annotations

import html
import re
from collections.abc import Callable
from typing import Any

#: what arithmatex writes: the tag, then the TeX between its delimiters (HTML-escaped)
MATH_RE = re.compile(
    r'<(?P<tag>span|div) class="arithmatex">\s*(?:\\\((?P<inline>.*?)\\\)|\\\[(?P<block>.*?)\\\])\s*</(?P=tag)>',
    re.S)

Converter = Callable[[str, str], str]

#: text-mode arguments (``\texttt{max\_decay}``): a TeX escape there is the character
#: itself, which latex2mathml would otherwise show with its backslash
TEXT_ARG_RE = re.compile(r"\\(?P<cmd>texttt|text|textrm|textit|textbf|mathrm|operatorname)"
                         r"\{(?P<arg>(?:[^{}\\]|\\.)*)\}")
TEXT_ESCAPE_RE = re.compile(r"\\([_%&#$])")


def unescape_text_args(tex: str) -> str:
    r"""``\texttt{max\_decay}`` becomes ``\texttt{max_decay}``: escaped characters in text arguments."""

    def one(m: re.Match[str]) -> str:
        return "\\" + m["cmd"] + "{" + TEXT_ESCAPE_RE.sub(r"\1", m["arg"]) + "}"

    return TEXT_ARG_RE.sub(one, tex)


def render(page_html: str, convert: Converter) -> str:
    """``page_html`` with every arithmatex formula replaced by ``convert(tex, "inline" | "block")``."""

    def one(match: re.Match[str]) -> str:
        display = "inline" if match["inline"] is not None else "block"
        tex = html.unescape(match["inline"] if match["inline"] is not None else match["block"]).strip()
        tex = unescape_text_args(tex)
        mathml = convert(tex, display)
        if display == "block":
            return f'<div class="arithmatex">{mathml}</div>'
        return f'<span class="arithmatex">{mathml}</span>'

    return MATH_RE.sub(one, page_html)


def latex2mathml_converter() -> Converter:
    """latex2mathml's converter (the ``docs`` extra), with errors that name the formula."""
    from latex2mathml.converter import convert

    def run(tex: str, display: str) -> str:
        try:
            out: str = convert(tex, display=display)
        except Exception as e:  # the converter raises many kinds; any of them means the page is wrong
            raise ValueError(f"cannot convert {tex!r} to MathML: {type(e).__name__}: {e}") from None
        return out

    return run


def on_page_content(html_text: str, page: Any, **kwargs: Any) -> str:
    try:
        return render(html_text, latex2mathml_converter())
    except ValueError as e:
        raise ValueError(f"{page.file.src_path}: {e}") from None
