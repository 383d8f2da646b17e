"""``{aup-cli}`` directive: the help text of every ``aup`` command, read from the real parser.

Generated at build time from :func:`aup.cli.build_parser`, so the reference cannot drift from the
command line it documents.
"""
from __future__ import annotations

import argparse

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:  # argparse keeps sub-parsers only here
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices.items())
    return []


class AupCliDirective(SphinxDirective):
    """One section per command: its ``--help`` text as a literal block."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        from aup.cli import build_parser

        parser = build_parser()
        parser.prog = "aup"
        out: list[nodes.Node] = [nodes.literal_block(text=parser.format_help(), language="text")]
        for name, sub in _subcommands(parser):
            sub.prog = f"aup {name}"
            section = nodes.section(ids=[f"aup-{name}"])
            section += nodes.title(text=f"aup {name}")
            section += nodes.literal_block(text=sub.format_help(), language="text")
            out.append(section)
        return out


def setup(app: Sphinx) -> dict[str, object]:
    app.add_directive("aup-cli", AupCliDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
