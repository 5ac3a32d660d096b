"""Keyset pagination: stable under concurrent inserts, forward only.

A cursor is the opaque encoding of the sort key of the last row plus its id.
The next page is ``WHERE (k, id) > (:k, :id) ORDER BY k, id LIMIT first + 1``
(spelled as ``k > :k OR (k = :k AND id > :id)`` so it works on every backend);
the extra row answers ``hasNextPage``.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
from typing import Any, Generic, TypeVar

from tortoise.expressions import Q
from tortoise.queryset import QuerySet

from backend.errors import BadUserInput

T = TypeVar("T")

DEFAULT_PAGE = 50
MAX_PAGE = 500


@dataclasses.dataclass(frozen=True)
class Order:
    """Sort keys (the last one must be unique, normally ``id``) and one direction."""

    keys: tuple[str, ...]
    descending: bool = False

    def order_by(self) -> list[str]:
        prefix = "-" if self.descending else ""
        return [prefix + key for key in self.keys]


@dataclasses.dataclass
class Page(Generic[T]):
    items: list[T]
    cursors: list[str]
    has_next: bool

    @property
    def end_cursor(self) -> str | None:
        return self.cursors[-1] if self.cursors else None


def _encode_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return {"t": value.astimezone(dt.timezone.utc).isoformat()}
    return value


def _decode_value(value: Any) -> Any:
    if isinstance(value, dict) and "t" in value:
        return dt.datetime.fromisoformat(value["t"])
    return value


def encode_cursor(values: list[Any]) -> str:
    raw = json.dumps([_encode_value(v) for v in values], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, width: int) -> list[Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(values, list) or len(values) != width:
            raise ValueError("width")
        return [_decode_value(v) for v in values]
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise BadUserInput("Invalid cursor: it does not come from this list.") from exc


def check_first(first: int | None, default: int = DEFAULT_PAGE, maximum: int = MAX_PAGE) -> int:
    if first is None:
        return default
    if first < 0 or first > maximum:
        raise BadUserInput(f"`first` must be between 0 and {maximum}.")
    return first


def after_q(order: Order, values: list[Any]) -> Q:
    """Rows strictly after ``values`` in ``order``."""
    op = "lt" if order.descending else "gt"
    condition: Q | None = None
    for i in range(len(order.keys) - 1, -1, -1):
        here = Q(**{f"{order.keys[i]}__{op}": values[i]})
        for j in range(i):
            here &= Q(**{order.keys[j]: values[j]})
        condition = here if condition is None else (here | condition)
    assert condition is not None
    return condition


async def keyset_page(queryset: QuerySet, order: Order, first: int | None, after: str | None) -> Page:
    limit = check_first(first)
    if after:
        queryset = queryset.filter(after_q(order, decode_cursor(after, len(order.keys))))
    rows = await queryset.order_by(*order.order_by()).limit(limit + 1)
    has_next = len(rows) > limit
    rows = rows[:limit]
    cursors = [encode_cursor([getattr(row, key) for key in order.keys]) for row in rows]
    return Page(items=rows, cursors=cursors, has_next=has_next)
