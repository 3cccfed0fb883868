"""Sphinx configuration for otlabel's documentation."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.abspath(".."))
# The CASE example's package (`case`), documented on the CASE example pages.
sys.path.insert(0, os.path.abspath("../examples/wtal_case"))

import otlabel  # noqa: E402

project = "otlabel"
author = "otlabel maintainers"
copyright = "2026, otlabel maintainers"
release = otlabel.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    # MathJax from the built docs, not a CDN, so that maths renders on an air-gapped cluster: this
    # package (its import name has hyphens) sets `mathjax_path` to `_static/mathjax/tex-chtml.js`
    # (MathJax 3.2.2) and copies MathJax there; tests/test_docs.py checks no page loads a
    # script from the network.
    "sphinx-mathjax-offline",
    "sphinx.ext.intersphinx",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3

autodoc_typehints = "description"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True

# No network on build machines: intersphinx mappings would be fetched, so none are configured.
intersphinx_mapping: dict = {}

html_theme = "furo"
html_title = "otlabel"
html_static_path: list[str] = []
# _static/ablation/report.md is included by wtal_ablation.md, not a page of its own
exclude_patterns = ["_build", "_static/ablation/*.md"]
nitpicky = False
