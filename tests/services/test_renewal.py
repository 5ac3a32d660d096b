"""THE renewal rule, as a pure function."""

from __future__ import annotations

import datetime as dt

from backend import x509
from backend.models import EventType
from backend.services import renewal
from backend.services.renewal import Facts, Outcome, decide
from tests import certs

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc)
DAY = dt.timedelta(days=1)


def facts(cn: str | None, *sans: str, days: int = 90, key: str = "k1", fp: str = "") -> Facts:
    return Facts(fingerprint=fp or f"{cn}-{days}-{key}", common_name=cn, sans=sans, not_after=NOW + days * DAY,
                 spki_sha256=key)  # fmt: skip


def test_later_expiry_is_a_renewal():
    d = decide(facts("a.test", "a.test", fp="old"), facts("a.test", "a.test", days=180))
    assert d.outcome is Outcome.RENEWED and d.event_type is EventType.RENEWED and d.same_certificate
    assert d.details == {"previousFingerprint": "old", "keyChanged": False, "reissued": False}


def test_equal_expiry_is_a_reissue():
    d = decide(facts("a.test", fp="old"), facts("a.test", fp="new"))
    assert d.outcome is Outcome.RENEWED and d.details["reissued"] is True


def test_earlier_expiry_is_an_expiry_change():
    d = decide(facts("a.test", fp="old", days=90), facts("a.test", days=30, key="k2"))
    assert d.outcome is Outcome.EXPIRY_CHANGED and d.event_type is EventType.EXPIRY_CHANGED
    assert d.details == {
        "previousFingerprint": "old",
        "keyChanged": True,
        "previousNotAfter": (NOW + 90 * DAY).isoformat(),
        "notAfter": (NOW + 30 * DAY).isoformat(),
    }


def test_any_shared_name_counts_either_way_round_and_ignores_case():
    assert decide(facts("a.test"), facts(None, "x.test", "A.TEST", days=100)).same_certificate
    assert decide(facts(None, "www.b.test"), facts("www.b.test", days=100)).same_certificate
    assert decide(facts("c.test", "d.test"), facts("e.test", "D.test", days=100)).same_certificate


def test_no_name_in_common_is_a_replacement():
    d = decide(facts("a.test", "a.test", fp="old"), facts("b.test", "b.test", days=200))
    assert d.outcome is Outcome.REPLACED and d.event_type is None and not d.same_certificate
    assert decide(facts(None), facts(None, days=200)).outcome is Outcome.REPLACED  # nameless never match


def test_facts_read_descriptions_and_stored_rows_alike():
    issued = certs.make_cert("f.test", sans=("f.test", "www.f.test"))
    described = Facts.of(x509.describe(issued.der))

    class Row:  # a Certificate row keeps SANs as dicts
        fingerprint_sha256 = described.fingerprint
        common_name = "f.test"
        sans = [{"type": "DNS", "value": "f.test"}, {"type": "DNS", "value": "www.f.test"}]
        not_after = described.not_after
        spki_sha256 = described.spki_sha256

    assert Facts.of(Row()) == described
    assert renewal.names(described) == {"f.test", "www.f.test"}
