"""Multi-row writes in one statement, the same on SQLite and PostgreSQL.

The ORM writes one row per statement (or ``executemany`` without ids back);
ingest needs many rows and their ids in a constant number of statements. On
PostgreSQL a table's rows travel as one array per column (``INSERT ... SELECT
FROM unnest($1::text[], ...)``: one statement whatever the count, no parameter
limit); on SQLite as multi-row ``VALUES`` in chunks under its variable limit.
Both return the requested columns with ``RETURNING``.

Values are what the ORM would write: aware UTC datetimes (SQLite's adapter,
registered by tortoise, writes them as text the same way), JSON as text
encoded with the model field's own encoder, booleans as booleans.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterable, Sequence
from typing import Any

from backend import clock

SQLITE_CHUNK_VARIABLES = 30_000


@dataclasses.dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[tuple[str, str], ...]
    """(column, PostgreSQL array element type), in row order."""


def is_postgres(conn: Any) -> bool:
    return conn.capabilities.dialect == "postgres"


def numbered(sql: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$n``."""
    parts = sql.split("?")
    out = [parts[0]]
    for i, part in enumerate(parts[1:], 1):
        out.append(f"${i}{part}")
    return "".join(out)


async def fetch(conn: Any, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """Rows as dicts; ``sql`` uses ``?`` placeholders on both backends."""
    if is_postgres(conn):
        sql = numbered(sql)
    return await conn.execute_query_dict(sql, list(params))


async def execute(conn: Any, sql: str, params: Sequence[Any] = ()) -> int:
    """A write without result rows; returns the affected row count."""
    if is_postgres(conn):
        sql = numbered(sql)
    count, _ = await conn.execute_query(sql, list(params))
    return count


def in_ids(conn: Any, column: str, ids: Sequence[int]) -> tuple[str, list[Any]]:
    """``column IN (ids)`` as SQL (``?`` placeholders) and its parameters."""
    if is_postgres(conn):
        return f"{column} = ANY(?::int4[])", [list(ids)]
    return f"{column} IN ({','.join('?' * len(ids))})", list(ids)


def in_texts(conn: Any, column: str, values: Sequence[str]) -> tuple[str, list[Any]]:
    if is_postgres(conn):
        return f"{column} = ANY(?::text[])", [list(values)]
    return f"{column} IN ({','.join('?' * len(values))})", list(values)


async def insert(
    conn: Any,
    table: Table,
    rows: Sequence[Sequence[Any]],
    *,
    returning: Iterable[str] = (),
    conflict: str | None = None,
) -> list[dict[str, Any]]:
    """Insert ``rows``; ``conflict`` is the unique column list to ignore conflicts on.

    Returns the ``returning`` columns of the rows actually inserted.
    """
    if not rows:
        return []
    names = ", ".join(f'"{c}"' for c, _ in table.columns)
    tail = f" ON CONFLICT ({conflict}) DO NOTHING" if conflict else ""
    returning = list(returning)
    if returning:
        tail += " RETURNING " + ", ".join(f'"{c}"' for c in returning)
    if is_postgres(conn):
        arrays = ", ".join(f"${i}::{kind}[]" for i, (_, kind) in enumerate(table.columns, 1))
        sql = f'INSERT INTO "{table.name}" ({names}) SELECT * FROM unnest({arrays}){tail}'
        params = [list(column) for column in zip(*rows, strict=True)]
        if returning:
            return await conn.execute_query_dict(sql, params)
        await conn.execute_query(sql, params)
        return []
    width = len(table.columns)
    per_statement = max(1, SQLITE_CHUNK_VARIABLES // width)
    row_sql = "(" + ",".join("?" * width) + ")"
    found: list[dict[str, Any]] = []
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        sql = f'INSERT INTO "{table.name}" ({names}) VALUES {",".join([row_sql] * len(chunk))}{tail}'
        params = [value for row in chunk for value in row]
        if returning:
            found.extend(await conn.execute_query_dict(sql, params))
        else:
            await conn.execute_query(sql, params)
    return found


async def update(conn: Any, table: Table, rows: Sequence[Sequence[Any]]) -> None:
    """Set columns per row in one statement: ``table``'s first column is the key
    (``id``), the others are the columns to set, in ``rows``' order."""
    if not rows:
        return
    (key, _), *columns = table.columns
    if is_postgres(conn):
        names = ", ".join(f'"{c}"' for c, _ in table.columns)
        arrays = ", ".join(f"${i}::{kind}[]" for i, (_, kind) in enumerate(table.columns, 1))
        sets = ", ".join(f'"{c}" = v."{c}"' for c, _ in columns)
        sql = (f'UPDATE "{table.name}" AS t SET {sets} FROM unnest({arrays}) AS v({names})'
               f' WHERE t."{key}" = v."{key}"')  # fmt: skip
        await conn.execute_query(sql, [list(column) for column in zip(*rows, strict=True)])
        return
    width = len(table.columns)
    sets = ", ".join(f'"{c}" = v.column{i}' for i, (c, _) in enumerate(columns, 2))
    row_sql = "(" + ",".join("?" * width) + ")"
    per_statement = max(1, SQLITE_CHUNK_VARIABLES // width)
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        sql = (f'UPDATE "{table.name}" SET {sets} FROM (VALUES {",".join([row_sql] * len(chunk))}) AS v'
               f' WHERE "{table.name}"."{key}" = v.column1')  # fmt: skip
        await conn.execute_query(sql, [value for row in chunk for value in row])


async def claim_due(
    conn: Any,
    *,
    table: str,
    due: str,
    where: str,
    params: Sequence[Any],
    now: dt.datetime,
    lease_end: dt.datetime,
    limit: int,
    columns: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Claim up to ``limit`` rows of ``table`` whose ``due`` time has come (and
    ``where`` holds), pushing ``due`` to ``lease_end`` in the same transaction, so
    a second claimer (another worker) skips them until the lease ends.

    PostgreSQL: ``FOR UPDATE SKIP LOCKED`` in a CTE, whose RETURNING also gives
    the old due time; SQLite has one writer, so select-then-update inside the
    caller's transaction is enough. Each row: ``id``, ``due`` (the time it was
    due) and ``columns``, oldest due first.
    """
    if is_postgres(conn):
        extra = "".join(f", t.{c} AS {c}" for c in columns)
        rows = await fetch(
            conn,
            f"WITH c AS (SELECT id, {due} FROM {table} WHERE {where} AND {due} <= ?"
            f" ORDER BY {due}, id LIMIT ? FOR UPDATE SKIP LOCKED)"
            f" UPDATE {table} t SET {due} = ? FROM c WHERE t.id = c.id RETURNING t.id AS id, c.{due} AS due{extra}",
            [*params, now, limit, lease_end],
        )
    else:
        extra = "".join(f", {c}" for c in columns)
        rows = await fetch(
            conn,
            f"SELECT id, {due} AS due{extra} FROM {table} WHERE {where} AND {due} <= ? ORDER BY {due}, id LIMIT ?",
            [*params, now, limit],
        )
        if rows:
            ids, id_params = in_ids(conn, "id", [r["id"] for r in rows])
            await execute(conn, f"UPDATE {table} SET {due} = ? WHERE {ids}", [lease_end, *id_params])
    return sorted(rows, key=lambda r: (as_datetime(r["due"]), r["id"]))


def as_datetime(value: Any) -> dt.datetime | None:
    """A timestamp read by raw SQL (SQLite gives text) as aware UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        return clock.parse_instant(value)
    return clock.as_utc(value)


def as_json(value: Any) -> Any:
    """A JSON column read by raw SQL (text on both drivers unless decoded)."""
    if isinstance(value, (str, bytes)):
        return json.loads(value)
    return value
