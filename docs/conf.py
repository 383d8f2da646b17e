"""Sphinx configuration of aup's documentation site.

Sphinx (not MkDocs) because it is maintained and builds offline: MkDocs 1.6 has had no release
since 2024, and the pages stay Markdown through MyST. ``python -m sphinx -W -b html docs
docs/_build`` builds the site; the test suite builds it with warnings as errors.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # document this checkout, not whatever aup is installed
sys.path.insert(0, str(Path(__file__).resolve().parent / "_ext"))

project = "aup"
author = "aup developers"
copyright = "2026, aup developers"

extensions = [
    "myst_parser",             # the pages are Markdown
    "sphinx.ext.autodoc",      # the API reference from the docstrings
    "sphinx.ext.napoleon",     # Google-style "Args:" sections in some docstrings
    "sphinx.ext.viewcode",
    "aup_cli",                 # the command-line reference from aup.cli.build_parser
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "_ext", "Thumbs.db", ".DS_Store"]
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": True}
autodoc_typehints = "description"
autodoc_member_order = "bysource"
# The heavy optional frameworks are not needed to read docstrings.
autodoc_mock_imports = ["tensorflow", "keras", "ray"]

html_theme = "furo" if __import__("importlib.util").util.find_spec("furo") else "alabaster"
html_title = "aup documentation"
html_static_path: list[str] = []
