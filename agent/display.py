"""Human output of ``ctops-agent scan``: the table, the progress line, the summary.

Colours and the progress line appear only on terminals (and never with
``NO_COLOR`` set); redirected output is plain text.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import time
from typing import Any, TextIO

from agent import formats
from agent.findings import endpoint

RED, AMBER, GREEN, RESET = "\x1b[31m", "\x1b[33m", "\x1b[32m", "\x1b[0m"
CRITICAL_DAYS, WARNING_DAYS = 14, 30


def wants_colour(stream: TextIO) -> bool:
    return stream.isatty() and not os.environ.get("NO_COLOR")


def days_left(not_after: dt.datetime, now: dt.datetime) -> int:
    """Whole days until ``not_after`` (negative once expired)."""
    return int((not_after - now).total_seconds() // 86400)


def colour_for(days: int) -> str:
    return RED if days < CRITICAL_DAYS else AMBER if days < WARNING_DAYS else GREEN


def location(item: dict[str, Any]) -> str:
    if item["kind"] == "PORT":
        where = endpoint(item["address"], item["port"])
    else:
        where = item["path"]
    if item.get("alias") is not None:
        where += f" ({item['alias']})"
    if item["index"]:
        where += f" #{item['index']}"
    return where


def table(items: list[dict[str, Any]], now: dt.datetime, *, colour: bool) -> str:
    header = ("LOCATION", "COMMON NAME", "ISSUER", "NOT AFTER", "DAYS")
    rows = []
    for item in items:
        description = formats.describe(base64.b64decode(item["der"]))
        days = days_left(description.not_after, now)
        rows.append(
            (
                location(item),
                description.common_name or "-",
                description.issuer_common_name or "-",
                description.not_after.strftime("%Y-%m-%d %H:%M"),
                str(days),
                days,
            )
        )
    widths = [max([len(header[i])] + [len(row[i]) for row in rows]) for i in range(4)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header[:4], widths)) + "  " + header[4]]
    for *cells, days_text, days in rows:
        shown = f"{colour_for(days)}{days_text}{RESET}" if colour else days_text
        lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths)) + "  " + shown.rjust(len(header[4])))
    return "\n".join(lines) + "\n"


def summary(files_read: int, certificates: int, errors: int, complete: bool) -> str:
    line = f"{files_read} files read, {certificates} certificates found, {errors} errors"
    return line if complete else line + " (incomplete: some paths could not be scanned)"


class ProgressLine:
    """``\\r``-rewritten progress on a terminal, at most ten times a second."""

    def __init__(self, stream: TextIO, interval: float = 0.1) -> None:
        self.stream = stream
        self.interval = interval
        self._last: float | None = None
        self._shown = False

    def __call__(self, files_read: int, certificates: int) -> None:
        now = time.monotonic()
        if self._last is not None and now - self._last < self.interval:
            return
        self._last = now
        self._shown = True
        self.stream.write(f"\rscanning: {files_read} files read, {certificates} certificates found")
        self.stream.flush()

    def finish(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
