"""The documentation builds with warnings as errors, and works offline."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The src of every <script> tag (double- or single-quoted).
_SCRIPT_SRC = re.compile(r"""<script\b[^>]*?\bsrc\s*=\s*["']([^"']*)["']""", re.IGNORECASE)
# A src that leaves the built docs: a scheme (http:, https:, ...) or a protocol-relative //host.
_EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//)", re.IGNORECASE)


@pytest.fixture(scope="module")
def html_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    """One HTML build (about a minute) that the tests below share."""
    out = tmp_path_factory.mktemp("docs") / "html"
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "docs", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    return result, out


def test_sphinx_build_has_no_warnings(html_build: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    result, out = html_build
    assert result.returncode == 0, result.stdout + result.stderr
    assert (out / "index.html").exists()


def test_pages_load_no_external_script(html_build: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    """No page loads a script from the network (an air-gapped cluster would show raw LaTeX);
    every script a page loads, MathJax included, is in the built output."""
    _, out = html_build
    pages = sorted(out.rglob("*.html"))
    assert pages
    external, missing, mathjax = [], [], set()
    for page in pages:
        for src in _SCRIPT_SRC.findall(page.read_text(encoding="utf-8")):
            name = page.relative_to(out)
            if _EXTERNAL.match(src):
                external.append(f"{name}: {src}")
                continue
            target = (page.parent / src.split("?")[0].split("#")[0]).resolve()
            if not target.is_file():
                missing.append(f"{name}: {src}")
            elif "mathjax" in src.lower():
                mathjax.add(target)
    assert not external, "pages load external scripts:\n" + "\n".join(external)
    assert not missing, "pages load scripts missing from the build:\n" + "\n".join(missing)
    # the pages with maths load MathJax, from inside the build (its _static folder)
    assert mathjax, "no page loads MathJax from the built docs"
    assert all(path.is_relative_to((out / "_static").resolve()) for path in mathjax), mathjax


def test_readme_example_runs() -> None:
    """The README's library example (its first ``python`` block) runs and raises no warning."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("```python\n") + len("```python\n")
    code = readme[start : readme.index("```", start)]
    assert "sinkhorn" in code
    result = subprocess.run([sys.executable, "-W", "error", "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split()[0] == "True"  # the tolerance-mode call converged
