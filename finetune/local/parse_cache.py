"""Speed only: moto's Step Functions parser run once per definition."""

from __future__ import annotations

from typing import Any

from finetune.local.patching import Patch

__all__ = ["parse_cache_patch"]


def parse_cache_patch() -> Patch:
    """Lex and parse each definition once per process; build its evaluation components afresh
    for every use. moto parses the whole definition (ANTLR, pure Python) at CreateStateMachine
    and again at every StartExecution: about 0.8 s for the platform's, the largest cost of the
    workflow tests. The components are rebuilt each time, so no execution shares state with
    another; only the immutable parse tree is reused."""
    from moto.stepfunctions.parser.asl.parse import asl_parser
    from moto.stepfunctions.parser.asl.parse.preprocessor import Preprocessor

    original = asl_parser.AmazonStateLanguageParser.parse
    trees: dict[str, Any] = {}

    def parse(definition: str) -> tuple[Any, Any]:
        tree = trees.get(definition)
        if tree is None:
            _, tree = original(definition)  # raises on a syntax error, as before
            if len(trees) < 64:
                trees[definition] = tree
        return Preprocessor().visit(tree), tree

    return Patch(
        asl_parser.AmazonStateLanguageParser,
        "parse",
        staticmethod(parse),
        "(speed only, no AWS behaviour) a definition is parsed once per process; each "
        "execution gets its own evaluation components",
    )
