"""A certificate, identified by the SHA-256 of its DER."""

from __future__ import annotations

from tortoise import fields
from tortoise.indexes import Index
from tortoise.models import Model


class Certificate(Model):
    id = fields.IntField(primary_key=True)
    fingerprint_sha256 = fields.CharField(max_length=64, unique=True)
    fingerprint_sha1 = fields.CharField(max_length=40)
    serial_number = fields.CharField(max_length=512)
    spki_sha256 = fields.CharField(max_length=64, db_index=True)
    common_name = fields.CharField(max_length=1024, null=True)
    # Lower-cased CN (or subject when there is none): COMMON_NAME_ASC sorts on
    # it, never NULL so every backend orders it the same way.
    sort_name = fields.CharField(max_length=255)
    subject = fields.TextField()
    issuer = fields.TextField()
    issuer_common_name = fields.CharField(max_length=1024, null=True)
    not_before = fields.DatetimeField()
    not_after = fields.DatetimeField()
    sans = fields.JSONField(default=list)
    key_algorithm = fields.CharField(max_length=16)
    key_size = fields.IntField(null=True)
    curve = fields.CharField(max_length=128, null=True)
    signature_algorithm = fields.CharField(max_length=128)
    is_ca = fields.BooleanField(default=False)
    path_length = fields.IntField(null=True)
    key_usage = fields.JSONField(default=list)
    extended_key_usage = fields.JSONField(default=list)
    subject_key_identifier = fields.CharField(max_length=128, null=True, db_index=True)
    authority_key_identifier = fields.CharField(max_length=128, null=True)
    self_signed = fields.BooleanField(default=False)
    der = fields.BinaryField()
    # Lower-cased CN, SANs, subject and issuer: what `search` matches (LIKE).
    search_text = fields.TextField()

    # Where it is now. Maintained by the transaction that changes locations or
    # sources, so the default listing, stats and sweep touch current rows only.
    live_locations = fields.IntField(default=0)
    live_sources = fields.IntField(default=0)
    is_current = fields.BooleanField(default=False)
    # Ever seen by an agent / ever imported (the `source` filter with history).
    seen_by_agent = fields.BooleanField(default=False)
    imported = fields.BooleanField(default=False)

    # Status as of the last sweep (set when stored): status changes are
    # recorded exactly once by comparing against it.
    last_status = fields.CharField(max_length=16, null=True)

    renewed_from: fields.ForeignKeyNullableRelation[Certificate] = fields.ForeignKeyField(
        "models.Certificate", related_name="renewed_by", null=True, on_delete=fields.SET_NULL
    )
    first_seen_at = fields.DatetimeField()
    last_seen_at = fields.DatetimeField()
    created_at = fields.DatetimeField()

    class Meta:
        table = "certificate"
        indexes = (
            Index(fields=("is_current", "not_after", "id"), name="certificate_current_not_after"),
            Index(fields=("not_after", "id"), name="certificate_not_after"),
            Index(fields=("sort_name", "id"), name="certificate_sort_name"),
            Index(fields=("last_seen_at", "id"), name="certificate_last_seen"),
        )

    def __str__(self) -> str:
        return f"{self.common_name or self.subject} ({self.fingerprint_sha256[:12]})"
