"""Storing certificates: the one mapping from a parsed description to a row."""

from __future__ import annotations

import datetime as dt
from typing import Any

from backend.x509 import CertificateDescription
from backend.services.status import status_of


def search_text(desc: CertificateDescription) -> str:
    """What `search` matches: CN, SANs, subject and issuer, lower-cased."""
    parts = [desc.common_name or "", *(san.value for san in desc.sans), desc.subject, desc.issuer]
    return "\n".join(p for p in parts if p).lower()


def sort_name(desc: CertificateDescription) -> str:
    return (desc.common_name or desc.subject or "").lower()[:255]


def certificate_fields(desc: CertificateDescription, now: dt.datetime) -> dict[str, Any]:
    """Column values for a new ``Certificate`` row (presence counters start at zero)."""
    return {
        "fingerprint_sha256": desc.fingerprint_sha256,
        "fingerprint_sha1": desc.fingerprint_sha1,
        "serial_number": desc.serial_number,
        "spki_sha256": desc.spki_sha256,
        "common_name": desc.common_name,
        "sort_name": sort_name(desc),
        "subject": desc.subject,
        "issuer": desc.issuer,
        "issuer_common_name": desc.issuer_common_name,
        "not_before": desc.not_before,
        "not_after": desc.not_after,
        "sans": [{"type": san.type, "value": san.value} for san in desc.sans],
        "key_algorithm": desc.key_algorithm,
        "key_size": desc.key_size,
        "curve": desc.curve,
        "signature_algorithm": desc.signature_algorithm,
        "is_ca": desc.is_ca,
        "path_length": desc.path_length,
        "key_usage": list(desc.key_usage),
        "extended_key_usage": list(desc.extended_key_usage),
        "subject_key_identifier": desc.subject_key_identifier,
        "authority_key_identifier": desc.authority_key_identifier,
        "self_signed": desc.self_signed,
        "der": desc.der,
        "search_text": search_text(desc),
        # Status as of storing: a certificate discovered already expired gets
        # no STATUS_CHANGED from the sweep.
        "last_status": status_of(desc.not_after, now).value,
        "first_seen_at": now,
        "last_seen_at": now,
        "created_at": now,
    }
