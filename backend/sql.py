"""Raw SQL for the few queries the ORM cannot express portably (window functions).

Placeholders are written ``?`` and rewritten to ``$n`` for PostgreSQL.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from tortoise import connections


def _numbered(sql: str) -> str:
    counter = iter(range(1, 1_000_000))
    return re.sub(r"\?", lambda _m: f"${next(counter)}", sql)


def in_list(values: Sequence[Any]) -> str:
    return "(" + ",".join("?" for _ in values) + ")"


async def fetch(sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    conn = connections.get("default")
    if conn.capabilities.dialect == "postgres":
        sql = _numbered(sql)
    return await conn.execute_query_dict(sql, list(params))
