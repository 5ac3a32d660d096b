"""Heartbeats: each periodic runner records its last beat; /readyz reads it."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import socket

from backend import clock
from backend.models import Heartbeat

WORKER = "worker"
EMBEDDED = "embedded"


async def beat(component: str) -> dt.datetime:
    now = clock.now()
    detail = {"host": socket.gethostname(), "pid": os.getpid()}
    updated = await Heartbeat.filter(component=component).update(beat_at=now, detail=detail)
    if not updated:
        await Heartbeat.get_or_create(component=component, defaults={"beat_at": now, "detail": detail})
        await Heartbeat.filter(component=component).update(beat_at=now, detail=detail)
    return now


@dataclasses.dataclass(frozen=True)
class BeatState:
    component: str
    last_beat_at: dt.datetime | None
    age_seconds: float | None
    fresh: bool


async def state(component: str, stale_after_seconds: float) -> BeatState:
    row = await Heartbeat.get_or_none(component=component)
    if row is None:
        return BeatState(component, None, None, False)
    age = (clock.now() - row.beat_at).total_seconds()
    return BeatState(component, row.beat_at, round(age, 3), age <= stale_after_seconds)
