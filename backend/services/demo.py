"""Demo data: ``ctops seed-demo`` fills the inventory with real certificates, fast.

Each run makes a demo CA ("CT-Ops Demo Root CA" and an intermediate) and a
small pool of leaf keys (mostly EC P-256, some RSA-2048 and Ed25519; keys are
slow to make, signatures are not), signs ``count`` certificates with it (the
two CA certificates included) and spreads them over ``hosts`` new hosts, each
certificate on 1 to 5 of them, in files (``/etc/ssl/<name>.pem``, ...) or on
TLS ports (``10.x.y.z:443``). Running it again adds new certificates on new
hosts; host and certificate numbering continue from what is there.

Expiry is spread so every status shows: about 8 % expired, 8 % critical (half
within 7 days), 8 % warning, the rest OK (the two CA certificates are OK).

The rows are what an agent report would store: the X.509 columns are exactly
``x509.describe(der)`` of the stored DER, each place gets a location and a
DISCOVERED event (actor ``seed-demo``, the place keys as details, as
``docs/events.md`` says), and the derived columns
(``search_text``, ``sort_name``, ``last_status``, ...) come from
``services.certificates.certificate_fields``, the mapping ingest uses too;
``live_locations``/``is_current``/``seen_by_agent`` count the places.
Timestamps come from the clock.

Speed: 100 000 certificates in well under a minute on two cores. Signing
costs about 60 us per certificate and ``describe`` as much again, so leaves
are described from what was built (checked against ``describe`` for the
first of each key and every hundredth); rows are written in batches
of ``BATCH_SIZE`` certificates, one transaction and a constant number of
statements per batch (``executemany`` on SQLite, ``COPY`` on PostgreSQL, where
the server writes one batch while this process signs the next), with ids
taken up front (``MAX(id)`` inside the SQLite write transaction, the sequence
on PostgreSQL) so locations and events point at them without reading back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import random
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from cryptography import x509 as cx509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from tortoise import connections

from backend import clock, x509
from backend.db import is_postgres, transaction
from backend.models import Certificate, CertificateEvent, CertificateLocation, EventType, Host, LocationKind
from backend.models.location import place_key
from backend.services.certificates import certificate_fields
from backend.services.events import place_details

ACTOR = "seed-demo"
ROOT_NAME = "CT-Ops Demo Root CA"
INTERMEDIATE_NAME = "CT-Ops Demo Intermediate CA"
ORGANIZATION = "CT-Ops Demo"
HOST_PREFIX = "demo-"
HOST_DOMAIN = "demo.internal"
MAX_HOSTS_PER_CERTIFICATE = 5
BATCH_SIZE = 2000
VERIFY_EVERY = 100

_HOST_NUMBER = re.compile(rf"^{re.escape(HOST_PREFIX)}(\d+)\.")

_SERVICES = (
    "api", "shop", "mail", "vpn", "auth", "grafana", "git", "ci", "billing", "search",
    "cdn", "status", "wiki", "chat", "registry", "ldap", "proxy", "metrics", "backup", "portal",
)  # fmt: skip
_ZONES = ("prod", "staging", "dev", "eu", "us", "internal")
_DOMAINS = ("example.com", "example.net", "example.org", "corp.example")
_OSES = ("Ubuntu 24.04", "Ubuntu 22.04", "Debian 12", "RHEL 9", "Rocky Linux 9", "Alpine 3.20")
_FILE_DIRS = ("/etc/ssl", "/etc/nginx/tls", "/etc/haproxy/certs", "/opt/{service}/tls")
_PORTS = (443, 443, 443, 8443, 636, 993)

# Expiry buckets, dealt from a shuffled deck of 25 per 25 leaves so that even a
# small run shows every status: 2 expired, 1 due within 7 days, 1 within 14,
# 2 within 30, 19 OK.
_DECK = ("expired",) * 2 + ("week",) + ("fortnight",) + ("month",) * 2 + ("ok",) * 19
_HOUR = dt.timedelta(hours=1)
_DAY = dt.timedelta(days=1)
_LIFETIMES = (90, 90, 180, 365, 397)


@dataclasses.dataclass(frozen=True)
class SeedResult:
    certificates: int
    hosts: int
    locations: int
    events: int
    seconds: float


async def seed_demo(
    count: int,
    *,
    hosts: int | None = None,
    seed: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> SeedResult:
    """Add ``count`` demo certificates (the demo root and intermediate included).

    ``hosts`` new hosts are created (default: one per ten certificates, at least
    five); ``seed`` makes names, places and dates reproducible (keys and
    serial numbers are always fresh, so every run adds distinct certificates);
    ``progress`` is called with the number of certificates stored so far after
    each batch.
    """
    started = time.perf_counter()
    if count < 0:
        raise ValueError("count must not be negative")
    if count == 0:
        return SeedResult(0, 0, 0, 0, time.perf_counter() - started)
    host_count = max(MAX_HOSTS_PER_CERTIFICATE, count // 10) if hosts is None else hosts
    if host_count < 1:
        raise ValueError("hosts must be at least 1")

    now = clock.now()
    rng = random.Random(seed)
    writer = _Writer()
    authority = _Authority.generate()

    host_ids = await _create_hosts(writer, host_count, now, rng)
    base = await Certificate.all().count()
    planner = _Planner(rng, now, host_ids, base)

    # On PostgreSQL the server writes batch n while this process signs batch
    # n + 1. Not on SQLite: its writer thread needs the GIL for every row.
    postgres = is_postgres()
    done = _Tally()
    writing: asyncio.Task[None] | None = None
    try:
        for start in range(0, count, BATCH_SIZE):
            plans = [planner.plan(i) for i in range(start, min(start + BATCH_SIZE, count))]
            batch = await _prepare_batch(authority, plans, now)
            if writing is not None:
                await writing
            writing = asyncio.create_task(_store(writer, batch, now, done, progress))
            if not postgres:
                await writing
                writing = None
        if writing is not None:
            await writing
    finally:
        if writing is not None and not writing.done():
            writing.cancel()
    if postgres:
        # Fresh statistics for the planner: autovacuum would take its time, and
        # the first dashboards right after seeding deserve good plans.
        await connections.get("default").execute_script(
            "ANALYZE " + ", ".join(f'"{t.name}"' for t in (_HOST, _CERTIFICATE, _LOCATION, _EVENT))
        )
    # One DISCOVERED event per place.
    return SeedResult(done.certificates, host_count, done.locations, done.locations, time.perf_counter() - started)


# --- what to make ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Place:
    host_id: int
    kind: LocationKind
    path: str | None = None
    address: str | None = None
    port: int | None = None
    server_name: str | None = None
    index: int = 0
    alias: str | None = None

    @property
    def place(self) -> str:
        return place_key(
            self.kind, path=self.path, index=self.index, alias=self.alias, address=self.address, port=self.port,
            server_name=self.server_name,
        )


@dataclasses.dataclass(frozen=True)
class _Plan:
    """One certificate to make: its role, names, key, validity and places."""

    role: str  # "root", "intermediate" or "leaf"
    name: str
    sans: tuple[str, ...]
    key_index: int
    not_before: dt.datetime
    not_after: dt.datetime
    places: tuple[_Place, ...]


class _Planner:
    def __init__(self, rng: random.Random, now: dt.datetime, host_ids: list[tuple[int, int]], base: int) -> None:
        self.rng = rng
        self.now = now.replace(microsecond=0)
        self.hosts = host_ids
        self.base = base
        self.deck: list[str] = []

    def plan(self, i: int) -> _Plan:
        rng = self.rng
        if i == 0:
            return _Plan("root", ROOT_NAME, (), 0, self.now - _DAY, self.now + 3650 * _DAY, self._places(i))
        if i == 1:
            places = self._places(i)
            return _Plan("intermediate", INTERMEDIATE_NAME, (), 0, self.now - _DAY, self.now + 1825 * _DAY, places)
        number = self.base + i
        service = rng.choice(_SERVICES)
        zone = rng.choice(_ZONES)
        domain = rng.choice(_DOMAINS)
        name = f"{service}-{number:06d}.{zone}.{domain}"
        sans = [name]
        extra = rng.random()
        if extra < 0.3:
            sans.append("www." + name)
        elif extra < 0.4:
            sans.append(f"*.{service}-{number:06d}.{zone}.{domain}")
        elif extra < 0.5:
            sans.extend(f"{other}-{number:06d}.{zone}.{domain}" for other in rng.sample(_SERVICES, 2))
        not_before, not_after = self._validity()
        return _Plan("leaf", name, tuple(sans), _pick_key(rng), not_before, not_after, self._places(i, name, service))

    def _validity(self) -> tuple[dt.datetime, dt.datetime]:
        if not self.deck:
            self.deck = list(_DECK)
            self.rng.shuffle(self.deck)
        bucket = self.deck.pop()
        now, uniform = self.now, self.rng.uniform
        if bucket == "expired":
            not_after = now - uniform(1, 24 * 365) * _HOUR
        elif bucket == "week":
            not_after = now + uniform(2, 24 * 7) * _HOUR
        elif bucket == "fortnight":
            not_after = now + uniform(24 * 7, 24 * 14 - 2) * _HOUR
        elif bucket == "month":
            not_after = now + uniform(24 * 14 + 2, 24 * 30 - 2) * _HOUR
        else:
            not_after = now + uniform(24 * 30 + 2, 24 * 397) * _HOUR
        not_after = not_after.replace(microsecond=0)
        not_before = min(not_after - self.rng.choice(_LIFETIMES) * _DAY, now - _HOUR)
        return not_before, not_after

    def _places(self, i: int, name: str | None = None, service: str | None = None) -> tuple[_Place, ...]:
        if name is None:  # the CA certificates: a CA bundle file
            name = "ct-ops-demo-root-ca" if i == 0 else "ct-ops-demo-intermediate-ca"
            service = "ca"
        rng, hosts = self.rng, self.hosts
        wanted = min(rng.randint(1, MAX_HOSTS_PER_CERTIFICATE), len(hosts))
        chosen = {i % len(hosts)}  # every host gets certificates once there are enough
        while len(chosen) < wanted:
            chosen.add(rng.randrange(len(hosts)))
        places = []
        for h in sorted(chosen):
            host_id, number = hosts[h]
            if i > 1 and rng.random() < 0.2:
                address = f"10.{(number >> 16) & 255}.{(number >> 8) & 255}.{number & 255}"
                places.append(_Place(host_id, LocationKind.PORT, address=address, port=rng.choice(_PORTS),
                                     server_name=name))
            else:
                directory = rng.choice(_FILE_DIRS).format(service=service)
                suffix = ".crt" if rng.random() < 0.3 else ".pem"
                places.append(_Place(host_id, LocationKind.FILE, path=f"{directory}/{name}{suffix}"))
        return tuple(places)


# Leaf keys: 5 EC P-256, 2 RSA-2048, 1 Ed25519; picked about 80 / 12 / 8 %.
_KEY_KINDS = ("ec",) * 5 + ("rsa",) * 2 + ("ed25519",)


def _pick_key(rng: random.Random) -> int:
    roll = rng.random()
    if roll < 0.80:
        return rng.randrange(5)
    if roll < 0.92:
        return 5 + rng.randrange(2)
    return 7


# --- making certificates ---------------------------------------------------------------


class _Authority:
    """The run's demo root, intermediate and leaf key pool."""

    def __init__(self, root_key: Any, intermediate_key: Any, keys: list[Any]) -> None:
        self.root_key = root_key
        self.intermediate_key = intermediate_key
        self.keys = keys
        self.publics = [key.public_key() for key in keys]
        self.skis = [cx509.SubjectKeyIdentifier.from_public_key(pub) for pub in self.publics]
        self.root_name = _name(ROOT_NAME)
        self.intermediate_name = _name(INTERMEDIATE_NAME)
        self.root_ski = cx509.SubjectKeyIdentifier.from_public_key(root_key.public_key())
        self.intermediate_ski = cx509.SubjectKeyIdentifier.from_public_key(intermediate_key.public_key())
        self.intermediate_aki = cx509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(self.intermediate_ski)
        self.leaf_constraints = cx509.BasicConstraints(ca=False, path_length=None)
        self.eku = cx509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
        self.usage_sign = _key_usage(digital_signature=True)
        self.usage_rsa = _key_usage(digital_signature=True, key_encipherment=True)
        self.templates: dict[int, x509.CertificateDescription] = {}
        self.made = 0

    @classmethod
    def generate(cls) -> _Authority:
        return cls(_generate("ec"), _generate("ec"), [_generate(kind) for kind in _KEY_KINDS])

    def make(self, plan: _Plan) -> x509.CertificateDescription:
        """Sign ``plan``; its description is exactly ``x509.describe`` of the DER.

        Leaves of one pool key differ only in bytes, serial, names and validity,
        so the first leaf of each key is parsed and later ones are filled in from
        what was built (parsing costs as much as signing). Every
        ``VERIFY_EVERY``-th one is parsed anyway and must come out equal.
        """
        if plan.role == "root":
            return x509.describe(self._ca(plan, self.root_key, self.root_name, self.root_key, self.root_ski, None, 1))
        if plan.role == "intermediate":
            aki = cx509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(self.root_ski)
            der = self._ca(plan, self.intermediate_key, self.root_name, self.root_key, self.intermediate_ski, aki, 0)
            return x509.describe(der)
        serial = cx509.random_serial_number()
        subject = _name(plan.name)
        der = self._leaf(plan, serial, subject)
        template = self.templates.get(plan.key_index)
        if template is None:
            self.templates[plan.key_index] = described = x509.describe(der)
            return described
        described = dataclasses.replace(
            template,
            der=der,
            fingerprint_sha256=hashlib.sha256(der).hexdigest(),
            fingerprint_sha1=hashlib.sha1(der, usedforsecurity=False).hexdigest(),
            serial_number=serial.to_bytes(serial.bit_length() // 8 + 1, "big").hex(),
            common_name=plan.name,
            subject=subject.rfc4514_string(),
            not_before=plan.not_before,
            not_after=plan.not_after,
            sans=tuple(x509.SubjectAltName("DNS", name) for name in plan.sans),
        )
        self.made += 1
        if self.made % VERIFY_EVERY == 0 and x509.describe(der) != described:
            raise RuntimeError(f"seed-demo describes {plan.name} differently from x509.describe")
        return described

    def _leaf(self, plan: _Plan, serial: int, subject: cx509.Name) -> bytes:
        k = plan.key_index
        builder = (
            cx509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.intermediate_name)
            .public_key(self.publics[k])
            .serial_number(serial)
            .not_valid_before(plan.not_before)
            .not_valid_after(plan.not_after)
            .add_extension(self.leaf_constraints, critical=True)
            .add_extension(self.usage_rsa if _KEY_KINDS[k] == "rsa" else self.usage_sign, critical=True)
            .add_extension(self.eku, critical=False)
            .add_extension(cx509.SubjectAlternativeName([cx509.DNSName(n) for n in plan.sans]), critical=False)
            .add_extension(self.skis[k], critical=False)
            .add_extension(self.intermediate_aki, critical=False)
        )
        return builder.sign(self.intermediate_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)

    def _ca(self, plan, key, issuer_name, issuer_key, ski, aki, path_length) -> bytes:  # noqa: ANN001
        builder = (
            cx509.CertificateBuilder()
            .subject_name(_name(plan.name))
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(cx509.random_serial_number())
            .not_valid_before(plan.not_before)
            .not_valid_after(plan.not_after)
            .add_extension(cx509.BasicConstraints(ca=True, path_length=path_length), critical=True)
            .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
            .add_extension(ski, critical=False)
        )
        if aki is not None:
            builder = builder.add_extension(aki, critical=False)
        return builder.sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def _generate(kind: str) -> Any:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> cx509.Name:
    return cx509.Name(
        [
            cx509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            cx509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_usage(**flags: bool) -> cx509.KeyUsage:
    names = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
             "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")  # fmt: skip
    return cx509.KeyUsage(**{n: flags.get(n, False) for n in names})


# --- signing and describing ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Prepared:
    """One certificate's rows, without the ids (they are taken in the write transaction)."""

    certificate: tuple  # the certificate row after ``id``
    places: tuple[tuple[int, tuple, str], ...]  # (host id, location columns after host_id, event details)


def _prepare(authority: _Authority, plan: _Plan, now: dt.datetime) -> _Prepared:
    d = authority.make(plan)
    places = []
    for place in plan.places:
        location = (place.kind.value, place.place, place.path, _EMPTY_LIST, place.index, place.alias, place.address,
                    place.port, place.server_name, now, now, None)  # fmt: skip
        places.append((place.host_id, location, _json(place_details(place))))
    return _Prepared(_certificate_row(d, len(plan.places), now), tuple(places))


_JSON_COLUMNS = ("sans", "key_usage", "extended_key_usage")


def _certificate_row(d: x509.CertificateDescription, places: int, now: dt.datetime) -> tuple:
    """Every certificate column after ``id``, in ``_CERTIFICATE`` order: the one
    description-to-row mapping (``certificate_fields``) plus where it is."""
    values = certificate_fields(d, now)
    for name in _JSON_COLUMNS:
        values[name] = _json(values[name])
    values.update(
        live_locations=places, live_sources=0, is_current=places > 0, seen_by_agent=places > 0, imported=False,
        renewed_from_id=None,
    )  # fmt: skip
    return tuple(values[column] for column in _CERTIFICATE.columns[1:])


async def _prepare_batch(authority: _Authority, plans: list[_Plan], now: dt.datetime) -> list[_Prepared]:
    """Sign and describe ``plans``, letting the event loop run (a write in flight) every few certificates."""
    prepared = []
    for i, plan in enumerate(plans, 1):
        prepared.append(_prepare(authority, plan, now))
        if i % 50 == 0:
            await asyncio.sleep(0)
    return prepared


# --- writing -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Table:
    model: type
    columns: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.model._meta.db_table  # type: ignore[attr-defined]

    @property
    def insert_sql(self) -> str:
        names = ", ".join(f'"{c}"' for c in self.columns)
        return f'INSERT INTO "{self.name}" ({names}) VALUES ({", ".join("?" for _ in self.columns)})'

    def check(self) -> None:
        """Every column of the model is written (catches a model change this module missed)."""
        meta = self.model._meta  # type: ignore[attr-defined]
        model_columns = {meta.fields_db_projection[f] for f in meta.db_fields}
        differ = sorted(model_columns ^ set(self.columns))
        if differ:
            raise RuntimeError(f"seed-demo does not match the {self.name} columns: {differ}")


# Column order = the order of the row tuples built below.
_CERTIFICATE = _Table(Certificate, (
    "id", "fingerprint_sha256", "fingerprint_sha1", "serial_number", "spki_sha256", "common_name", "sort_name",
    "subject", "issuer", "issuer_common_name", "not_before", "not_after", "sans", "key_algorithm", "key_size",
    "curve", "signature_algorithm", "is_ca", "path_length", "key_usage", "extended_key_usage",
    "subject_key_identifier", "authority_key_identifier", "self_signed", "der", "search_text", "live_locations",
    "live_sources", "is_current", "seen_by_agent", "imported", "last_status", "renewed_from_id", "first_seen_at",
    "last_seen_at", "created_at",
))  # fmt: skip
_HOST = _Table(Host, (
    "id", "hostname", "os", "agent_version", "interval_seconds", "last_report_at", "last_scanned_at", "scan_errors",
    "retired_at", "created_at",
))  # fmt: skip
_LOCATION = _Table(CertificateLocation, (
    "id", "certificate_id", "host_id", "kind", "place", "path", "link_paths", "index", "alias", "address", "port",
    "server_name", "first_seen_at", "last_seen_at", "removed_at",
))  # fmt: skip
_EVENT = _Table(CertificateEvent, (
    "id", "type", "occurred_at", "certificate_id", "host_id", "location_id", "tracked_source_id", "actor", "details",
))  # fmt: skip

# JSON exactly as the ORM writes it (the same encoder), so SQLite text matches.
_json = Certificate._meta.fields_map["sans"].encoder  # type: ignore[attr-defined]
_EMPTY_LIST = _json([])


class _Writer:
    """Inserts rows with ids chosen up front; one statement per table per batch."""

    def __init__(self) -> None:
        self.postgres: bool | None = None

    def _dialect(self, conn: Any) -> bool:
        if self.postgres is None:
            for table in (_CERTIFICATE, _HOST, _LOCATION, _EVENT):
                table.check()
            self.postgres = conn.capabilities.dialect == "postgres"
        return self.postgres

    async def ids(self, conn: Any, table: _Table, n: int) -> list[int]:
        """``n`` fresh ids for ``table`` (call inside the write transaction)."""
        if self._dialect(conn):
            rows = await conn.execute_query_dict(
                f"SELECT nextval(pg_get_serial_sequence('\"{table.name}\"', 'id')) AS id FROM generate_series(1, $1)",
                [n],
            )
            return [r["id"] for r in rows]
        rows = await conn.execute_query_dict(f'SELECT COALESCE(MAX(id), 0) AS id FROM "{table.name}"')
        first = int(rows[0]["id"]) + 1
        return list(range(first, first + n))

    async def insert(self, conn: Any, table: _Table, rows: Sequence[tuple]) -> None:
        if not rows:
            return
        if self._dialect(conn):
            # COPY: several times faster than INSERT for the server, and binary.
            async with conn.acquire_connection() as raw:
                await raw.copy_records_to_table(table.name, records=rows, columns=table.columns)
        else:
            await conn.execute_many(table.insert_sql, rows)

    async def write_batch(self, conn: Any, batch: list[_Prepared], now: dt.datetime) -> int:
        """Store certificates with their locations and DISCOVERED events; returns the number of places."""
        cert_ids = await self.ids(conn, _CERTIFICATE, len(batch))
        n_places = sum(len(item.places) for item in batch)
        location_ids = iter(await self.ids(conn, _LOCATION, n_places))
        event_ids = iter(await self.ids(conn, _EVENT, n_places))
        certificates, locations, events = [], [], []
        discovered = EventType.DISCOVERED.value
        for cert_id, item in zip(cert_ids, batch):
            certificates.append((cert_id, *item.certificate))
            for host_id, location, details in item.places:
                location_id = next(location_ids)
                locations.append((location_id, cert_id, host_id, *location))
                events.append((next(event_ids), discovered, now, cert_id, host_id, location_id, None, ACTOR, details))
        await self.insert(conn, _CERTIFICATE, certificates)
        await self.insert(conn, _LOCATION, locations)
        await self.insert(conn, _EVENT, events)
        return n_places


@dataclasses.dataclass
class _Tally:
    certificates: int = 0
    locations: int = 0


async def _store(
    writer: _Writer, batch: list[_Prepared], now: dt.datetime, done: _Tally, progress: Callable[[int], None] | None
) -> None:
    async with transaction() as conn:
        done.locations += await writer.write_batch(conn, batch, now)
    done.certificates += len(batch)
    if progress is not None:
        progress(done.certificates)


async def _create_hosts(writer: _Writer, n: int, now: dt.datetime, rng: random.Random) -> list[tuple[int, int]]:
    """``n`` new demo hosts, numbered after the existing ones; returns ``(id, number)`` pairs."""
    existing = await Host.filter(hostname__startswith=HOST_PREFIX).values_list("hostname", flat=True)
    numbers = [int(m.group(1)) for m in map(_HOST_NUMBER.match, existing) if m]
    first = max(numbers, default=0) + 1
    hosts: list[tuple[int, int]] = []
    async with transaction() as conn:
        ids = await writer.ids(conn, _HOST, n)
        rows = []
        for host_id, number in zip(ids, range(first, first + n)):
            hosts.append((host_id, number))
            rows.append((host_id, f"{HOST_PREFIX}{number:05d}.{HOST_DOMAIN}", rng.choice(_OSES), None, 3600, now, now,
                         _EMPTY_LIST, None, now))  # fmt: skip
        await writer.insert(conn, _HOST, rows)
    return hosts
