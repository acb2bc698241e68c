"""The schema's pre-data section (schemas, types, functions, tables without their indexes and
constraints) sent to the server many statements to a round trip.

`pg_restore --section=pre-data` sends each object's statements on their own and waits for each: two
round trips and a commit per table, 20,000 for a database of 10,000 tables, one after another on one
session. That is most of the restore of a database of many small tables, and on RDS every round trip
crosses the network. Here `pg_restore -f` writes the same statements as a script for psql, which is
cut into statements where psql would end them (`split_statements`) and sent `BATCH_STATEMENTS` at a
time, each batch one implicit transaction on one session, in the script's order.

Why our own small lexer and not a parser library: the one library that carries PostgreSQL's own parser
for Python, pglast (libpg_query), is GPL-3.0-or-later, which would bind every user of the worker image;
every other dependency here is permissive or LGPL. psql itself does not parse either: it lexes, and
ends a statement at a `;` outside quotes, comments, parentheses and `BEGIN ... END` bodies
(psqlscan.l), as below.

Any failure leaves the caller to start over the pg_restore way (`pre_data_in_batches` returns False):
pg_restore goes on past a failing statement and reports it, which a batch (rolled back whole) cannot
do, and its error messages are what the restore reports. So the batches only ever save time.
"""

from __future__ import annotations

import contextlib
import os
import re

import psycopg

from .connection import ConnectionInfo
from .errors import ToolFailed
from .tools import run_tool

# Statements sent in one round trip: each table created holds a lock or two until its batch commits.
BATCH_STATEMENTS = 200
BATCH_BYTES = 1024 * 1024

_IDENT = rb"A-Za-z0-9_$\x80-\xff"
# What the lexer must see at the top level of the script: comments, quoted text, psql commands at the
# start of a line, parentheses, the words that open and close a body, and the semicolons that end
# statements.
_TOKEN = re.compile(
    rb"--[^\n]*"  # comment to the end of the line
    rb"|/\*"  # block comment (nested: matched in code)
    rb"|(?<![" + _IDENT + rb"])[Ee]'(?:[^'\\]|\\.|'')*'"  # E'...': backslash escapes
    rb"|'(?:[^']|'')*'"  # '...' (standard_conforming_strings on)
    rb'|"(?:[^"]|"")*"'  # "quoted identifier"
    rb"|(?<![" + _IDENT + rb"])\$(?:[A-Za-z_\x80-\xff][A-Za-z0-9_\x80-\xff]*)?\$"  # $tag$ dollar quote
    rb"|(?m:^\\[^\n]*)"  # psql meta-command (pg_restore -f writes \restrict and \unrestrict)
    rb"|(?<![" + _IDENT + rb"])(?i:begin|case|end)(?![" + _IDENT + rb"])"  # see _ROUTINE
    rb"|[;()]"
    rb"""|['"]""",  # a quote that is never closed
    re.S,
)
_COMMENT_MARK = re.compile(rb"/\*|\*/")
_LINE_COMMENT = re.compile(rb"--[^\n]*")
# The psql commands pg_restore -f writes around the script (a key psql checks): not SQL, dropped.
_RESTRICT = re.compile(rb"\\(?:un)?restrict\s+\S+\s*")
_NON_STANDARD_STRINGS = re.compile(rb"(?im)^SET standard_conforming_strings = off;")
_SPACE = b" \t\r\n"
# As psql tells them (psqlscan.l): in a statement that starts CREATE [OR REPLACE] FUNCTION|PROCEDURE,
# outside parentheses, BEGIN opens a body whose `;` do not end the statement (`BEGIN ATOMIC ... END`,
# a SQL-standard body), CASE inside a body opens another (its END), and END closes one.
_ROUTINE = re.compile(rb"(?i)create\s+(?:or\s+replace\s+)?(?:function|procedure)(?![" + _IDENT + rb"])")


def split_statements(script: bytes) -> list[bytes] | None:
    """The SQL statements of a script `pg_restore -f` wrote, in order, each exactly as written (with
    the comments before it and its `;`), so that joined they are the script; None when the script
    holds something only psql or pg_restore itself can run (a psql command other than \\restrict and
    \\unrestrict, such as \\connect; backslash escapes in plain strings; a NUL byte) or is cut short."""
    if b"\0" in script or _NON_STANDARD_STRINGS.search(script):
        return None
    statements: list[bytes] = []
    start = pos = 0
    parens = bodies = 0
    routine: bool | None = None  # whether the statement so far is a routine's (decided at its first BEGIN)
    while True:
        m = _TOKEN.search(script, pos)
        if m is None:
            break
        token = m.group()
        pos = m.end()
        if token == b";":
            if parens == 0 and bodies == 0:
                statements.append(script[start:pos])
                start, routine = pos, None
        elif token == b"(":
            parens += 1
        elif token == b")":
            parens = max(parens - 1, 0)
        elif parens == 0 and (word := token.lower()) in (b"begin", b"case", b"end"):
            if routine is None:
                routine = bool(_ROUTINE.match(_LINE_COMMENT.sub(b"", script[start:m.start()]).lstrip(_SPACE)))
            if not routine:
                continue
            if word == b"begin" or (word == b"case" and bodies):
                bodies += 1
            elif word == b"end" and bodies:
                bodies -= 1
        elif token == b"/*":
            depth = 1
            while depth:
                mark = _COMMENT_MARK.search(script, pos)
                if mark is None:
                    return None
                depth += 1 if mark.group() == b"/*" else -1
                pos = mark.end()
        elif token[:1] == b"$":
            close = script.find(token, pos)
            if close < 0:
                return None
            pos = close + len(token)
        elif token[:1] == b"\\":
            # Only where a statement may start, and only \restrict / \unrestrict: dropped.
            if not _RESTRICT.fullmatch(token) or _LINE_COMMENT.sub(b"", script[start:m.start()]).strip(_SPACE):
                return None
            start = pos
        elif token in (b"'", b'"'):
            return None
    if _LINE_COMMENT.sub(b"", script[start:]).strip(_SPACE):
        return None  # text after the last statement: cut short, or not a pg_restore script
    return statements


def _batches(statements: list[bytes]):
    """The statements joined as written, BATCH_STATEMENTS (or BATCH_BYTES) at a time."""
    batch: list[bytes] = []
    size = 0
    for stmt in statements:
        if batch and (len(batch) >= BATCH_STATEMENTS or size + len(stmt) > BATCH_BYTES):
            yield b"".join(batch)
            batch, size = [], 0
        batch.append(stmt)
        size += len(stmt)
    if batch:
        yield b"".join(batch)


def pre_data_in_batches(info: ConnectionInfo, target: str, path: str, options: list[str]) -> bool:
    """Restore the pre-data section of the archive at `path` (with pg_restore's `options`) into
    `target` in batches; True when done, False when the caller must start over (see above): the target
    may then hold part of the section."""
    script_path = path + ".pre-data.sql"
    try:
        with open(script_path, "wb") as out:
            run_tool("pg_restore", ["--section=pre-data", *options, "--file=-", path], info, stdout=out)
        with open(script_path, "rb") as f:
            statements = split_statements(f.read())
    except ToolFailed:
        return False  # started over, pg_restore says what is wrong with the archive
    finally:
        with contextlib.suppress(OSError):
            os.unlink(script_path)
    if statements is None:
        return False
    with info.connect(target) as conn:
        for batch in _batches(statements):
            try:
                conn.execute(batch)
            except psycopg.Error:
                return False
    return True
