"""Where one certificate was seen on one host: a file position or a TLS port."""

from __future__ import annotations

import enum
import hashlib

from tortoise import fields
from tortoise.indexes import Index
from tortoise.models import Model


class LocationKind(str, enum.Enum):
    FILE = "FILE"
    PORT = "PORT"


def place_key(
    kind: LocationKind | str,
    *,
    path: str | None = None,
    index: int = 0,
    alias: str | None = None,
    address: str | None = None,
    port: int | None = None,
    server_name: str | None = None,
) -> str:
    """A fixed-width key for "the same place on a host" (the renewal rule's location).

    A file place is (path, index) for bundles and (path, alias, index) for
    keystore entries, where the index counts within the alias (0 = the entry's
    own certificate, then its chain): Java writes entries in hash order, so a
    position across the whole keystore shuffles when an entry is added. A port
    place is (address, port, serverName, index).
    """
    kind = LocationKind(kind)
    if kind is LocationKind.FILE:
        parts = ["FILE", path or "", f"index={index}"] if alias is None else ["FILE", path or "", f"alias={alias}", f"index={index}"]
    else:
        parts = ["PORT", address or "", str(port or 0), server_name or "", str(index)]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


class CertificateLocation(Model):
    id = fields.IntField(primary_key=True)
    certificate: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "models.Certificate", related_name="locations", on_delete=fields.CASCADE
    )
    host: fields.ForeignKeyRelation = fields.ForeignKeyField(
        "models.Host", related_name="locations", on_delete=fields.CASCADE
    )
    kind = fields.CharEnumField(LocationKind, max_length=8)
    place = fields.CharField(max_length=64)
    path = fields.TextField(null=True)
    link_paths = fields.JSONField(default=list)
    index = fields.IntField(default=0)
    alias = fields.CharField(max_length=512, null=True)
    address = fields.CharField(max_length=64, null=True)
    port = fields.IntField(null=True)
    server_name = fields.CharField(max_length=255, null=True)
    first_seen_at = fields.DatetimeField()
    last_seen_at = fields.DatetimeField()
    removed_at = fields.DatetimeField(null=True)

    class Meta:
        table = "certificate_location"
        indexes = (
            Index(fields=("certificate_id", "removed_at"), name="location_certificate"),
            Index(fields=("host_id", "removed_at"), name="location_host"),
            Index(fields=("host_id", "place"), name="location_host_place"),
        )
