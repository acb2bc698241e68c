"""Session settings pinned on every connection that reads or writes table rows, backup and restore.

COPY's text format is written and read through the session's settings: with `DateStyle = 'SQL, DMY'`
a date goes out as `04/03/2026`, and a restore session whose style is MDY reads it back as April 3;
`IntervalStyle = sql_standard` writes `-1 -2:03:00`, which the `postgres` style reads differently.
Database and role defaults (`ALTER DATABASE/ROLE ... SET`) would otherwise decide these on either
side. pg_dump and pg_restore pin the same list in every session they open (pg_dump.c
`setup_connection`, pg_backup_archiver.c `_doSetFixedOutputState`); both sides here pin it at
connection start (libpq `options`, or `PGOPTIONS` for psql), which overrides every such default.

Beyond pg_dump: `lc_monetary = C` on both sides, so `money` values do not depend on either server's
locale (pg_dump writes them in the source's monetary locale and pg_restore reads them in the
target's), and `bytea_output = hex`, the format every server reads.
"""

from __future__ import annotations


def data_session_settings(encoding: str) -> dict[str, str]:
    """Settings for a session that moves table rows in the database encoding `encoding`."""
    return {
        "client_encoding": encoding,  # the COPY text is in the source database's encoding
        "DateStyle": "ISO",
        "IntervalStyle": "postgres",
        "extra_float_digits": "3",  # every float digit (the shortest exact form since PostgreSQL 12)
        "standard_conforming_strings": "on",
        "bytea_output": "hex",
        "xmloption": "content",  # XML content fragments, not only documents, read back
        "lc_monetary": "C",
        "search_path": "pg_catalog",  # names resolve as in pg_dump's sessions (its search_path is empty)
    }


def options_string(settings: dict[str, str]) -> str:
    """The libpq `options` / `PGOPTIONS` text that sets `settings` at connection start. Values hold no
    spaces or backslashes (checked: the list above is fixed, encodings are single words)."""
    for name, value in settings.items():
        if not value or any(c.isspace() or c == "\\" for c in name + value):
            raise ValueError(f"setting {name}={value!r} cannot go in a startup options string")
    return " ".join(f"-c {name}={value}" for name, value in settings.items())
