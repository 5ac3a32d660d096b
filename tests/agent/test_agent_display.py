"""agent.display: days left, colours, locations, the summary line and the progress line."""

from __future__ import annotations

import datetime as dt
import io

from agent import display

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.timezone.utc)


def test_days_left_rounds_down_and_goes_negative():
    assert display.days_left(NOW + dt.timedelta(days=3, hours=23), NOW) == 3
    assert display.days_left(NOW + dt.timedelta(days=14), NOW) == 14
    assert display.days_left(NOW - dt.timedelta(hours=1), NOW) == -1


def test_colours():
    assert display.colour_for(-5) == display.RED
    assert display.colour_for(13) == display.RED
    assert display.colour_for(14) == display.AMBER
    assert display.colour_for(29) == display.AMBER
    assert display.colour_for(30) == display.GREEN


def test_locations():
    assert display.location({"kind": "FILE", "path": "/a.pem", "index": 0}) == "/a.pem"
    assert display.location({"kind": "FILE", "path": "/b.pem", "index": 2}) == "/b.pem #2"
    assert display.location({"kind": "FILE", "path": "/k.jks", "index": 1, "alias": "web"}) == "/k.jks (web) #1"
    assert display.location({"kind": "PORT", "address": "::1", "port": 443, "index": 0}) == "[::1]:443"


def test_summary():
    assert display.summary(10, 4, 1, True) == "10 files read, 4 certificates found, 1 errors"
    assert display.summary(0, 0, 1, False).endswith("(incomplete: some paths could not be scanned)")


def test_progress_line_is_throttled_and_cleared():
    stream = io.StringIO()
    progress = display.ProgressLine(stream, interval=3600)
    progress(1, 0)
    progress(2, 1)  # within the interval: not shown
    progress.finish()
    assert stream.getvalue() == "\rscanning: 1 files read, 0 certificates found\r\x1b[K"
    quiet = io.StringIO()
    display.ProgressLine(quiet).finish()
    assert quiet.getvalue() == ""
