"""Griffe extension: render the Sphinx roles of our docstrings as cross-references.

The docstrings use Sphinx's inline roles (:class:, :meth:, :func:, :mod:, :attr:,
:data:, :exc:, :obj:, :const:, each followed by a backquoted target, with ``~`` for
"show the last part only"). mkdocstrings renders docstrings as Markdown, where a
role would show as raw text. Once the whole package is loaded, this extension
rewrites each role in every docstring into an optional autorefs cross-reference::

    :class:`~ReplayTables.batch.Batch`
    -> <autoref identifier="ReplayTables.batch.Batch" optional><code>Batch</code></autoref>

A target that is rendered in the API pages becomes a link; any other (a private
helper, a third-party class) stays a code span, without a warning. Relative
targets (``:meth:`add```) are looked up the way Sphinx does: in the object itself,
then in each enclosing class and module, then in the package.

Used by mkdocs.yml (``extensions:`` of the mkdocstrings Python handler). The
conversion itself (:func:`convert`) needs only the standard library, so the test
suite checks it without the docs dependencies.
"""
from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

ROLES = ("class", "meth", "func", "mod", "attr", "data", "exc", "obj", "const")
#: a role with its target; ``:py:class:`` is the same role with Sphinx's domain spelled out
ROLE_RE = re.compile(r":(?:py:)?(?P<role>" + "|".join(ROLES) + r"):`(?P<target>[^`]+)`")
CALLABLE_ROLES = {"meth", "func"}


def display_text(role: str, target: str) -> str:
    """What Sphinx shows for a role: ``~`` keeps the last dotted part; functions get ``()``."""
    shown = target.split(".")[-1] if target.startswith("~") else target.lstrip(".")
    if role in CALLABLE_ROLES and not shown.endswith(")"):
        shown += "()"
    return shown


def candidates(target: str, scopes: Iterable[str]) -> Iterator[str]:
    """Full paths the target may name: as written, then relative to each scope (innermost first)."""
    name = target.lstrip("~").lstrip(".")
    name = name[:-2] if name.endswith("()") else name
    yield name
    for scope in scopes:
        yield f"{scope}.{name}"


def convert(text: str, scopes: Iterable[str] = (), resolve: Callable[[str], str | None] = lambda path: None) -> str:
    """``text`` with every Sphinx role turned into an optional autorefs cross-reference.

    Args:
        text: a docstring.
        scopes: the paths to resolve relative targets in, innermost first.
        resolve: the canonical path of the object a full path names, or ``None``;
            the first candidate it resolves gives the identifier (else the target
            as written).
    """
    scopes = list(scopes)

    def one(match: re.Match[str]) -> str:
        role, target = match["role"], match["target"].strip()
        options = list(candidates(target, scopes))
        identifier = next((r for r in map(resolve, options) if r), options[0])
        shown = html.escape(display_text(role, target))
        return f'<autoref identifier="{html.escape(identifier)}" optional><code>{shown}</code></autoref>'

    return ROLE_RE.sub(one, text)


def _scopes(obj: Any) -> list[str]:
    """The paths of ``obj`` and every object enclosing it, innermost first."""
    out = []
    while obj is not None:
        out.append(obj.path)
        obj = obj.parent
    return out


def _walk(obj: Any, seen: set[str]) -> Iterator[Any]:
    if obj.path in seen:
        return
    seen.add(obj.path)
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _walk(member, seen)


try:  # the extension class exists only where griffe is installed (the docs extra)
    import griffe
except ImportError:  # pragma: no cover - the conversion above is still importable
    griffe = None

if griffe is not None:

    class SphinxRoles(griffe.Extension):  # type: ignore[misc,name-defined]
        """Rewrite the Sphinx roles of every docstring of a package once it is loaded."""

        def on_package(self, *, pkg: Any, **kwargs: Any) -> None:
            objects = list(_walk(pkg, set()))
            canonical = {o.path: o.path for o in objects}
            for alias in (m for o in objects for m in o.members.values() if m.is_alias):
                # a re-export (ReplayTables.ConfigError) links to where it is documented
                canonical.setdefault(alias.path, alias.target_path)
            for obj in objects:
                if obj.docstring is not None and ROLE_RE.search(obj.docstring.value):
                    obj.docstring.value = convert(obj.docstring.value, _scopes(obj), canonical.get)
