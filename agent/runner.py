"""``run``: scan this host, report, wait, repeat.

The scan is :func:`agent.host.scan_host`, the same one ``scan`` prints;
:func:`report_once` sends it and :func:`run_forever` repeats it.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from agent import client, report
from agent.config import Config
from agent.host import scan_host

log = logging.getLogger("ctops.agent")


def backoff(config: Config) -> client.Backoff:
    return client.Backoff(config.retry_initial_seconds, config.retry_max_seconds, config.retry_attempts)


def _log_retry(exc: client.RequestFailed, delay: float) -> None:
    log.warning("report failed (%s); retrying in %.1f s", exc, delay)


def report_once(
    config: Config,
    *,
    paths: Sequence[str] | None = None,
    ports: Sequence[int] | str | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[dict[str, Any]]:
    """Scan, then send the report (in parts if large). Raises :class:`client.RequestFailed`."""
    if not config.server_url or not config.token:
        raise client.RequestFailed("not enrolled: the configuration has no server_url or token", retriable=False)
    result = scan_host(config, paths=paths, ports=ports)
    document = result.document
    parts = report.for_sending(document)
    connection = client.GraphQLClient(
        config.server_url, config.token, timeout=config.request_timeout_seconds, ca_file=config.ca_file
    )
    answers = client.send_report(connection, parts, backoff(config), sleep=sleep, on_retry=_log_retry)
    accepted = sum(int(a.get("accepted") or 0) for a in answers)
    rejected = sum(len(a.get("rejected") or []) for a in answers)
    log.info(
        "reported %d certificates from %d files (%d errors, %d parts): %d accepted, %d rejected",
        len(document["items"]),
        result.files_read,
        len(document["errors"]),
        len(parts),
        accepted,
        rejected,
    )
    for part, answer in zip(parts, answers):
        if answer.get("stale"):
            log.warning("the server has a newer scan of this host; part %d changed nothing", part["part"])
        for rejection in (answer.get("rejected") or [])[:20]:
            item = _item_at(part["items"], rejection.get("index"))
            log.warning("server rejected %s: %s", item, rejection.get("reason"))
    return answers


def _item_at(items: list[dict[str, Any]], index: object) -> str:
    if not isinstance(index, int) or not 0 <= index < len(items):
        return f"item {index}"
    item = items[index]
    where = item.get("path") or f"{item.get('address')}:{item.get('port')}"
    return f"{where} (index {item.get('index')}{', alias ' + item['alias'] if item.get('alias') else ''})"


def next_delay(interval_seconds: float, rng: random.Random) -> float:
    """The interval with +-10 % jitter, so a fleet started together spreads out."""
    return interval_seconds * rng.uniform(0.9, 1.1)


def run_forever(
    config: Config,
    *,
    paths: Sequence[str] | None = None,
    ports: Sequence[int] | str | None = None,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
    cycles: int | None = None,
) -> None:
    """Scan and report every ``interval_seconds`` (jittered), ``cycles`` times or forever.

    A report that still fails after its retries is logged; the next scan
    (with a new ``scanId``) replaces it.
    """
    rng = rng or random.Random()
    done = 0
    while cycles is None or done < cycles:
        try:
            report_once(config, paths=paths, ports=ports, sleep=sleep)
        except client.RequestFailed as exc:
            log.error("report failed: %s", exc)
        except Exception:  # noqa: BLE001 - a daemon outlives one bad cycle
            log.exception("scan failed")
        done += 1
        if cycles is None or done < cycles:
            sleep(next_delay(config.interval_seconds, rng))
