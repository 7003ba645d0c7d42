"""Named SQL statements kept in the project's sql/ folder.

Each file holds one statement family; a statement starts at a `-- name: <name>` line and runs to
the next one. Table names that vary (one vector table per embedding version) are written as
`{placeholders}` and filled with `psycopg.sql.Identifier`, never with string formatting; values are
always bind parameters. Every statement is a template, so a literal brace is written `{{` or `}}`.
"""

from __future__ import annotations

import functools
import re
from importlib import resources

from psycopg import sql

from semindex.errors import InvalidInput, NotFound
_NAME_LINE = re.compile(r"^--\s*name:\s*(\S+)\s*$", re.MULTILINE)


@functools.cache
def _statements(family: str) -> dict[str, str]:
    # Package data of semindex.sql (the project's sql/ folder), so an installed wheel has them too.
    path = resources.files("semindex.sql") / f"{family}.sql"
    if not path.is_file():
        raise NotFound(f"no SQL family {family!r}: {path} does not exist")
    text = path.read_text(encoding="utf-8")
    parts = _NAME_LINE.split(text)
    # parts = [preamble, name1, body1, name2, body2, ...]
    return {name: _without_comment_lines(body) for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def _without_comment_lines(body: str) -> str:
    """The statement without its whole-line comments. They are for the reader; left in, an identifier
    filled into one (a name holding a newline) would end the comment and run as SQL."""
    return "\n".join(line for line in body.strip().splitlines() if not line.lstrip().startswith("--"))


def statement(family: str, name: str, **parts: str | int | sql.Composable) -> sql.Composed:
    """The statement `name` of sql/<family>.sql with its `{placeholders}` filled safely.

    A str fills in as a (possibly schema-qualified) identifier, an int as a literal, and a
    psycopg.sql.Composable (say sql.Literal for a value in DDL, where bind parameters cannot go) as is.
    """
    try:
        text = _statements(family)[name]
    except KeyError:
        known = ", ".join(sorted(_statements(family)))
        raise NotFound(f"sql/{family}.sql has no statement {name!r} (it has: {known})") from None
    template = sql.SQL(text)  # type: ignore[arg-type]  # text comes from our own files
    return template.format(**{key: _composable(value) for key, value in parts.items()})


def _composable(value: str | int | sql.Composable) -> sql.Composable:
    if isinstance(value, sql.Composable):
        return value
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError(f"cannot place {value!r} in SQL")
    if isinstance(value, int):
        return sql.Literal(value)
    if "%" in value:
        # psycopg does not escape % inside identifiers: in a statement with parameters `"a%sb"` would
        # be read as a placeholder and name another object. Only operator-given names (an adopted
        # table, its columns) can contain one; refuse them rather than run a different statement.
        raise InvalidInput(f"identifier {value!r} contains '%', which PostgreSQL drivers read as a placeholder; rename it")
    return sql.Identifier(*value.split("."))
