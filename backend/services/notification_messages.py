"""What a notification says: the webhook JSON, the Slack message, the e-mail.

:func:`alert_payload` builds the webhook body (the contract in
``docs/alerts.md``) from the database when a notification is first sent; it is
stored on the delivery so that retries send the very same body. Slack and
e-mail are renderings of that payload. Ids are the API's global ids. Nothing
here ever holds a secret.
"""

from __future__ import annotations

import datetime as dt
import html
from typing import Any

from backend import clock
from backend.models import Alert, AlertRule, Certificate, Host, NotificationChannel, TrackedSource
from backend.services import bulk, status

MAX_HOSTS = 1000
STATE_AFTER = {"FIRED": "FIRING", "ACKNOWLEDGED": "ACKNOWLEDGED", "RESOLVED": "RESOLVED"}


def _gid(type_name: str, pk: int | None) -> str | None:
    from backend.schema.core.relay import to_global_id  # the API's ids

    return None if pk is None else str(to_global_id(type_name, pk))


def _iso(value: dt.datetime | None) -> str | None:
    return clock.as_utc(value).isoformat() if value is not None else None


async def alert_hostnames(alert: Alert, limit: int = MAX_HOSTS) -> tuple[list[str], int]:
    """The hosts an alert is about: a HOST_STALE alert's host; for a certificate,
    the hosts holding it (while open) or held it during the alert (once resolved)."""
    from tortoise import connections

    if alert.host_id is not None:
        host = await Host.get_or_none(id=alert.host_id)
        return ([host.hostname] if host else []), (1 if host else 0)
    if alert.certificate_id is None:
        return [], 0
    conn = connections.get("default")
    params: list[Any] = [alert.certificate_id]
    during = ""
    if alert.resolved_at is not None:
        during = " OR l.removed_at >= ?"
        params.append(alert.fired_at)
    rows = await bulk.fetch(
        conn,
        "SELECT DISTINCT h.hostname FROM certificate_location l JOIN host h ON h.id = l.host_id"
        f" WHERE l.certificate_id = ? AND (l.removed_at IS NULL{during}) ORDER BY h.hostname",
        params,
    )
    names = [r["hostname"] for r in rows]
    return names[:limit], len(names)


async def alert_payload(alert_id: int, event: str, now: dt.datetime | None = None) -> dict[str, Any]:
    now = now or clock.now()
    alert = await Alert.get(id=alert_id)
    rule = await AlertRule.get(id=alert.rule_id)
    certificate = await Certificate.get_or_none(id=alert.certificate_id) if alert.certificate_id else None
    source = await TrackedSource.get_or_none(id=alert.tracked_source_id) if alert.tracked_source_id else None
    if certificate is None and source is not None and source.certificate_id is not None:
        certificate = await Certificate.get_or_none(id=source.certificate_id)
    hosts, host_count = await alert_hostnames(alert)
    host = await Host.get_or_none(id=alert.host_id) if alert.host_id else None
    return {
        "event": event,
        "alert": {
            "id": _gid("Alert", alert.id),
            "kind": alert.kind.value if hasattr(alert.kind, "value") else alert.kind,
            "state": STATE_AFTER.get(event, alert.state),
            "severity": alert.severity.value if hasattr(alert.severity, "value") else alert.severity,
            "firedAt": _iso(alert.fired_at),
            "resolution": (getattr(alert.resolution, "value", alert.resolution) if event == "RESOLVED" else None),
            "acknowledgedUntil": _iso(alert.acknowledged_until) if event == "ACKNOWLEDGED" else None,
            "acknowledgedBy": alert.acknowledged_by if event == "ACKNOWLEDGED" else None,
        },
        "rule": {"id": _gid("AlertRule", rule.id), "name": rule.name, "thresholdDays": rule.threshold_days,
                 "failingForHours": rule.failing_for_hours},  # fmt: skip
        "certificate": _certificate(certificate, now) if certificate is not None else None,
        "hosts": hosts,
        "hostCount": host_count,
        "trackedSource": (
            {"id": _gid("TrackedSource", source.id), "url": source.url, "name": source.name,
             "lastError": source.last_error, "failingSince": _iso(source.failing_since)}
            if source is not None else None
        ),  # fmt: skip
        "host": (
            {"id": _gid("Host", host.id), "hostname": host.hostname, "lastReportAt": _iso(host.last_report_at)}
            if host is not None else None
        ),  # fmt: skip
    }


def _certificate(c: Certificate, now: dt.datetime) -> dict[str, Any]:
    return {
        "id": _gid("Certificate", c.id),
        "fingerprintSha256": c.fingerprint_sha256,
        "commonName": c.common_name,
        "sans": [s["value"] if isinstance(s, dict) else str(s) for s in (c.sans or [])],
        "issuer": c.issuer,
        "notAfter": _iso(c.not_after),
        "daysRemaining": status.days_remaining(clock.as_utc(c.not_after), now),
    }


def test_payload(channel: NotificationChannel, now: dt.datetime | None = None) -> dict[str, Any]:
    now = now or clock.now()
    return {
        "event": "TEST",
        "alert": None,
        "rule": None,
        "certificate": None,
        "hosts": [],
        "hostCount": 0,
        "trackedSource": None,
        "host": None,
        "channel": {"id": _gid("NotificationChannel", channel.id), "name": channel.name},
        "message": f"Test notification from CT-Ops Certificates to channel {channel.name!r}.",
    }


# --- words ----------------------------------------------------------------------------------


def _subject_line(p: dict[str, Any]) -> str:
    """One line saying what the alert is about."""
    if p["event"] == "TEST":
        return p["message"]
    alert, cert = p["alert"], p["certificate"]
    if alert["kind"] == "EXPIRY" and cert is not None:
        name = cert["commonName"] or (cert["sans"][0] if cert["sans"] else cert["fingerprintSha256"][:16])
        days = cert["daysRemaining"]
        when = f"expired {-days} day(s) ago" if days < 0 else f"expires in {days} day(s)"
        return f"Certificate {name} {when} ({cert['notAfter'][:10]})"
    if alert["kind"] == "SOURCE_FAILING" and p["trackedSource"] is not None:
        return f"Tracked URL {p['trackedSource']['url']} is failing since {(p['trackedSource']['failingSince'] or '?')[:16]}"
    if alert["kind"] == "HOST_STALE" and p["host"] is not None:
        return f"Agent on {p['host']['hostname']} silent since {(p['host']['lastReportAt'] or 'enrolment')[:16]}"
    return f"{alert['kind']} alert"


def _headline(p: dict[str, Any]) -> str:
    if p["event"] == "TEST":
        return "CT-Ops test notification"
    alert = p["alert"]
    verb = {"FIRED": "FIRING", "RESOLVED": f"RESOLVED ({alert['resolution']})", "ACKNOWLEDGED": "ACKNOWLEDGED"}[p["event"]]
    return f"[{alert['severity']}] {verb}: {p['rule']['name']}"


def _facts(p: dict[str, Any]) -> list[tuple[str, str]]:
    facts: list[tuple[str, str]] = []
    cert = p["certificate"]
    if cert is not None:
        facts += [("Common name", cert["commonName"] or "(none)"), ("Not after", cert["notAfter"]),
                  ("Days remaining", str(cert["daysRemaining"])), ("Fingerprint (SHA-256)", cert["fingerprintSha256"])]  # fmt: skip
        if cert["sans"]:
            facts.append(("Names", ", ".join(cert["sans"][:10]) + (" …" if len(cert["sans"]) > 10 else "")))
    if p["hosts"]:
        shown = ", ".join(p["hosts"][:10])
        more = p["hostCount"] - min(10, len(p["hosts"]))
        facts.append((f"Hosts ({p['hostCount']})", shown + (f" and {more} more" if more > 0 else "")))
    if p["trackedSource"] is not None:
        facts.append(("Tracked URL", p["trackedSource"]["url"] or p["trackedSource"]["name"] or "(upload)"))
        if p["trackedSource"]["lastError"]:
            facts.append(("Last error", p["trackedSource"]["lastError"]))
    if p["event"] == "ACKNOWLEDGED":
        until = p["alert"]["acknowledgedUntil"] or "resolved"
        facts.append(("Acknowledged", f"by {p['alert']['acknowledgedBy']} until {until}"))
    return facts


def slack_message(p: dict[str, Any]) -> dict[str, Any]:
    """An incoming-webhook message: ``text`` (the notification fallback) and blocks."""
    headline = _headline(p)
    summary = _subject_line(p)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": headline[:150], "emoji": False}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _slack_escape(summary)[:3000]}},
    ]
    facts = _facts(p)
    if facts:
        blocks.append({
            "type": "section",
            "fields": [{"type": "mrkdwn", "text": f"*{_slack_escape(k)}*\n{_slack_escape(v)}"[:2000]} for k, v in facts[:10]],
        })  # fmt: skip
    context = f"CT-Ops Certificates · {p['event']}"
    if p.get("alert"):
        context += f" · alert {p['alert']['id']}"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _slack_escape(context)}]})
    return {"text": f"{headline}: {summary}"[:3000], "blocks": blocks}


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def email_message(p: dict[str, Any]) -> tuple[str, str, str]:
    """(subject, plain text, HTML)."""
    headline = _headline(p)
    summary = _subject_line(p)
    subject = f"[CT-Ops] {headline}: {summary}"[:250]
    facts = _facts(p)
    width = max((len(k) for k, _ in facts), default=0)
    text_lines = [headline, "", summary, ""]
    text_lines += [f"{k.ljust(width)}  {v}" for k, v in facts]
    if p.get("alert"):
        text_lines += ["", f"Alert id: {p['alert']['id']}"]
    text_lines += ["", "-- ", "CT-Ops Certificates"]
    rows = "".join(
        f"<tr><th align=\"left\" style=\"padding:2px 12px 2px 0\">{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
        for k, v in facts
    )
    body = (
        "<!DOCTYPE html><html><body style=\"font-family:sans-serif\">"
        f"<h2>{html.escape(headline)}</h2><p>{html.escape(summary)}</p>"
        f"<table>{rows}</table>"
        + (f"<p style=\"color:#666\">Alert id: {html.escape(p['alert']['id'])}</p>" if p.get("alert") else "")
        + "<p style=\"color:#666\">CT-Ops Certificates</p></body></html>"
    )
    return subject, "\n".join(text_lines) + "\n", body
