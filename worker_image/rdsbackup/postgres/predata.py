"""The schema's pre-data section (schemas, types, functions, tables without their indexes and
constraints) sent to the server many statements to a round trip.

`pg_restore --section=pre-data` sends each object's statements on their own and waits for each: two
round trips and a commit per table, 20,000 for a database of 10,000 tables, one after another on one
session. That is most of the restore of a database of many small tables, and on RDS every round trip
crosses the network. Here `pg_restore -f` writes the same statements as a script, which PostgreSQL's
own parser cuts into statements (`split_statements`), sent `BATCH_STATEMENTS` at a time, each batch one
implicit transaction on one session, in the script's order.

Any failure leaves the caller to start over the pg_restore way (`pre_data_in_batches` returns False):
pg_restore goes on past a failing statement and reports it, which a batch (rolled back whole) cannot
do, and its error messages are what the restore reports. So the batches only ever save time.
"""

from __future__ import annotations

import bisect
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
# Script text given to PostgreSQL's parser at a time, and at most (see _parse).
PARSE_BYTES = 256 * 1024
PARSE_LIMIT = 16 * PARSE_BYTES

# psql commands pg_restore -f writes around the script (a key psql checks; pg_dump's keys are letters
# and digits): not SQL, left out of what is sent.
_RESTRICT = re.compile(r"(?m)^\\(?:un)?restrict[ \t]+[A-Za-z0-9]+[ \t]*$")
# With standard_conforming_strings off, '\'' is a whole string: the parser below assumes it is on.
_NON_STANDARD_STRINGS = re.compile(rb"(?im)^SET standard_conforming_strings = off;")
# PostgreSQL's whitespace (scan.l's `space`), and what may stand before a statement's first token.
_SPACE = re.compile(r"[ \t\n\r\f\v]*")
_SPACE_AND_LINE_COMMENTS = re.compile(r"(?:[ \t\n\r\f\v]+|--[^\n]*)*")
# Where a part of the script given to the parser may end (see _parse).
_PART_END = re.compile(r";(?=[ \t\r]*\n\n*--)")


def split_statements(script: bytes) -> list[bytes] | None:
    """The SQL statements of a script `pg_restore -f` wrote, in order, each exactly as written (with
    the comments before it and its `;`), so that joined they are the script; None when the script
    holds something only psql or pg_restore itself can run (a psql command other than \\restrict and
    \\unrestrict, such as \\connect; backslash escapes in plain strings), is cut short, or is anything
    PostgreSQL's own parser (libpg_query, through pglast) does not accept.

    The statements are where the parser says they are: semicolons in strings, comments, dollar quotes,
    parentheses and `BEGIN ATOMIC` bodies do not end one. The script is decoded as Latin-1, one
    character per byte: PostgreSQL's lexer reads every byte with the high bit set as a letter (in every
    server encoding, UTF-8 or not), and the Latin-1 characters reach it as two such bytes, so each token
    is what it is in the original, and each character offset is the byte offset in `script`. Every
    statement the parser returns is then checked against the text it was cut from, so nothing is sent
    on a doubt."""
    if b"\0" in script or _NON_STANDARD_STRINGS.search(script):
        return None  # libpg_query reads a C string; see _NON_STANDARD_STRINGS
    parsed = script.decode("latin-1")
    commands = [m.span() for m in _RESTRICT.finditer(parsed)]
    for begin, end in commands:  # the parser sees the psql commands as spaces, at the same offsets
        parsed = parsed[:begin] + " " * (end - begin) + parsed[end:]
    spans = _parse(parsed)
    if spans is None:
        return None
    starts = [start for start, _ in spans]
    for begin, end in commands:
        if not spans or begin >= spans[-1][1]:
            continue  # after the last statement, where only spaces and comments are: not sent
        span = spans[bisect.bisect_right(starts, begin) - 1]
        # Only where a statement may start: after nothing but spaces and -- comments since the last `;`.
        if not _SPACE_AND_LINE_COMMENTS.fullmatch(parsed, span[0], begin):
            return None  # in a string, a body or a statement: more than we can know
        span[0] = end  # the statement is sent from after the command, as psql sends it
    return [script[start:stop] for start, stop in spans]


def _parse(text: str) -> list[list[int]] | None:
    """Each statement's [start, stop) in `text`, from the end of the one before to after its `;`, as
    PostgreSQL's parser cuts it; None when the parser's statements are not exactly that.

    The parser reads about PARSE_BYTES at a time: its parse tree takes some 17 bytes of memory for each
    byte of SQL (48 MiB for the 10,000-table script), and the worker has 512 MiB. A part ends after a
    `;` at the end of a line before a -- comment line, as each statement before pg_restore's header of
    the next object: the parser's last statement must end exactly there. A `;` in a string, a comment,
    a dollar quote or a BEGIN ATOMIC body cannot: the part is then unterminated, a syntax error at its
    end, or its last statement ends before it (a -- comment runs to the part's end). The parser's state
    after a `;` that ends a statement does not depend on what follows, so the cut is the one it makes
    in the whole script. Otherwise the part is taken twice as long, up to PARSE_LIMIT (longer goes the
    pg_restore way)."""
    spans: list[list[int]] = []
    start = 0
    while True:
        size = PARSE_BYTES
        while True:
            mark = _PART_END.search(text, start + size - 1)
            end = mark.end() if mark else len(text)  # the last part runs to the end
            if end - start > PARSE_LIMIT:
                return None
            part = _parsed_part(text, start, end)
            if part is not None and (end == len(text) or (part and part[-1][1] == end)):
                break
            if end == len(text):
                return None
            size = 2 * (end - start)
        spans += part
        if end == len(text):
            return spans
        start = end


def _parsed_part(text: str, start: int, end: int) -> list[list[int]] | None:
    import pglast  # here: only a restore needs it, and its import takes tens of milliseconds

    try:
        return _located(text, start, pglast.parser.split(text[start:end]))
    except pglast.Error:
        return None


def _located(text: str, pos: int, statements) -> list[list[int]] | None:
    """The [start, stop) in `text`, from `pos` on, of each of `statements` as pglast returns them
    (without the whitespace around them and their `;`): from the end of the one before to after its
    `;`; None when they do not follow one another so."""
    spans: list[list[int]] = []
    for stmt in statements:
        first = _SPACE.match(text, pos).end()
        if not text.startswith(stmt, first):
            return None
        semicolon = _SPACE.match(text, first + len(stmt)).end()
        if text[semicolon:semicolon + 1] != ";":
            return None  # the last statement has no `;`: cut short
        spans.append([pos, semicolon + 1])
        pos = semicolon + 1
    return spans


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
