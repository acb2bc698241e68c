"""Tables of every shape PostgreSQL allows (TABLE_SHAPES_SQL, in schema `s`), and values of every
built-in PostgreSQL base, range and multirange type: the pg_catalog types with an array type, as
`SELECT typname FROM pg_type WHERE typnamespace = 'pg_catalog'::regnamespace AND typtype IN
('b', 'r', 'm') AND typarray <> 0` lists them on PostgreSQL 15. `gtsvector` has no input function
and is left out.
"""

from __future__ import annotations

# type -> literals (SQL, already quoted); each table row takes the n-th literal of each type (cycling).
TYPE_SAMPLES: dict[str, list[str]] = {
    "aclitem": ["'postgres=arwdDxt/postgres'", "'=r/postgres'"],
    "bit": ["B'1'", "B'0'"],
    "bool": ["true", "false"],
    "box": ["'(1,2),(3,4)'", "'(-1.5,0),(0,1e-300)'"],
    "bpchar": ["'padded  '", "'x'"],
    "bytea": ["'\\x00ff10'::bytea", "'\\x'::bytea"],
    "char": ["'c'::\"char\"", "'\\001'::\"char\""],
    "cid": ["'1'", "'4294967295'"],
    "cidr": ["'10.0.0.0/8'", "'2001:db8::/32'"],
    "circle": ["'<(0,0),1.5>'", "'<(1e10,-2),0>'"],
    "date": ["'2026-03-04'", "'infinity'", "'0001-01-01 BC'"],
    "datemultirange": ["'{[2026-01-01,2026-02-01),[2026-03-04,2026-04-01)}'", "'{}'"],
    "daterange": ["'[2026-03-04,2026-04-03)'", "'empty'"],
    "float4": ["'0.1'", "'-0'", "'NaN'", "'3.4028235e38'", "'1e-45'"],
    "float8": ["'0.1'", "'-Infinity'", "'2.2250738585072014e-308'", "'5e-324'", "'1.7976931348623157e308'"],
    "inet": ["'192.168.0.1/24'", "'::1'"],
    "int2": ["'-32768'", "'32767'"],
    "int2vector": ["'1 2 3'", "''"],
    "int4": ["'-2147483648'", "'2147483647'"],
    "int4multirange": ["'{[1,3),[5,9)}'", "'{}'"],
    "int4range": ["'[1,10)'", "'(,5]'"],
    "int8": ["'-9223372036854775808'", "'9223372036854775807'"],
    "int8multirange": ["'{[1,3)}'", "'{(,)}'"],
    "int8range": ["'[-9223372036854775808,0)'", "'empty'"],
    "interval": ["'-1 day -02:03:00'", "'1 year 2 mons -3 days 04:05:06.789'", "'-00:00:00.000001'"],
    "json": ["'{\"b\": 1, \"a\": [1, 2.50, null]}'", "'\"\\u00e9\\t\"'"],
    "jsonb": ["'{\"b\": 1, \"a\": [1, 2.50, null]}'", "'[]'"],
    "jsonpath": ["'$.a[*] ? (@ > 1)'", "'strict $'"],
    "line": ["'{1,2,3}'", "'{0,-1,0.5}'"],
    "lseg": ["'[(0,0),(1,1)]'", "'[(-1e-5,2),(3,4)]'"],
    "macaddr": ["'08:00:2b:01:02:03'", "'ff:ff:ff:ff:ff:ff'"],
    "macaddr8": ["'08:00:2b:01:02:03:04:05'", "'00:00:00:00:00:00:00:00'"],
    "money": ["'1234.56'", "'-0.01'"],
    "name": ["'a name'", "'ünïcødé'"],
    "numeric": ["'NaN'", "'-1234567890.123456789012345678901234567890'", "'1e-100'", "'Infinity'"],
    "nummultirange": ["'{[1.5,2.5]}'", "'{}'"],
    "numrange": ["'[1.5,2.5]'", "'(,)'"],
    "oid": ["'0'", "'4294967295'"],
    "oidvector": ["'1 2 3'", "''"],
    "path": ["'[(0,0),(1,1),(2,0)]'", "'((0,0),(1,1))'"],
    "pg_lsn": ["'0/16B3748'", "'FFFFFFFF/FFFFFFFF'"],
    "pg_snapshot": ["'10:20:10,14,15'", "'5:5:'"],
    "point": ["'(1,2)'", "'(-0.5,1e300)'"],
    "polygon": ["'((0,0),(1,1),(1,0))'", "'((0,0))'"],
    "refcursor": ["'cursor_name'", "''"],
    "regclass": ["'pg_class'", "'pg_catalog.pg_type'"],
    "regcollation": ["'\"C\"'", "'\"POSIX\"'"],
    "regconfig": ["'english'", "'simple'"],
    "regdictionary": ["'simple'", "'english_stem'"],
    "regnamespace": ["'pg_catalog'", "'public'"],
    "regoper": ["'pg_catalog.||/'", "'pg_catalog.|/'"],
    "regoperator": ["'+(int4,int4)'", "'-(NONE,int8)'"],
    "regproc": ["'now'", "'pg_catalog.textlen'"],
    "regprocedure": ["'now()'", "'lower(text)'"],
    "regrole": ["'postgres'", "'pg_read_all_data'"],
    "regtype": ["'int4'", "'timestamp with time zone[]'"],
    "text": ["E'tab\\there, new\\nline, back\\\\slash, quote '' \"dq\"'", "'ünïcødé ✓ 日本'", "''"],
    "tid": ["'(0,1)'", "'(4294967295,65535)'"],
    "time": ["'04:05:06.789'", "'24:00:00'"],
    "timestamp": ["'2026-03-04 05:06:07.123456'", "'-infinity'", "'4713-01-01 00:00:00 BC'"],
    "timestamptz": ["'2026-03-04 05:06:07+02'", "'infinity'", "'1900-01-01 00:00:00+01:39:49'"],
    "timetz": ["'04:05:06+02'", "'23:59:59.999999-15:59'"],
    "tsmultirange": ["'{[2026-01-01,2026-01-02)}'", "'{}'"],
    "tsquery": ["'a & (b | !c)'", "'x:* <-> y'"],
    "tsrange": ["'[2026-03-04 05:06,2026-03-05)'", "'empty'"],
    "tsvector": ["'a:1A b:2 c'", "''"],
    "tstzmultirange": ["'{[2026-01-01 00:00+00,2026-01-02 00:00+00)}'", "'{}'"],
    "tstzrange": ["'[2026-03-04 05:06+02,)'", "'empty'"],
    "txid_snapshot": ["'10:20:10,14,15'", "'5:5:'"],
    "uuid": ["'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", "'00000000-0000-0000-0000-000000000000'"],
    "varbit": ["B'10101'", "B''"],
    "varchar": ["'varchar value'", "''"],
    "xid": ["'5'", "'4294967295'"],
    "xid8": ["'5'", "'18446744073709551615'"],
    "xml": ["'<a x=\"1\">t</a>'", "'fragment <b/> and text'"],
}


def column_name(type_name: str) -> str:
    return f"c_{type_name}"


def all_types_table_sql(table: str, rows: int = 6) -> str:
    """CREATE TABLE with an id key, one column per type and one array column per type, and `rows`
    rows (each type's samples in turn, NULLs on every third row, arrays of two samples and a NULL)."""
    cols = []
    for t in TYPE_SAMPLES:
        quoted = '"char"' if t == "char" else t
        cols.append(f"{column_name(t)} {quoted}")
        cols.append(f"{column_name(t)}_arr {quoted}[]")
    lines = [f"CREATE TABLE {table} (id int PRIMARY KEY, {', '.join(cols)});"]
    for r in range(rows):
        values = [str(r + 1)]
        for t, samples in TYPE_SAMPLES.items():
            quoted = '"char"' if t == "char" else t
            if r % 3 == 2:
                values += ["NULL", f"ARRAY[NULL]::{quoted}[]"]
                continue
            one = samples[r % len(samples)]
            two = samples[(r + 1) % len(samples)]
            values.append(f"{one}::{quoted}")
            values.append(f"ARRAY[{one}::{quoted}, NULL, {two}::{quoted}]")
        lines.append(f"INSERT INTO {table} VALUES ({', '.join(values)});")
    return "\n".join(lines) + "\n"


# Every table shape PostgreSQL allows, in schema `s` (see tests/worker/test_postgres_table_shapes.py).
TABLE_SHAPES_SQL = r"""
CREATE SCHEMA s;
CREATE TYPE s.mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN s.posint AS int CHECK (VALUE > 0);
CREATE TYPE s.pair AS (a int, b text);
CREATE TYPE s.floatrange AS RANGE (subtype = float8);

CREATE TABLE s.no_columns ();
INSERT INTO s.no_columns DEFAULT VALUES; INSERT INTO s.no_columns DEFAULT VALUES;
CREATE TABLE s.all_dropped (a int, b text);
INSERT INTO s.all_dropped VALUES (1, 'x'), (2, 'y'), (3, 'z');
ALTER TABLE s.all_dropped DROP COLUMN a, DROP COLUMN b;
CREATE TABLE s.only_generated (g int GENERATED ALWAYS AS (42) STORED);
INSERT INTO s.only_generated DEFAULT VALUES;

-- covering keys: the INCLUDE columns have no btree ordering; rows go in key order
CREATE TABLE s.covering (id int, b box, p point, j json, x xml, PRIMARY KEY (id) INCLUDE (b, p, j, x));
INSERT INTO s.covering SELECT 31 - i, box(point(i, i), point(0, 0)), point(i, -i), json_build_object('i', i),
    xmlelement(name e, i) FROM generate_series(1, 30) i;

-- keys of orderable types other than plain scalars
CREATE TABLE s.key_enum (m s.mood PRIMARY KEY, v int);
INSERT INTO s.key_enum VALUES ('happy', 1), ('sad', 2), ('ok', 3);
CREATE TABLE s.key_range (r int4range PRIMARY KEY);
INSERT INTO s.key_range VALUES ('[5,6)'), ('empty'), ('[1,9)'), ('(,3)');
CREATE TABLE s.key_array (a int[] PRIMARY KEY);
INSERT INTO s.key_array VALUES ('{2,1}'), ('{1}'), ('{}'), ('{1,NULL}');
CREATE TABLE s.key_composite (p s.pair PRIMARY KEY);
INSERT INTO s.key_composite VALUES (ROW(2, 'a')), (ROW(1, 'b')), (ROW(1, NULL));
CREATE TABLE s.key_icu (t text COLLATE "sv-x-icu" PRIMARY KEY);
INSERT INTO s.key_icu VALUES ('ö'), ('z'), ('a'), ('å'), ('ä'), ('B');

-- generated and dropped columns among the stored ones
CREATE TABLE s.gen_dropped (id int PRIMARY KEY, a int, gone text, b int GENERATED ALWAYS AS (a * 2) STORED, c text);
INSERT INTO s.gen_dropped (id, a, gone, c) SELECT i, i, 'g', 'c' || i FROM generate_series(1, 20) i;
ALTER TABLE s.gen_dropped DROP COLUMN gone;

-- inheritance (two levels) and partitions (sub-partitioned, with a default partition)
CREATE TABLE s.parent (id int PRIMARY KEY, v text);
CREATE TABLE s.child (extra int) INHERITS (s.parent);
CREATE TABLE s.grandchild (more text) INHERITS (s.child);
INSERT INTO s.parent VALUES (1, 'p');
INSERT INTO s.child VALUES (2, 'c', 20);
INSERT INTO s.grandchild VALUES (3, 'g', 30, 'm');
CREATE TABLE s.events (id int, at date NOT NULL, kind text NOT NULL, PRIMARY KEY (id, at, kind))
    PARTITION BY RANGE (at);
CREATE TABLE s.events_2025 PARTITION OF s.events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')
    PARTITION BY LIST (kind);
CREATE TABLE s.events_2025_a PARTITION OF s.events_2025 FOR VALUES IN ('a');
CREATE TABLE s.events_2025_rest PARTITION OF s.events_2025 DEFAULT;
CREATE TABLE s.events_other PARTITION OF s.events DEFAULT;
INSERT INTO s.events SELECT i, DATE '2024-06-01' + i * 3, (ARRAY['a', 'b'])[1 + i % 2]
    FROM generate_series(1, 300) i;

CREATE UNLOGGED TABLE s.scratch (k text PRIMARY KEY, v bytea);
INSERT INTO s.scratch SELECT 'k' || i, decode(md5(i::text), 'hex') FROM generate_series(1, 50) i;

-- wide rows: one value of 12 MB, and 1000 columns
CREATE TABLE s.big_value (id int PRIMARY KEY, t text, b bytea);
INSERT INTO s.big_value SELECT 1, string_agg(md5(i::text), ''), decode(string_agg(md5(i::text), ''), 'hex')
    FROM generate_series(1, 400000) i;
SELECT format('CREATE TABLE s.many_columns (id int PRIMARY KEY, %s)',
              string_agg(format('c%s int DEFAULT %s', i, i), ', ')) FROM generate_series(1, 1000) i \gexec
INSERT INTO s.many_columns (id) SELECT generate_series(1, 5);

-- user-defined types and arrays of them
CREATE TABLE s.custom (id int PRIMARY KEY, m s.mood, m_arr s.mood[], d s.posint, d_arr s.posint[],
    p s.pair, p_arr s.pair[], r s.floatrange, r_arr s.floatrange[]);
INSERT INTO s.custom VALUES
    (1, 'ok', '{sad,happy}', 7, '{1,2}', ROW(1, 'x,"y"'), ARRAY[ROW(2, NULL)::s.pair], '[1.5,2.5)', '{"[1,2)",empty}'),
    (2, NULL, '{}', NULL, NULL, ROW(NULL, NULL), '{}', 'empty', NULL);
"""
