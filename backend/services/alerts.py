"""Alert rules and alerts: fire once, resolve by themselves, notify on every state change.

Rules (:class:`backend.models.AlertRule`):

- EXPIRY matches a *current* certificate when ``notAfter <= now + thresholdDays
  x 24 h``: the ``expiresWithinDays`` test of the inventory
  (:func:`backend.services.inventory.expires_within_q`), with expired
  certificates still matching (an expired certificate still in place is the
  outage the alert warns of: it resolves when the certificate is renewed or
  removed, never because the deadline passed). The filter (hostId, search,
  source) is the ``certificates`` list's own filter; CA certificates only with
  ``includeCa``.
- SOURCE_FAILING matches a tracked URL failing for at least ``failingForHours``
  (``failing_since``); the filter's ``search`` matches its URL or name.
- HOST_STALE matches a host in status STALE (:func:`backend.services.hosts.host_status`);
  ``hostId`` and ``search`` (hostname) filter it.

Evaluation (:func:`evaluate`) runs for everything in the sweep, and for what an
operation touched right after it commits (an agent report, a refresh, a track,
an import, an untrack, a retirement, a rule change), in its own short
transaction. Reads come first, outside any transaction: one query per rule for
the matches, one for the open alerts of the subjects in scope. Only when
something changes does a transaction open, and then it writes in bulk:

- resolutions: ``UPDATE … SET open_key = NULL … WHERE open_key IS NOT NULL
  RETURNING id`` (rows locked in id order on PostgreSQL): of two evaluators
  resolving the same alert, one gets the row back and notifies;
- new alerts: ``INSERT … ON CONFLICT (open_key) DO NOTHING RETURNING id`` in
  ``open_key`` order: of two evaluators firing the same (rule, subject), one
  inserts and notifies, the other inserts nothing;
- acknowledgements whose ``until`` has passed (the sweep): back to FIRING;
- for each change, one PENDING delivery per enabled channel of the rule (one
  ``INSERT … SELECT`` per kind of change) and one message on the bus's
  ``alerts`` topic after commit.

An evaluator that read before another committed may act on an old picture (say,
fire for a certificate an uncommitted report is removing); the next evaluation
(at the latest the next sweep) corrects it. Nothing is ever duplicated.

Why an alert resolves: EXPIRY — the certificate is no longer anywhere: RENEWED
if a place got a successor (``renewed_from``), UNTRACKED if the place it left
was an untracked source, else REMOVED; still current but no longer matching
(rule edited or disabled): NO_LONGER_MATCHES. SOURCE_FAILING / HOST_STALE —
RECOVERED when the source succeeds or the host reports again, UNTRACKED for an
untracked source, REMOVED for a retired host. A deleted rule: RULE_DELETED.

Acknowledgement: ``acknowledge`` sets ACKNOWLEDGED (until a time, or until
resolved) and notifies once. A new EXPIRY alert for a certificate that already
has an acknowledged alert of the same or higher severity starts acknowledged
too, silently; a more severe one fires and notifies.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import types
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from tortoise import connections

from backend import clock
from backend.db import after_commit, transaction
from backend.errors import BadUserInput, NotFound
from backend.models import (
    Alert,
    AlertResolution,
    AlertRule,
    AlertRuleChannel,
    AlertRuleKind,
    AlertSeverity,
    AlertState,
    DeliveryKind,
    DeliveryStatus,
    Host,
    NotificationChannel,
    TrackedSource,
)
from backend.models.alert import SEVERITY_RANK
from backend.services import bulk, inventory
from backend.services.hosts import HostStatus, host_status
from backend.services.pagination import Order, Page, keyset_page

log = logging.getLogger("ctops.alerts")

TOPIC = "alerts"
MAX_THRESHOLD_DAYS = 3650
MAX_FAILING_HOURS = 24 * 365

_EXPIRY = AlertRuleKind.EXPIRY
_SOURCE = AlertRuleKind.SOURCE_FAILING
_HOST = AlertRuleKind.HOST_STALE
_SUBJECT = {_EXPIRY: "certificate_id", _SOURCE: "tracked_source_id", _HOST: "host_id"}


# --- default rules ---------------------------------------------------------------------------

DEFAULT_RULES: tuple[dict[str, Any], ...] = (
    dict(default_key="expiry-30", name="Expires within 30 days", kind=_EXPIRY, threshold_days=30,
         severity=AlertSeverity.WARNING),
    dict(default_key="expiry-7", name="Expires within 7 days", kind=_EXPIRY, threshold_days=7,
         severity=AlertSeverity.CRITICAL),
    dict(default_key="source-failing-24h", name="Tracked URL failing for 24 hours", kind=_SOURCE,
         failing_for_hours=24, severity=AlertSeverity.WARNING),
    dict(default_key="agent-silent", name="Agent silent", kind=_HOST, severity=AlertSeverity.WARNING),
)  # fmt: skip

RULE_TABLE = bulk.Table(
    "alert_rule",
    (
        ("name", "text"), ("kind", "text"), ("threshold_days", "int4"), ("failing_for_hours", "int4"),
        ("severity", "text"), ("include_ca", "bool"), ("enabled", "bool"), ("default_key", "text"),
        ("created_at", "timestamptz"), ("updated_at", "timestamptz"),
    ),
)  # fmt: skip


async def ensure_default_rules(now: dt.datetime | None = None) -> int:
    """Create the default rules a database has never had (idempotent, safe from
    several processes at once: ``default_key`` is unique). Returns how many were created."""
    now = now or clock.now()
    rows = [
        (r["name"], r["kind"].value, r.get("threshold_days"), r.get("failing_for_hours"), r["severity"].value,
         False, True, r["default_key"], now, now)
        for r in DEFAULT_RULES
    ]  # fmt: skip
    async with transaction() as conn:
        inserted = await bulk.insert(conn, RULE_TABLE, rows, returning=("id",), conflict='"default_key"')
    return len(inserted)


# --- rules: reading and writing -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RuleFilter:
    host_id: int | None = None
    search: str | None = None
    source: inventory.CertificateSource | None = None


@dataclasses.dataclass(frozen=True)
class RuleInput:
    name: str
    kind: AlertRuleKind = _EXPIRY
    threshold_days: int | None = None
    failing_for_hours: int | None = None
    severity: AlertSeverity = AlertSeverity.WARNING
    filter: RuleFilter = RuleFilter()
    include_ca: bool = False
    channel_ids: tuple[int, ...] = ()
    enabled: bool = True


_UNSET: Any = object()


async def list_rules() -> list[AlertRule]:
    return await AlertRule.filter(deleted_at__isnull=True).order_by("id")


async def get_rule(rule_id: int) -> AlertRule | None:
    return await AlertRule.get_or_none(id=rule_id)


def _validate(data: RuleInput) -> RuleInput:
    name = (data.name or "").strip()
    if not name or len(name) > 255:
        raise BadUserInput("A rule needs a name of 1 to 255 characters.")
    kind = AlertRuleKind(data.kind)
    threshold, hours = data.threshold_days, data.failing_for_hours
    if kind is _EXPIRY:
        if threshold is None:
            raise BadUserInput("An EXPIRY rule needs thresholdDays.")
        if not 0 <= threshold <= MAX_THRESHOLD_DAYS:
            raise BadUserInput(f"thresholdDays must be between 0 and {MAX_THRESHOLD_DAYS}.")
    elif threshold is not None:
        raise BadUserInput("thresholdDays is for EXPIRY rules only.")
    if kind is _SOURCE:
        hours = 24 if hours is None else hours
        if not 0 <= hours <= MAX_FAILING_HOURS:
            raise BadUserInput(f"failingForHours must be between 0 and {MAX_FAILING_HOURS}.")
    elif hours is not None:
        raise BadUserInput("failingForHours is for SOURCE_FAILING rules only.")
    f = data.filter or RuleFilter()
    search = (f.search or "").strip() or None
    if search is not None and len(search) > 256:
        raise BadUserInput("filter.search is limited to 256 characters.")
    if f.source is not None and kind is not _EXPIRY:
        raise BadUserInput("filter.source is for EXPIRY rules only.")
    if f.host_id is not None and kind is _SOURCE:
        raise BadUserInput("filter.hostId does not apply to SOURCE_FAILING rules (a tracked URL has no host).")
    if data.include_ca and kind is not _EXPIRY:
        raise BadUserInput("includeCa is for EXPIRY rules only.")
    return dataclasses.replace(
        data, name=name, kind=kind, threshold_days=threshold, failing_for_hours=hours,
        severity=AlertSeverity(data.severity), filter=RuleFilter(f.host_id, search, f.source),
        channel_ids=tuple(dict.fromkeys(data.channel_ids or ())),
    )  # fmt: skip


async def _check_references(data: RuleInput) -> None:
    if data.filter.host_id is not None and not await Host.exists(id=data.filter.host_id):
        raise NotFound("filter.hostId names no host.")
    if data.channel_ids:
        found = set(
            await NotificationChannel.filter(id__in=list(data.channel_ids), deleted_at__isnull=True).values_list("id", flat=True)
        )
        missing = [i for i in data.channel_ids if i not in found]
        if missing:
            raise NotFound(f"{len(missing)} of channelIds name no notification channel.")


def _rule_values(data: RuleInput) -> dict[str, Any]:
    return {
        "name": data.name,
        "kind": data.kind,
        "threshold_days": data.threshold_days,
        "failing_for_hours": data.failing_for_hours,
        "severity": data.severity,
        "filter_host_id": data.filter.host_id,
        "filter_search": data.filter.search,
        "filter_source": data.filter.source.value if data.filter.source else None,
        "include_ca": data.include_ca,
        "enabled": data.enabled,
    }


async def _set_channels(rule_id: int, channel_ids: Sequence[int]) -> None:
    await AlertRuleChannel.filter(rule_id=rule_id).delete()
    if channel_ids:
        await AlertRuleChannel.bulk_create([AlertRuleChannel(rule_id=rule_id, channel_id=c) for c in channel_ids])


async def create_rule(data: RuleInput) -> AlertRule:
    """Create a rule and evaluate it at once (what it matches fires now)."""
    data = _validate(data)
    await _check_references(data)
    now = clock.now()
    async with transaction():
        rule = await AlertRule.create(**_rule_values(data), created_at=now, updated_at=now)
        await _set_channels(rule.id, data.channel_ids)
    await evaluate_rule(rule.id)
    return rule


def rule_input(rule: AlertRule, channel_ids: Sequence[int]) -> RuleInput:
    return RuleInput(
        name=rule.name, kind=AlertRuleKind(rule.kind), threshold_days=rule.threshold_days,
        failing_for_hours=rule.failing_for_hours, severity=AlertSeverity(rule.severity),
        filter=RuleFilter(rule.filter_host_id, rule.filter_search,
                          inventory.CertificateSource(rule.filter_source) if rule.filter_source else None),
        include_ca=rule.include_ca, channel_ids=tuple(channel_ids), enabled=rule.enabled,
    )  # fmt: skip


async def rule_channel_ids(rule_id: int) -> list[int]:
    return list(await AlertRuleChannel.filter(rule_id=rule_id).order_by("channel_id").values_list("channel_id", flat=True))


async def update_rule(rule_id: int, **changes: Any) -> AlertRule:
    """Change the given fields (``kind`` cannot change); then re-evaluate the rule:
    new matches fire, alerts it no longer matches resolve NO_LONGER_MATCHES."""
    rule = await AlertRule.get_or_none(id=rule_id, deleted_at__isnull=True)
    if rule is None:
        raise NotFound("No alert rule with this id.")
    current = rule_input(rule, await rule_channel_ids(rule_id))
    given = {k: v for k, v in changes.items() if v is not _UNSET}
    if "kind" in given and AlertRuleKind(given["kind"]) is not current.kind:
        raise BadUserInput("A rule's kind cannot change: create another rule.")
    data = _validate(dataclasses.replace(current, **given))
    await _check_references(data)
    async with transaction():
        await AlertRule.filter(id=rule_id).update(**_rule_values(data), updated_at=clock.now())
        if "channel_ids" in given:
            await _set_channels(rule_id, data.channel_ids)
    await evaluate_rule(rule_id)
    return await AlertRule.get(id=rule_id)


async def delete_rule(rule_id: int) -> bool:
    """Delete a rule: its open alerts resolve RULE_DELETED (and notify its channels)."""
    updated = await AlertRule.filter(id=rule_id, deleted_at__isnull=True).update(deleted_at=clock.now(), enabled=False)
    if not updated:
        raise NotFound("No alert rule with this id.")
    await evaluate_rule(rule_id)
    return True


# --- reading alerts -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AlertQuery:
    states: tuple[AlertState, ...] | None = None
    severities: tuple[AlertSeverity, ...] | None = None
    kinds: tuple[AlertRuleKind, ...] | None = None
    certificate_id: int | None = None


ALERT_ORDER = Order(("id",), descending=True)


def alerts_queryset(query: AlertQuery):
    qs = Alert.all()
    if query.states:
        qs = qs.filter(state__in=[AlertState(s).value for s in query.states])
    if query.severities:
        qs = qs.filter(severity__in=[AlertSeverity(s).value for s in query.severities])
    if query.kinds:
        qs = qs.filter(kind__in=[AlertRuleKind(k).value for k in query.kinds])
    if query.certificate_id is not None:
        qs = qs.filter(certificate_id=query.certificate_id)
    return qs


async def list_alerts(query: AlertQuery, first: int | None = None, after: str | None = None) -> Page[Alert]:
    """Newest first."""
    return await keyset_page(alerts_queryset(query), ALERT_ORDER, first, after)


async def get_alert(alert_id: int) -> Alert | None:
    return await Alert.get_or_none(id=alert_id)


# --- evaluation ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Scope:
    """What to evaluate. ``None`` means everything of that sort."""

    certificate_ids: frozenset[int] | None = None
    source_ids: frozenset[int] | None = None
    host_ids: frozenset[int] | None = None
    kinds: frozenset[AlertRuleKind] | None = None
    rule_ids: frozenset[int] | None = None
    refire: bool = False
    """Return acknowledged alerts whose ``until`` has passed to FIRING (the sweep)."""

    def subjects(self, kind: AlertRuleKind) -> frozenset[int] | None:
        return {_EXPIRY: self.certificate_ids, _SOURCE: self.source_ids, _HOST: self.host_ids}[kind]

    def covers(self, kind: AlertRuleKind) -> bool:
        if self.kinds is not None and kind not in self.kinds:
            return False
        subjects = self.subjects(kind)
        return subjects is None or bool(subjects)


EVERYTHING = Scope(refire=True)


@dataclasses.dataclass(frozen=True)
class Change:
    alert_id: int
    change: str
    """FIRED, ACKNOWLEDGED or RESOLVED."""
    severity: str
    notify: bool = True


@dataclasses.dataclass(frozen=True)
class Evaluation:
    fired: int = 0
    resolved: int = 0
    refired: int = 0
    changes: tuple[Change, ...] = ()


@dataclasses.dataclass(frozen=True)
class _Rule:
    id: int
    kind: AlertRuleKind
    severity: AlertSeverity
    threshold_days: int | None
    failing_for_hours: int | None
    filter_host_id: int | None
    filter_search: str | None
    filter_source: str | None
    include_ca: bool


@dataclasses.dataclass(frozen=True)
class _Fire:
    rule: _Rule
    subject: int
    key: str


async def _enabled_rules(scope: Scope) -> list[_Rule]:
    qs = AlertRule.filter(enabled=True, deleted_at__isnull=True)
    if scope.rule_ids is not None:
        qs = qs.filter(id__in=sorted(scope.rule_ids))
    if scope.kinds is not None:
        qs = qs.filter(kind__in=[k.value for k in scope.kinds])
    rows = await qs.order_by("id").values(
        "id", "kind", "severity", "threshold_days", "failing_for_hours", "filter_host_id", "filter_search",
        "filter_source", "include_ca",
    )  # fmt: skip
    return [
        _Rule(r["id"], AlertRuleKind(r["kind"]), AlertSeverity(r["severity"]), r["threshold_days"],
              r["failing_for_hours"], r["filter_host_id"], r["filter_search"], r["filter_source"], bool(r["include_ca"]))
        for r in rows
    ]  # fmt: skip


async def _expiry_matches(rules: list[_Rule], subjects: frozenset[int] | None, now: dt.datetime) -> dict[tuple[int, int], str]:
    """(rule id, certificate id) -> open key, for every match."""
    found: dict[tuple[int, int], str] = {}
    for rule in rules:
        query = inventory.CertificateQuery(
            search=rule.filter_search,
            host_id=rule.filter_host_id,
            source=inventory.CertificateSource(rule.filter_source) if rule.filter_source else None,
            is_ca=None if rule.include_ca else False,
        )
        qs = inventory.certificates_queryset(query, now).filter(
            inventory.expires_within_q(rule.threshold_days or 0, now, include_expired=True)
        )
        if subjects is not None:
            qs = qs.filter(id__in=sorted(subjects))
        for cid, fingerprint in await qs.values_list("id", "fingerprint_sha256"):
            found[(rule.id, cid)] = f"rule:{rule.id}:cert:{fingerprint}"
    return found


async def _source_matches(rules: list[_Rule], subjects: frozenset[int] | None, now: dt.datetime) -> dict[tuple[int, int], str]:
    from tortoise.expressions import Q

    found: dict[tuple[int, int], str] = {}
    for rule in rules:
        since = now - dt.timedelta(hours=rule.failing_for_hours or 0)
        qs = TrackedSource.filter(
            untracked_at__isnull=True, consecutive_failures__gt=0, failing_since__isnull=False, failing_since__lte=since
        )
        if rule.filter_search:
            qs = qs.filter(Q(url__icontains=rule.filter_search) | Q(name__icontains=rule.filter_search))
        if subjects is not None:
            qs = qs.filter(id__in=sorted(subjects))
        for sid in await qs.values_list("id", flat=True):
            found[(rule.id, sid)] = f"rule:{rule.id}:source:{sid}"
    return found


async def _stale_hosts(subjects: frozenset[int] | None, now: dt.datetime) -> list[dict[str, Any]]:
    qs = Host.filter(retired_at__isnull=True)
    if subjects is not None:
        qs = qs.filter(id__in=sorted(subjects))
    rows = await qs.values("id", "hostname", "last_report_at", "created_at", "interval_seconds", "retired_at")
    return [r for r in rows if host_status(types.SimpleNamespace(**r), now) is HostStatus.STALE]


async def _host_matches(rules: list[_Rule], subjects: frozenset[int] | None, now: dt.datetime) -> dict[tuple[int, int], str]:
    if not rules:
        return {}
    stale = await _stale_hosts(subjects, now)
    found: dict[tuple[int, int], str] = {}
    for rule in rules:
        needle = (rule.filter_search or "").lower()
        for host in stale:
            if rule.filter_host_id is not None and host["id"] != rule.filter_host_id:
                continue
            if needle and needle not in host["hostname"].lower():
                continue
            found[(rule.id, host["id"])] = f"rule:{rule.id}:host:{host['id']}"
    return found


_MATCHERS = {_EXPIRY: _expiry_matches, _SOURCE: _source_matches, _HOST: _host_matches}


async def _open_alerts(kind: AlertRuleKind, scope: Scope) -> list[dict[str, Any]]:
    qs = Alert.filter(kind=kind.value, open_key__isnull=False)
    subjects = scope.subjects(kind)
    if subjects is not None:
        qs = qs.filter(**{f"{_SUBJECT[kind]}__in": sorted(subjects)})
    if scope.rule_ids is not None:
        qs = qs.filter(rule_id__in=sorted(scope.rule_ids))
    rows = await qs.values("id", "rule_id", _SUBJECT[kind], "state", "severity")
    for row in rows:
        row["subject"] = row[_SUBJECT[kind]]
    return rows


async def _resolutions(
    kind: AlertRuleKind, gone: list[dict[str, Any]], enabled: set[int], now: dt.datetime
) -> dict[int, AlertResolution]:
    """alert id -> why it resolves."""
    out: dict[int, AlertResolution] = {}
    orphaned = sorted({a["rule_id"] for a in gone if a["rule_id"] not in enabled})
    deleted: set[int] = set()
    if orphaned:
        deleted = set(await AlertRule.filter(id__in=orphaned, deleted_at__isnull=False).values_list("id", flat=True))
    live = []
    for a in gone:
        if a["rule_id"] in deleted:
            out[a["id"]] = AlertResolution.RULE_DELETED
        elif a["rule_id"] not in enabled:
            out[a["id"]] = AlertResolution.NO_LONGER_MATCHES
        else:
            live.append(a)
    if not live:
        return out
    subjects = sorted({a["subject"] for a in live})
    why: dict[int, AlertResolution] = {}
    if kind is _EXPIRY:
        conn = connections.get("default")
        where, params = bulk.in_ids(conn, "c.id", subjects)
        rows = await bulk.fetch(
            conn,
            "SELECT c.id, c.is_current,"
            " EXISTS (SELECT 1 FROM certificate n WHERE n.renewed_from_id = c.id) AS renewed,"
            " EXISTS (SELECT 1 FROM tracked_source s WHERE s.certificate_id = c.id AND s.untracked_at IS NOT NULL)"
            f" AS untracked FROM certificate c WHERE {where}",
            params,
        )
        for r in rows:
            if r["is_current"]:
                why[r["id"]] = AlertResolution.NO_LONGER_MATCHES
            elif r["renewed"]:
                why[r["id"]] = AlertResolution.RENEWED
            elif r["untracked"]:
                why[r["id"]] = AlertResolution.UNTRACKED
            else:
                why[r["id"]] = AlertResolution.REMOVED
    elif kind is _SOURCE:
        for r in await TrackedSource.filter(id__in=subjects).values("id", "untracked_at", "consecutive_failures"):
            if r["untracked_at"] is not None:
                why[r["id"]] = AlertResolution.UNTRACKED
            elif not r["consecutive_failures"]:
                why[r["id"]] = AlertResolution.RECOVERED
            else:
                why[r["id"]] = AlertResolution.NO_LONGER_MATCHES
    else:
        rows = await Host.filter(id__in=subjects).values(
            "id", "hostname", "last_report_at", "created_at", "interval_seconds", "retired_at"
        )
        for r in rows:
            status = host_status(types.SimpleNamespace(**r), now)
            why[r["id"]] = {
                HostStatus.RETIRED: AlertResolution.REMOVED,
                HostStatus.ACTIVE: AlertResolution.RECOVERED,
            }.get(status, AlertResolution.NO_LONGER_MATCHES)
    for a in live:
        out[a["id"]] = why.get(a["subject"], AlertResolution.REMOVED)
    return out


async def evaluate(scope: Scope = EVERYTHING, *, now: dt.datetime | None = None) -> Evaluation:
    """Fire what matches and has no open alert, resolve open alerts that no
    longer match, within ``scope`` (see the module doc)."""
    now = now or clock.now()
    kinds = [k for k in AlertRuleKind if scope.covers(k)]
    rules = await _enabled_rules(scope) if kinds else []
    enabled = {r.id for r in rules}
    fire: list[_Fire] = []
    resolve: dict[int, AlertResolution] = {}
    severity_of: dict[int, str] = {}
    for kind in kinds:
        kind_rules = [r for r in rules if r.kind is kind]
        subjects = scope.subjects(kind)
        matches = await _MATCHERS[kind](kind_rules, subjects, now) if kind_rules else {}
        open_rows = await _open_alerts(kind, scope)
        opened = {(a["rule_id"], a["subject"]) for a in open_rows}
        by_id = {r.id: r for r in kind_rules}
        fire.extend(_Fire(by_id[rule_id], subject, key) for (rule_id, subject), key in matches.items()
                    if (rule_id, subject) not in opened)  # fmt: skip
        gone = [a for a in open_rows if (a["rule_id"], a["subject"]) not in matches]
        if gone:
            resolve.update(await _resolutions(kind, gone, enabled, now))
            severity_of.update({a["id"]: a["severity"] for a in gone})
    refire: list[int] = []
    if scope.refire:
        refire = list(
            await Alert.filter(
                state=AlertState.ACKNOWLEDGED.value, open_key__isnull=False, acknowledged_until__isnull=False,
                acknowledged_until__lte=now,
            ).values_list("id", flat=True)
        )  # fmt: skip
    if not (fire or resolve or refire):
        return Evaluation()
    inherited = await _acknowledged_by_certificate([f for f in fire if f.rule.kind is _EXPIRY], now)
    async with transaction() as conn:
        changes: list[Change] = []
        resolved = await _resolve(conn, resolve, severity_of, now)
        changes += resolved
        refired = await _refire(conn, refire, now)
        changes += refired
        fired = await _fire(conn, fire, inherited, now)
        changes += fired
        await _announce(conn, changes, now)
    return Evaluation(fired=len(fired), resolved=len(resolved), refired=len(refired), changes=tuple(changes))


async def _acknowledged_by_certificate(fires: list[_Fire], now: dt.datetime) -> dict[int, dict[str, Any]]:
    """certificate id -> its most severe acknowledged (and still suppressing) open alert."""
    if not fires:
        return {}
    rows = await Alert.filter(
        kind=_EXPIRY.value, state=AlertState.ACKNOWLEDGED.value, open_key__isnull=False,
        certificate_id__in=sorted({f.subject for f in fires}),
    ).values("certificate_id", "severity", "acknowledged_at", "acknowledged_until", "acknowledged_by")  # fmt: skip
    best: dict[int, dict[str, Any]] = {}
    for r in rows:
        until = r["acknowledged_until"]
        if until is not None and clock.as_utc(until) <= now:
            continue
        held = best.get(r["certificate_id"])
        if held is None or SEVERITY_RANK[AlertSeverity(r["severity"])] > SEVERITY_RANK[AlertSeverity(held["severity"])]:
            best[r["certificate_id"]] = r
    return best


async def _guarded_update(conn: Any, ids: Sequence[int], assignments: str, params: Sequence[Any], condition: str,
                          condition_params: Sequence[Any] = ()) -> list[int]:  # fmt: skip
    """``UPDATE alert SET <assignments> WHERE id IN ids AND <condition> RETURNING id``; on
    PostgreSQL the rows are locked in id order first (evaluators never deadlock),
    and the condition is re-checked on the locked rows."""
    ordered = sorted(set(ids))
    if not ordered:
        return []
    where, id_params = bulk.in_ids(conn, "id", ordered)
    if bulk.is_postgres(conn):
        sql = (
            f"WITH t AS (SELECT id FROM alert WHERE {where} AND {condition} ORDER BY id FOR UPDATE)"
            f" UPDATE alert a SET {assignments} FROM t WHERE a.id = t.id AND {condition}"
            " RETURNING a.id"
        )
        rows = await bulk.fetch(conn, sql, [*id_params, *condition_params, *params, *condition_params])
    else:
        rows = await bulk.fetch(
            conn, f"UPDATE alert SET {assignments} WHERE {where} AND {condition} RETURNING id",
            [*params, *id_params, *condition_params],
        )  # fmt: skip
    return sorted(int(r["id"]) for r in rows)


async def _resolve(conn: Any, resolve: dict[int, AlertResolution], severity_of: dict[int, str], now: dt.datetime) -> list[Change]:
    by_reason: dict[AlertResolution, list[int]] = defaultdict(list)
    for alert_id, reason in resolve.items():
        by_reason[reason].append(alert_id)
    changes = []
    for reason, ids in sorted(by_reason.items(), key=lambda kv: kv[0].value):
        done = await _guarded_update(
            conn, ids, "state = ?, open_key = NULL, resolved_at = ?, resolution = ?",
            [AlertState.RESOLVED.value, now, reason.value], "open_key IS NOT NULL",
        )  # fmt: skip
        changes += [Change(i, "RESOLVED", severity_of.get(i, "")) for i in done]
    return changes


async def _refire(conn: Any, ids: list[int], now: dt.datetime) -> list[Change]:
    done = await _guarded_update(
        conn, ids, "state = ?", [AlertState.FIRING.value],
        "open_key IS NOT NULL AND state = ? AND acknowledged_until <= ?", [AlertState.ACKNOWLEDGED.value, now],
    )  # fmt: skip
    if not done:
        return []
    severities = dict(await Alert.filter(id__in=done).values_list("id", "severity"))
    return [Change(i, "FIRED", severities.get(i, "")) for i in done]


ALERT_TABLE = bulk.Table(
    "alert",
    (
        ("rule_id", "int4"), ("kind", "text"), ("certificate_id", "int4"), ("tracked_source_id", "int4"),
        ("host_id", "int4"), ("state", "text"), ("severity", "text"), ("fired_at", "timestamptz"),
        ("acknowledged_at", "timestamptz"), ("acknowledged_until", "timestamptz"), ("acknowledged_by", "text"),
        ("open_key", "text"),
    ),
)  # fmt: skip


async def _fire(conn: Any, fire: list[_Fire], inherited: dict[int, dict[str, Any]], now: dt.datetime) -> list[Change]:
    if not fire:
        return []
    rows = []
    silent: set[str] = set()
    for f in sorted(fire, key=lambda f: f.key):  # one order everywhere: no deadlock between evaluators
        subject = {_SUBJECT[f.rule.kind]: f.subject}
        state, ack_at, ack_until, ack_by = AlertState.FIRING.value, None, None, None
        held = inherited.get(f.subject) if f.rule.kind is _EXPIRY else None
        if held is not None and SEVERITY_RANK[AlertSeverity(held["severity"])] >= SEVERITY_RANK[f.rule.severity]:
            state = AlertState.ACKNOWLEDGED.value
            ack_at, ack_until, ack_by = held["acknowledged_at"], held["acknowledged_until"], held["acknowledged_by"]
            silent.add(f.key)
        rows.append((
            f.rule.id, f.rule.kind.value, subject.get("certificate_id"), subject.get("tracked_source_id"),
            subject.get("host_id"), state, f.rule.severity.value, now, ack_at, ack_until, ack_by, f.key,
        ))  # fmt: skip
    inserted = await bulk.insert(conn, ALERT_TABLE, rows, returning=("id", "open_key", "severity"), conflict='"open_key"')
    inserted.sort(key=lambda r: r["id"])
    return [Change(int(r["id"]), "FIRED", r["severity"], notify=r["open_key"] not in silent) for r in inserted]


_DELIVERY_INSERT = (
    "INSERT INTO notification_delivery (channel_id, alert_id, kind, attempt, status, created_at, next_attempt_at)"
    " SELECT rc.channel_id, a.id, ?, 1, ?, ?, ? FROM alert a"
    " JOIN alert_rule_channel rc ON rc.rule_id = a.rule_id"
    " JOIN notification_channel c ON c.id = rc.channel_id"
    " WHERE {where} AND c.enabled = ? AND c.deleted_at IS NULL ORDER BY a.id, rc.channel_id"
)


async def queue_deliveries(conn: Any, alert_ids: Iterable[int], kind: DeliveryKind, now: dt.datetime) -> None:
    """One PENDING delivery (due now) per enabled channel of each alert's rule."""
    ids = sorted(set(alert_ids))
    if not ids:
        return
    where, params = bulk.in_ids(conn, "a.id", ids)
    await bulk.execute(
        conn, _DELIVERY_INSERT.format(where=where), [kind.value, DeliveryStatus.PENDING.value, now, now, *params, True]
    )


async def _announce(conn: Any, changes: list[Change], now: dt.datetime) -> None:
    """Deliveries for the changes that notify, and the bus message after commit."""
    if not changes:
        return
    by_kind: dict[str, list[int]] = defaultdict(list)
    for c in changes:
        if c.notify:
            by_kind[c.change].append(c.alert_id)
    for change, ids in by_kind.items():
        await queue_deliveries(conn, ids, DeliveryKind(change), now)
    after_commit(TOPIC, {"changes": [{"id": c.alert_id, "change": c.change, "severity": c.severity} for c in changes]})


# --- evaluation entry points for the services that change things ------------------------------


async def evaluate_rule(rule_id: int) -> Evaluation:
    rule = await AlertRule.get(id=rule_id)
    return await evaluate(Scope(kinds=frozenset({AlertRuleKind(rule.kind)}), rule_ids=frozenset({rule_id})))


async def safely(scope: Scope) -> Evaluation:
    """Evaluate after another operation committed: a failure is logged, never
    raised into that operation (the next sweep evaluates everything again)."""
    try:
        return await evaluate(scope)
    except Exception:  # noqa: BLE001 - the operation itself succeeded
        log.exception("Alert evaluation after a change failed; the next sweep evaluates again")
        return Evaluation()


async def after_report(host_id: int, certificate_ids: Iterable[int], *, host_alerting: bool | None = None) -> Evaluation:
    """After an agent report: its host reported (a HOST_STALE alert recovers), and
    the certificates whose places changed. ``host_alerting`` (whether the host
    has an open alert) comes with the report's own host update; an unchanged
    report of a host without alerts then costs no statement here."""
    total = Evaluation()
    ids = frozenset(certificate_ids)
    if host_alerting is None:
        host_alerting = await Alert.filter(host_id=host_id, open_key__isnull=False).exists()
    if host_alerting:
        total = await safely(Scope(host_ids=frozenset({host_id}), kinds=frozenset({_HOST})))
    if ids:
        found = await safely(Scope(certificate_ids=ids, kinds=frozenset({_EXPIRY})))
        total = _sum(total, found)
    return total


async def after_source_change(source_id: int, certificate_ids: Iterable[int] = ()) -> Evaluation:
    """After a refresh, a track, an import or an untrack of one source."""
    ids = frozenset(i for i in certificate_ids if i is not None)
    return await safely(Scope(certificate_ids=ids, source_ids=frozenset({source_id}), host_ids=frozenset(),
                              kinds=frozenset({_EXPIRY, _SOURCE})))  # fmt: skip


async def after_host_change(host_id: int, certificate_ids: Iterable[int] = ()) -> Evaluation:
    """After a host was retired (its places removed)."""
    return await safely(Scope(certificate_ids=frozenset(certificate_ids), source_ids=frozenset(),
                              host_ids=frozenset({host_id}), kinds=frozenset({_EXPIRY, _HOST})))  # fmt: skip


def _sum(a: Evaluation, b: Evaluation) -> Evaluation:
    return Evaluation(a.fired + b.fired, a.resolved + b.resolved, a.refired + b.refired, a.changes + b.changes)


# --- acknowledging ------------------------------------------------------------------------------


async def acknowledge(alert_id: int, *, until: dt.datetime | None, actor: str) -> Alert:
    """ACKNOWLEDGED until ``until`` (None: until resolved). Notifies the rule's
    channels when it was FIRING; acknowledging again only moves ``until``."""
    now = clock.now()
    if until is not None:
        until = clock.as_utc(until)
        if until <= now:
            raise BadUserInput("`until` must be in the future.")
    async with transaction() as conn:
        where = "id = ? AND open_key IS NOT NULL"
        lock = " FOR UPDATE" if bulk.is_postgres(conn) else ""
        rows = await bulk.fetch(conn, f"SELECT id, state, severity FROM alert WHERE {where}{lock}", [alert_id])
        if not rows:
            if await Alert.exists(id=alert_id):
                raise BadUserInput("This alert is resolved: there is nothing to acknowledge.")
            raise NotFound("No alert with this id.")
        was = rows[0]["state"]
        await bulk.execute(
            conn,
            "UPDATE alert SET state = ?, acknowledged_at = ?, acknowledged_until = ?, acknowledged_by = ? WHERE id = ?",
            [AlertState.ACKNOWLEDGED.value, now, until, actor[:255], alert_id],
        )
        await _announce(conn, [Change(alert_id, "ACKNOWLEDGED", rows[0]["severity"], notify=was == AlertState.FIRING.value)], now)
    return await Alert.get(id=alert_id)
