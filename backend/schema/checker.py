"""The Certificate Checker: inspect a URL or uploaded certificate data (no writes)."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Annotated

import strawberry

from backend import chain as chain_module
from backend import x509
from backend.errors import CheckErrorCode as CheckErrorCodeEnum
from backend.schema.certificates import Certificate, X509Fields, x509_values
from backend.schema.core.access import READ, access
from backend.schema.core.context import Info
from backend.services import checker, rate_limits, tracked_sources

if TYPE_CHECKING:
    from backend.schema.tracked_sources import TrackedSource

CheckErrorCode = strawberry.enum(
    CheckErrorCodeEnum, description="Why a URL or certificate could not be inspected, tracked or refreshed."
)
InspectionWarningCode = strawberry.enum(chain_module.InspectionWarningCode)


@access(READ)
@strawberry.type
class InspectionWarning:
    code: InspectionWarningCode
    message: str

    @classmethod
    def of(cls, warning: chain_module.Warning) -> InspectionWarning:
        return cls(code=warning.code, message=warning.message)


@access(READ)
@strawberry.type(description="A certificate as inspected: its X.509 fields, not necessarily stored.")
class CertificateDetails(X509Fields):
    @classmethod
    def of(cls, desc: x509.CertificateDescription) -> CertificateDetails:
        return cls(**x509_values(desc))

    @strawberry.field(description="The stored certificate with this fingerprint; null when it is not in the inventory.")
    async def inventory(self, info: Info) -> Certificate | None:
        return Certificate.from_model(await info.context.loaders.certificate_by_fingerprint.load(self.fingerprint_sha256))


@access(READ)
@strawberry.type
class InspectionResult:
    leaf: CertificateDetails
    chain: list[CertificateDetails] = strawberry.field(description="As served (or as given), starting with the leaf.")
    chain_trusted: bool | None = strawberry.field(
        description="The served chain verifies to a trust anchor (system store or CTOPS_CA_BUNDLE) at the server's clock."
    )
    chain_complete: bool | None = strawberry.field(
        description="Every certificate up to a self-signed one or a trust anchor's child is included."
    )
    hostname_matches: bool | None = strawberry.field(description="Null for inspectCertificate.")
    tls_version: str | None = strawberry.field(description="e.g. TLSv1.3; null for inspectCertificate.")
    cipher: str | None = strawberry.field(description="IANA name; null for inspectCertificate.")
    warnings: list[InspectionWarning]
    fetched_at: dt.datetime | None
    _identity: strawberry.Private[str | None]
    _leaf_fingerprint: strawberry.Private[str]

    @classmethod
    def of(cls, inspection: checker.Inspection) -> InspectionResult:
        details = [CertificateDetails.of(d) for d in inspection.chain]
        return cls(
            leaf=details[0],
            chain=details,
            chain_trusted=inspection.verdict.trusted,
            chain_complete=inspection.verdict.complete,
            hostname_matches=inspection.verdict.hostname_matches,
            tls_version=inspection.tls_version,
            cipher=inspection.cipher,
            warnings=[InspectionWarning.of(w) for w in inspection.warnings],
            fetched_at=inspection.fetched_at,
            _identity=inspection.endpoint.identity if inspection.endpoint else None,
            _leaf_fingerprint=inspection.leaf.fingerprint_sha256,
        )

    @strawberry.field(description="The tracked source this URL (or, for data, this leaf) already is; null when none.")
    async def already_tracked_as(
        self, info: Info
    ) -> Annotated[TrackedSource, strawberry.lazy("backend.schema.tracked_sources")] | None:
        from backend.schema.tracked_sources import TrackedSource

        if self._identity is not None:
            found = await tracked_sources.find_tracking(identity=self._identity)
        else:
            found = await tracked_sources.find_tracking(fingerprint=self._leaf_fingerprint)
        return TrackedSource.from_model(found)


@access(READ)
@strawberry.type
class CheckerQueries:
    @strawberry.field(
        description="Fetch and judge the chain a TLS endpoint serves (https, ldaps, smtps, imaps, pop3s, ftps; STARTTLS for"
        " smtp, imap, pop3, ldap, postgres; a bare host[:port] is https). Rate-limited per token (CTOPS_INSPECT_RATE)."
    )
    async def inspect_url(self, info: Info, url: str, server_name: str | None = None) -> InspectionResult:
        viewer = info.context.require_viewer()
        settings = info.context.settings
        subject = str(viewer.token_id) if viewer.token_id is not None else viewer.name
        app = getattr(info.context.request, "app", None)
        await rate_limits.check(
            "inspectUrl", subject, settings.inspect_rate, settings.redis_url, holder=getattr(app, "state", None)
        )
        return InspectionResult.of(await checker.inspect_url(url, server_name, settings=settings))

    @strawberry.field(
        description="Read and judge certificate data: PEM (bundles), base64 DER, PKCS#7, or PKCS#12 with `password`."
        " Exactly one leaf; the other certificates are its chain."
    )
    def inspect_certificate(self, info: Info, data: str, password: str | None = None) -> InspectionResult:
        return InspectionResult.of(checker.inspect_data(data, password, settings=info.context.settings))
