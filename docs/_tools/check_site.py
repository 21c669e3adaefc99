"""Check a built documentation site for what should have been rendered and was not.

    python docs/_tools/check_site.py SITE_DIR

Fails (exit 1, one line per finding) when a page's text, outside code, still holds

* a raw Sphinx role (``:class:``, ``:meth:``, ... from a docstring the role
  extension did not convert), or
* unrendered maths: ``$...$``, ``$$``, ``\\(...\\)``, ``\\[...\\]`` or a TeX command
  such as ``\\alpha`` (LaTeX the MathML hook did not convert), or TeX that reached
  the MathML as text (``<mtext>max\\_decay</mtext>``),

or when a page loads a script from the network (the site must work offline), or
when the site holds no MathML at all (the maths pages exist, so none means the
hook did not run). ``.ci/run`` calls it right after ``mkdocs build --strict``.
Standard library only.
"""
from __future__ import annotations

import re
import sys
from html.parser import HTMLParser
from pathlib import Path

#: elements whose text is code or machinery, not prose
SKIP = {"code", "pre", "script", "style", "math", "kbd", "samp", "textarea", "svg"}
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

ROLE = re.compile(r":(?:py:)?(?:class|meth|func|mod|attr|data|exc|obj|const):")
MATH = re.compile(r"\$\$|\$[^$\s][^$\n]*\$|\\\(|\\\)|\\\[|\\\]|\\(?:[a-zA-Z]{2,})\b")
#: TeX that reached the MathML as text (a backslash in a token element), or a converter error
RAW_TEX_IN_MATHML = re.compile(r"<(?:mi|mo|mn|mtext)\b[^>]*>[^<]*\\[^<]*</|<merror\b")
REMOTE_SCRIPT = re.compile(r"<script\b[^>]*\bsrc=[\"']?(?:https?:)?//", re.I)


class _Text(HTMLParser):
    """Collects the prose of a page: text outside code, scripts and MathML."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.depth = 0  # how many SKIP elements we are inside
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in SKIP:
            self.depth += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in SKIP and self.depth:
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        if not self.depth:
            self.parts.append(data)


def prose(page_html: str) -> str:
    """The text of a page outside code, scripts and maths (each text node on its own line)."""
    parser = _Text()
    parser.feed(page_html)
    parser.close()
    return "\n".join(parser.parts)


def findings(page_html: str) -> list[str]:
    """What is left unrendered in one page (empty when it is clean)."""
    out = []
    text = prose(page_html)
    for pattern, what in ((ROLE, "raw Sphinx role"), (MATH, "unrendered maths")):
        for m in pattern.finditer(text):
            end = text.find("\n", m.end())
            line = text[text.rfind("\n", 0, m.start()) + 1:end if end >= 0 else len(text)]
            out.append(f"{what} {m.group(0)!r} in: {line.strip()[:160]}")
    for m in RAW_TEX_IN_MATHML.finditer(page_html):
        out.append(f"TeX left inside MathML: {m.group(0)[:120]}")
    for m in REMOTE_SCRIPT.finditer(page_html):
        out.append(f"script from the network: {page_html[m.start():m.start() + 160].splitlines()[0]}")
    return out


def check(site: Path) -> list[str]:
    """Every finding of every HTML page under ``site``, prefixed by the page's path."""
    pages = sorted(site.rglob("*.html"))
    if not pages:
        return [f"{site}: no HTML pages (was the site built?)"]
    out = [f"{p.relative_to(site)}: {f}" for p in pages for f in findings(p.read_text(encoding="utf-8"))]
    if not any("<math" in p.read_text(encoding="utf-8") for p in pages):
        out.append(f"{site}: no MathML anywhere (the maths hook did not run)")
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    problems = check(Path(argv[0]))
    for p in problems:
        print(p)
    pages = len(list(Path(argv[0]).rglob("*.html")))
    print(f"check_site: {pages} pages, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
