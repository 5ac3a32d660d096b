"""THE renewal rule: what it means when a place holds a different certificate.

At one place (a file position on a host, a TLS endpoint, a tracked source) a
new fingerprint that shares a name (the CN or any SAN value, either way round)
with the certificate that was there is the same logical certificate:

- later ``notAfter``   -> RENEWED
- equal ``notAfter``   -> RENEWED with ``reissued: true``
- earlier ``notAfter`` -> EXPIRY_CHANGED

and the new certificate's ``renewedFrom`` points at the old one. A new
certificate with no name in common is a replacement: the old one left that
place and the new one was discovered there.

A pure function of the two certificates: ingest and the checker both call
:func:`decide`, so an agent and a tracked URL can never disagree about what a
renewal is. The ``details`` keys are documented in ``docs/events.md``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from collections.abc import Iterable
from typing import Any

from backend.models import EventType


class Outcome(str, enum.Enum):
    RENEWED = "RENEWED"
    EXPIRY_CHANGED = "EXPIRY_CHANGED"
    REPLACED = "REPLACED"


@dataclasses.dataclass(frozen=True, slots=True)
class Facts:
    """What the rule reads of a certificate (a stored row or a parsed description)."""

    fingerprint: str
    common_name: str | None
    sans: tuple[str, ...]
    not_after: dt.datetime
    spki_sha256: str

    @classmethod
    def of(cls, certificate: Any) -> Facts:
        """From anything with the X.509 attributes: a ``Certificate`` row or an
        ``x509.CertificateDescription`` (SANs as objects or as stored dicts)."""
        return cls(
            fingerprint=certificate.fingerprint_sha256,
            common_name=certificate.common_name,
            sans=tuple(san_values(certificate.sans)),
            not_after=certificate.not_after,
            spki_sha256=certificate.spki_sha256,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    details: dict[str, Any]

    @property
    def same_certificate(self) -> bool:
        """The new certificate continues the old one (``renewedFrom`` links them)."""
        return self.outcome is not Outcome.REPLACED

    @property
    def event_type(self) -> EventType | None:
        """The event recorded on the new certificate; None for a replacement
        (which records REMOVED_FROM_HOST on the old one and DISCOVERED on the new)."""
        if self.outcome is Outcome.RENEWED:
            return EventType.RENEWED
        if self.outcome is Outcome.EXPIRY_CHANGED:
            return EventType.EXPIRY_CHANGED
        return None


def san_values(sans: Iterable[Any]) -> Iterable[str]:
    for san in sans or ():
        yield san["value"] if isinstance(san, dict) else san.value


def names(facts: Facts) -> frozenset[str]:
    """The certificate's names, compared case-insensitively (DNS names are)."""
    found = {value.strip().lower() for value in facts.sans if value and value.strip()}
    if facts.common_name and facts.common_name.strip():
        found.add(facts.common_name.strip().lower())
    return frozenset(found)


def instant(value: dt.datetime) -> str:
    """How ``details`` spell a timestamp: ISO 8601 UTC."""
    return value.astimezone(dt.timezone.utc).isoformat()


def decide(old: Facts, new: Facts) -> Decision:
    """What replacing ``old`` by ``new`` at one place means (fingerprints differ)."""
    if not names(old) & names(new):
        return Decision(Outcome.REPLACED, {"previousFingerprint": old.fingerprint})
    key_changed = old.spki_sha256 != new.spki_sha256
    if new.not_after < old.not_after:
        return Decision(
            Outcome.EXPIRY_CHANGED,
            {
                "previousFingerprint": old.fingerprint,
                "keyChanged": key_changed,
                "previousNotAfter": instant(old.not_after),
                "notAfter": instant(new.not_after),
            },
        )
    return Decision(
        Outcome.RENEWED,
        {
            "previousFingerprint": old.fingerprint,
            "keyChanged": key_changed,
            "reissued": new.not_after == old.not_after,
        },
    )
