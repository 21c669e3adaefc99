"""The documentation build's own tools (docs/_tools), on small inputs.

The site itself is built and checked by ``.ci/run`` (``mkdocs build --strict``, then
``docs/_tools/check_site.py``); these tests check the pieces that decide what a page
shows, with the standard library only: the Sphinx-role conversion, the maths
substitution (with a stand-in converter) and the site checker, each with a
negative control.
"""
from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / "docs" / "_tools"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"docs_tools_{name}", TOOLS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


roles = load("sphinx_roles")
mathml = load("mathml")
check_site = load("check_site")


# ---------------------------------------------------------------- Sphinx roles
def test_roles_become_optional_autorefs_with_sphinx_display_text() -> None:
    text = ("See :class:`~ReplayTables.batch.Batch`, :meth:`add`, :func:`ReplayTables.load`, "
            ":mod:`ReplayTables.interop`, :attr:`~a.b.size` and :py:class:`x.Y`.")
    out = roles.convert(text)
    assert ":class:" not in out and ":meth:" not in out and "`" not in out
    assert '<autoref identifier="ReplayTables.batch.Batch" optional><code>Batch</code></autoref>' in out
    assert '<code>add()</code>' in out and '<code>ReplayTables.load()</code>' in out
    assert '<code>ReplayTables.interop</code>' in out and '<code>size</code>' in out
    assert '<autoref identifier="x.Y" optional><code>x.Y</code></autoref>' in out


def test_relative_targets_resolve_in_the_innermost_scope_that_has_them() -> None:
    objects = {"pkg.mod.Buf": "pkg.mod.Buf", "pkg.mod.Buf.add": "pkg.mod.Buf.add",
               "pkg.Err": "pkg.errors.Err", "pkg.errors.Err": "pkg.errors.Err"}
    scopes = ["pkg.mod.Buf.add_batch", "pkg.mod.Buf", "pkg.mod", "pkg"]
    out = roles.convert(":meth:`add` raises :class:`Err`; see :class:`Unknown`", scopes, objects.get)
    assert 'identifier="pkg.mod.Buf.add"' in out  # the sibling method
    assert 'identifier="pkg.errors.Err"' in out  # a re-export links to where it is documented
    assert 'identifier="Unknown" optional' in out  # unresolved: a plain code span, no warning


def test_text_without_roles_is_unchanged() -> None:
    text = "Plain ``code``, a colon: here, and `markdown` code."
    assert roles.convert(text) == text


def test_every_role_in_the_sources_is_of_a_form_the_extension_converts() -> None:
    """A role with a spelling the pattern misses would stay raw in the API pages."""
    loose = re.compile(r":[a-z:]+:`")
    for path in (REPO / "src").rglob("*.py"):
        text = path.read_text()
        converted = roles.convert(text)
        leftovers = [m.group(0) for m in loose.finditer(converted)]
        assert not leftovers, (path, leftovers)


# ---------------------------------------------------------------- maths
def test_arithmatex_output_is_replaced_by_the_converters_mathml() -> None:
    page = ('<p>A priority <span class="arithmatex">\\(p &lt; 1\\)</span> and</p>\n'
            '<div class="arithmatex">\\[\nq_i = p_i^{\\,\\alpha}\n\\]</div>')
    seen = []

    def fake(tex: str, display: str) -> str:
        seen.append((tex, display))
        return f"<math>{display}</math>"

    out = mathml.render(page, fake)
    assert seen == [("p < 1", "inline"), ("q_i = p_i^{\\,\\alpha}", "block")]  # HTML entities undone
    assert "\\(" not in out and "\\[" not in out and out.count("<math>") == 2
    assert mathml.render("<p>no maths</p>", fake) == "<p>no maths</p>"


def test_escapes_in_text_arguments_are_literal_characters() -> None:
    tex = r"\max\bigl(\texttt{max\_decay}\cdot m,\; \text{a\%b}\bigr) + q\_i"
    assert mathml.unescape_text_args(tex) == r"\max\bigl(\texttt{max_decay}\cdot m,\; \text{a%b}\bigr) + q\_i"
    assert mathml.unescape_text_args(r"\alpha + \beta") == r"\alpha + \beta"


# ---------------------------------------------------------------- the site check
def test_site_check_flags_raw_roles_and_maths_but_not_code() -> None:
    assert check_site.findings("<p>Use :class:<code>Batch</code> here</p>")
    assert check_site.findings('<p>with <span class="arithmatex">\\(m\\)</span></p>')
    assert check_site.findings("<p>where $q = p^a$ holds</p>")
    assert check_site.findings("<p>a \\alpha left over</p>")
    assert check_site.findings('<script src="https://unpkg.com/mathjax@3/es5/tex-mml-chtml.js"></script>')
    assert check_site.findings('<math><mtext mathvariant="monospace">max\\_decay</mtext></math>')
    assert check_site.findings("<math><merror><mtext>bad</mtext></merror></math>")
    clean = ('<p>Rendered <span class="arithmatex"><math><mi>m</mi></math></span> and '
             '<code>:class:`x` $HOME \\(a\\)</code></p><pre>echo $A $B</pre><script>var a = "$x$";</script>'
             '<script src="../assets/local.js"></script>')
    assert check_site.findings(clean) == []


def test_site_check_of_a_folder(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "index.html").write_text('<p><span class="arithmatex"><math><mi>x</mi></math></span></p>')
    assert check_site.check(tmp_path) == []
    (tmp_path / "b.html").write_text("<p>see :meth:<code>add</code></p>")
    problems = check_site.check(tmp_path)
    assert len(problems) == 1 and problems[0].startswith("b.html: raw Sphinx role")
    (tmp_path / "a" / "index.html").write_text("<p>no maths here</p>")
    assert any("no MathML" in p for p in check_site.check(tmp_path))
    assert check_site.check(tmp_path / "missing")


def test_ci_checks_the_built_site_and_maths_needs_no_network() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    build, check = ci.index("mkdocs build --strict"), ci.index("docs/_tools/check_site.py")
    assert build < check
    config = (REPO / "mkdocs.yml").read_text()
    assert "extra_javascript" not in config and "mathjax" not in config.lower()
    assert "docs/_tools/mathml.py" in config and "docs/_tools/sphinx_roles.py:SphinxRoles" in config
    assert "latex2mathml" in (REPO / "pyproject.toml").read_text()
