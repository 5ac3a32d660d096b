"""Opaque global ids, the Node interface, and keyset connections."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import strawberry

from backend.errors import BadUserInput
from backend.schema.core.access import ANYONE, READ, access, allow
from backend.services.pagination import Page

NodeType = TypeVar("NodeType")


def to_global_id(type_name: str, pk: int) -> strawberry.ID:
    return strawberry.ID(base64.urlsafe_b64encode(f"{type_name}:{pk}".encode()).decode().rstrip("="))


def from_global_id(global_id: str, expected: str | None = None) -> tuple[str, int]:
    """``(type name, primary key)``; BAD_USER_INPUT when it isn't one of our ids."""
    try:
        raw = base64.urlsafe_b64decode((global_id + "=" * (-len(global_id) % 4)).encode()).decode()
        type_name, _, pk = raw.partition(":")
        value = int(pk)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadUserInput(f"{global_id!r} is not a valid id.") from exc
    if expected is not None and type_name != expected:
        raise BadUserInput(f"{global_id!r} is not a {expected} id.")
    return type_name, value


def decode_id(global_id: str | None, expected: str) -> int | None:
    return None if global_id is None else from_global_id(global_id, expected)[1]


@access(READ)
@strawberry.interface(description="An object with an opaque, global id.")
class Node:
    id: strawberry.ID = strawberry.field(metadata=allow(ANYONE))


@access(ANYONE)
@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@access(ANYONE)
@strawberry.type
class Edge(Generic[NodeType]):
    cursor: str
    node: NodeType


@access(ANYONE)
@strawberry.type
class Connection(Generic[NodeType]):
    """A keyset-paginated page. ``totalCount`` runs its COUNT only when selected."""

    edges: list[Edge[NodeType]]
    page_info: PageInfo
    _count: strawberry.Private[Callable[[], Awaitable[int]]]

    @strawberry.field
    async def total_count(self) -> int:
        return await self._count()

    @classmethod
    def from_page(cls, page: Page, wrap: Callable, count: Callable[[], Awaitable[int]]) -> Connection:
        return cls(
            edges=[Edge(cursor=c, node=wrap(item)) for c, item in zip(page.cursors, page.items, strict=True)],
            page_info=PageInfo(has_next_page=page.has_next, end_cursor=page.end_cursor),
            _count=count,
        )
