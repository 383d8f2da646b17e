"""The catalog answers "what kind of compressor is this": no module compares a compressor's name.

A schedule asks its criterion's entry whether it removes whole filters (``structured``) or ranks all
layers together (``ranks_together``); a quantizer asks whether an empty config_list means every layer
(``Quantization.empty_means_all``). Comparing a name (``base_algo != "level"``) breaks the day a second
compressor shares the fact, so the AST walk below refuses it anywhere in ``aup/compression``.
"""
from __future__ import annotations

import ast
from pathlib import Path

import aup.compression.catalog as catalog

ROOT = Path(catalog.__file__).parent
NAMES = {e.name for e in catalog.ENTRIES} | {e.nni_alias for e in catalog.ENTRIES if e.nni_alias}
# what names a compressor or a base criterion (other strings, e.g. an allocation method "sensitivity" or
# the transformer pruner's own "l1" head scores, are not catalog names)
SUBJECTS = ("algo", "compressor", "name", "prune_type")


def _name_comparisons(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn))
                                                 for op in node.ops):
            sides = (node.left, *node.comparators)
            subject = " ".join(ast.unparse(s) for s in sides if not isinstance(s, ast.Constant))
            for side in sides:
                if isinstance(side, ast.Constant) and side.value in NAMES and any(w in subject for w in SUBJECTS):
                    found.append(f"{path.relative_to(ROOT.parent.parent)}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_module_compares_a_compressor_name() -> None:
    found = [hit for path in sorted(ROOT.rglob("*.py")) if path.name != "catalog.py" for hit in _name_comparisons(path)]
    assert not found, "ask the catalog entry instead:\n" + "\n".join(found)


def test_facts_of_the_criteria_schedules_use() -> None:
    assert catalog.base_entry("l1").structured and catalog.base_entry("l1_filter").structured
    assert not catalog.base_entry("level").structured
    assert [e.name for e in catalog.ENTRIES if e.ranks_together] == ["slim"]
    assert catalog.quantization("naive").empty_means_all and not catalog.quantization("qat").empty_means_all


def test_an_empty_config_list_follows_the_quantizer_fact() -> None:
    from aup.compression.torch.quantization.config import default_entries

    assert default_entries("naive", []) == [{"quant_types": ["weight"], "quant_bits": 8, "op_types": ["default"]}]
    assert default_entries("qat", []) == []
