"""Certificates: the type, its filter and order, and the inventory queries."""

from __future__ import annotations

import datetime as dt
import enum
from typing import TYPE_CHECKING, Annotated

import strawberry

from backend.errors import BadUserInput
from backend.models import Certificate as CertificateModel
from backend.models import CertificateLocation as LocationModel
from backend.models import LocationKind as LocationKindEnum
from backend.schema.core.access import READ, access
from backend.schema.core.context import Info
from backend.schema.loaders import PLACES_BOUND
from backend.schema.core.relay import Connection, Node, decode_id, from_global_id, to_global_id
from backend.services import inventory
from backend.services import status as st
from backend.services.pagination import check_first

if TYPE_CHECKING:
    from backend.schema.events import CertificateEvent
    from backend.schema.hosts import Host

CertificateStatus = strawberry.enum(st.CertificateStatus, description="EXPIRED, CRITICAL (< 14 d), WARNING (< 30 d), OK.")
CertificateSource = strawberry.enum(inventory.CertificateSource)
CertificateOrder = strawberry.enum(inventory.CertificateOrder)
LocationKind = strawberry.enum(LocationKindEnum)


@strawberry.enum
class SanType(enum.Enum):
    DNS = "DNS"
    IP = "IP"
    EMAIL = "EMAIL"
    URI = "URI"
    OTHER = "OTHER"


@strawberry.enum
class KeyAlgorithm(enum.Enum):
    RSA = "RSA"
    EC = "EC"
    ED25519 = "ED25519"
    ED448 = "ED448"
    DSA = "DSA"
    OTHER = "OTHER"


@strawberry.enum
class KeyUsage(enum.Enum):
    DIGITAL_SIGNATURE = "DIGITAL_SIGNATURE"
    CONTENT_COMMITMENT = "CONTENT_COMMITMENT"
    KEY_ENCIPHERMENT = "KEY_ENCIPHERMENT"
    DATA_ENCIPHERMENT = "DATA_ENCIPHERMENT"
    KEY_AGREEMENT = "KEY_AGREEMENT"
    KEY_CERT_SIGN = "KEY_CERT_SIGN"
    CRL_SIGN = "CRL_SIGN"
    ENCIPHER_ONLY = "ENCIPHER_ONLY"
    DECIPHER_ONLY = "DECIPHER_ONLY"


@access(READ)
@strawberry.type
class SubjectAltName:
    type: SanType
    value: str


@access(READ)
@strawberry.type
class CertificateLocation(Node):
    kind: LocationKind
    path: str | None
    link_paths: list[str]
    index: int
    alias: str | None
    address: str | None
    port: int | None
    server_name: str | None
    first_seen_at: dt.datetime
    last_seen_at: dt.datetime
    removed_at: dt.datetime | None
    _host_id: strawberry.Private[int]
    _host: strawberry.Private[object | None] = None  # the Host row, when loaded with the location

    @strawberry.field
    def host(self, info: Info) -> Annotated[Host, strawberry.lazy("backend.schema.hosts")]:
        # Not async: most locations come with their host (the locations loader
        # joins it), and an async resolver costs a task per location.
        from backend.schema.hosts import Host

        if self._host is not None:
            return Host.from_model(self._host)
        return self._load_host(info)

    async def _load_host(self, info: Info):  # noqa: ANN202
        from backend.schema.hosts import Host

        return Host.from_model(await info.context.loaders.host.load(self._host_id))

    @classmethod
    def from_model(cls, m: LocationModel) -> CertificateLocation:
        return cls(
            id=to_global_id("CertificateLocation", m.id),
            kind=LocationKindEnum(m.kind),
            path=m.path,
            link_paths=list(m.link_paths or []),
            index=m.index,
            alias=m.alias,
            address=m.address,
            port=m.port,
            server_name=m.server_name,
            first_seen_at=m.first_seen_at,
            last_seen_at=m.last_seen_at,
            removed_at=m.removed_at,
            _host_id=m.host_id,
            _host=m.__dict__.get("_host"),
        )


@access(READ)
@strawberry.interface(description="The X.509 fields every certificate view shares.")
class X509Fields:
    fingerprint_sha256: str
    fingerprint_sha1: str
    serial_number: str = strawberry.field(
        description="Hex of the DER INTEGER's two's-complement bytes: negative serials stay exact."
    )
    spki_sha256: str
    common_name: str | None
    subject: str = strawberry.field(description="RFC 4514.")
    issuer: str = strawberry.field(description="RFC 4514.")
    issuer_common_name: str | None
    not_before: dt.datetime
    not_after: dt.datetime
    sans: list[SubjectAltName]
    key_algorithm: KeyAlgorithm
    key_size: int | None
    curve: str | None
    signature_algorithm: str
    is_ca: bool
    path_length: int | None
    key_usage: list[KeyUsage]
    extended_key_usage: list[str]
    subject_key_identifier: str | None
    authority_key_identifier: str | None
    self_signed: bool
    _der: strawberry.Private[bytes]

    @strawberry.field
    def status(self) -> CertificateStatus:
        return st.status_of(self.not_after)

    @strawberry.field(description="floor((notAfter - now) / 1 day); negative once expired.")
    def days_remaining(self) -> int:
        return st.days_remaining(self.not_after)

    @strawberry.field
    def pem(self) -> str:
        from backend import x509

        return x509.to_pem(self._der)


X509_FIELDS = (
    "fingerprint_sha256 fingerprint_sha1 serial_number spki_sha256 common_name subject issuer"
    " issuer_common_name not_before not_after key_size curve signature_algorithm is_ca path_length"
    " subject_key_identifier authority_key_identifier self_signed"
).split()


def x509_values(m: object) -> dict:
    """The X.509 field values of a stored certificate or a parsed description."""
    values = {name: getattr(m, name) for name in X509_FIELDS}
    values["sans"] = [SubjectAltName(type=SanType(s["type"] if isinstance(s, dict) else s.type),
                                     value=s["value"] if isinstance(s, dict) else s.value) for s in m.sans]
    values["key_algorithm"] = KeyAlgorithm(m.key_algorithm)
    values["key_usage"] = [KeyUsage(k) for k in m.key_usage]
    values["extended_key_usage"] = list(m.extended_key_usage)
    values["_der"] = m.der
    return values


@access(READ)
@strawberry.type
class Certificate(Node, X509Fields):
    _pk: strawberry.Private[int]
    _renewed_from_id: strawberry.Private[int | None]

    @classmethod
    def from_model(cls, m: CertificateModel | None) -> Certificate | None:
        if m is None:
            return None
        return cls(id=to_global_id("Certificate", m.id), _pk=m.id, _renewed_from_id=m.renewed_from_id, **x509_values(m))

    @strawberry.field(description="The stored certificate whose subject and key identifier match this one's issuer.")
    async def issuer_certificate(self, info: Info) -> Certificate | None:
        if not self.authority_key_identifier or self.self_signed:
            return None
        return Certificate.from_model(await info.context.loaders.issuer.load((self.issuer, self.authority_key_identifier)))

    @strawberry.field(description="Where it is (present places only unless includeRemoved), oldest first; bounded.")
    async def locations(self, info: Info, first: int = 100, include_removed: bool = False) -> list[CertificateLocation]:
        first = check_first(first)
        if not include_removed and first <= PLACES_BOUND:
            # The live places loader (shared with `hosts`) has the first PLACES_BOUND by id.
            rows = (await info.context.loaders.live_places.load(self._pk))[:first]
        else:
            rows = await info.context.loaders.locations.load((self._pk, include_removed, first))
        return [CertificateLocation.from_model(r) for r in rows]

    @strawberry.field
    async def location_count(self, info: Info, include_removed: bool = False) -> int:
        return await info.context.loaders.location_count.load((self._pk, include_removed))

    @strawberry.field(description="Hosts holding it now (bounded; page through hosts(filter: {certificateId}) for all).")
    async def hosts(self, info: Info, first: int = 100) -> list[Annotated[Host, strawberry.lazy("backend.schema.hosts")]]:
        from backend.schema.hosts import Host

        first = check_first(first)
        places = await info.context.loaders.live_places.load(self._pk)
        if len(places) < PLACES_BOUND:  # all of its live places: their hosts, no other query
            hosts = sorted({p.host_id: p._host for p in places}.values(), key=lambda h: h.id)[:first]
        else:
            ids = await info.context.loaders.host_ids.load((self._pk, first))
            hosts = await info.context.loaders.host.load_many(ids)
        return [Host.from_model(h) for h in hosts if h is not None]

    @strawberry.field
    async def host_count(self, info: Info) -> int:
        return await info.context.loaders.host_count.load(self._pk)

    @strawberry.field(description="Its event timeline, newest first.")
    async def events(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> Connection[Annotated[CertificateEvent, strawberry.lazy("backend.schema.events")]]:
        from backend.schema.events import event_connection

        return await event_connection(inventory.EventQuery(certificate_id=self._pk), first, after)

    @strawberry.field
    async def last_event(self, info: Info) -> Annotated[CertificateEvent, strawberry.lazy("backend.schema.events")] | None:
        from backend.schema.events import CertificateEvent

        return CertificateEvent.from_model(await info.context.loaders.last_event.load(self._pk))

    @strawberry.field
    async def renewed_from(self, info: Info) -> Certificate | None:
        if self._renewed_from_id is None:
            return None
        return Certificate.from_model(await info.context.loaders.certificate.load(self._renewed_from_id))

    @strawberry.field
    async def renewed_by(self, info: Info) -> list[Certificate]:
        return [Certificate.from_model(c) for c in await info.context.loaders.renewed_by.load(self._pk)]


@strawberry.input
class CertificateFilter:
    statuses: list[CertificateStatus] | None = None
    expires_within_days: int | None = strawberry.field(
        default=None, description="Not yet expired and notAfter <= now + N x 24 h."
    )
    search: str | None = strawberry.field(default=None, description="CN, SANs, subject, issuer; case-insensitive.")
    host_id: strawberry.ID | None = None
    source: CertificateSource | None = None
    is_ca: bool | None = None
    self_signed: bool | None = None
    include_history: bool = strawberry.field(default=False, description="Add superseded and removed certificates.")


def certificate_query(f: CertificateFilter | None) -> inventory.CertificateQuery:
    if f is None:
        return inventory.CertificateQuery()
    if f.expires_within_days is not None and f.expires_within_days < 0:
        raise BadUserInput("expiresWithinDays must be 0 or more.")
    if f.search is not None and len(f.search) > 256:
        raise BadUserInput("search is limited to 256 characters.")
    return inventory.CertificateQuery(
        statuses=tuple(st.CertificateStatus(s) for s in f.statuses) if f.statuses else None,
        expires_within_days=f.expires_within_days,
        search=f.search or None,
        host_id=decode_id(f.host_id, "Host"),
        source=inventory.CertificateSource(f.source) if f.source else None,
        is_ca=f.is_ca,
        self_signed=f.self_signed,
        include_history=f.include_history,
    )


async def certificate_connection(
    query: inventory.CertificateQuery,
    order: inventory.CertificateOrder,
    first: int | None,
    after: str | None,
) -> Connection[Certificate]:
    page = await inventory.list_certificates(query, order, first, after)
    return Connection[Certificate].from_page(
        page, Certificate.from_model, lambda: inventory.count_certificates(query)
    )


@access(READ)
@strawberry.type
class CertificateStats:
    total: int
    ok: int
    warning: int
    critical: int
    expired: int


@access(READ)
@strawberry.type
class CertificateQueries:
    @strawberry.field(description="Current certificates (present on a host or tracked), keyset-paginated.")
    async def certificates(
        self,
        first: int | None = None,
        after: str | None = None,
        filter: CertificateFilter | None = None,
        order_by: CertificateOrder = inventory.CertificateOrder.NOT_AFTER_ASC,
    ) -> Connection[Certificate]:
        return await certificate_connection(
            certificate_query(filter), inventory.CertificateOrder(order_by), first, after
        )

    @strawberry.field(description="One certificate by id or by SHA-256 fingerprint (exactly one).")
    async def certificate(
        self, id: strawberry.ID | None = None, fingerprint_sha256: str | None = None
    ) -> Certificate | None:
        if (id is None) == (fingerprint_sha256 is None):
            raise BadUserInput("Give exactly one of id and fingerprintSha256.")
        if id is not None:
            type_name, pk = from_global_id(id)
            return Certificate.from_model(await inventory.get_certificate(id=pk)) if type_name == "Certificate" else None
        return Certificate.from_model(await inventory.get_certificate(fingerprint=fingerprint_sha256))

    @strawberry.field(description="Counts per status over the set `certificates` lists with that filter.")
    async def certificate_stats(self, filter: CertificateFilter | None = None) -> CertificateStats:
        stats = await inventory.certificate_stats(certificate_query(filter))
        return CertificateStats(**vars(stats))


