"""SQL checked against a warehouse's grammar where its test double is more lenient: each
statement parsed by sqlglot in the warehouse's dialect, strictly (a statement sqlglot only
recognises by its first word, an `exp.Command`, does not pass as parsed)."""

import sqlglot
from sqlglot import exp


def parsed(sql: str, dialect: str) -> exp.Expression:
    """The statement's syntax tree; fails on anything the dialect's grammar does not take."""
    tree = sqlglot.parse_one(sql, read=dialect, error_level=sqlglot.ErrorLevel.RAISE)
    assert not isinstance(tree, exp.Command), f"not parsed as {dialect} SQL: {sql[:300]}"
    return tree
