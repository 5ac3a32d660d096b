"""Helpers for checker tests: a test PKI trusted through CTOPS_CA_BUNDLE, settings
that open loopback, and a resolver that answers fixed names without DNS."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

from backend import settings as settings_module
from tests.certs import Issued, make_ca, make_cert

LOOPBACK = ("127.0.0.0/8", "::1")


@dataclasses.dataclass(frozen=True)
class PKI:
    root: Issued
    intermediate: Issued
    ca_file: Path

    def leaf(self, name: str = "shop.test", **options) -> Issued:
        options.setdefault("sans", (name,))
        return make_cert(name, issuer=self.intermediate, **options)

    def chain(self, name: str = "shop.test", **options) -> list[Issued]:
        return [self.leaf(name, **options), self.intermediate]


def make_pki(directory: Path, name: str = "Checker Test") -> PKI:
    root = make_ca(f"{name} Root CA")
    intermediate = make_ca(f"{name} Intermediate CA", issuer=root, path_length=0)
    ca_file = directory / f"{name.replace(' ', '-').lower()}-ca.pem"
    ca_file.write_text(root.pem)
    return PKI(root, intermediate, ca_file)


def checker_settings(pki: PKI | None = None, **overrides) -> settings_module.Settings:
    """Settings for in-process checker calls: loopback allowed, 1 s timeout, the test CA trusted."""
    values = {
        "outbound_allow": LOOPBACK,
        "tls_timeout_seconds": 1.0,
        "ca_bundle": str(pki.ca_file) if pki else None,
        "redis_url": None,
    }
    values.update(overrides)
    return dataclasses.replace(settings_module.load(), **values)


class StaticResolver:
    """Resolves the names it was given (to loopback addresses); anything else does not exist."""

    def __init__(self, names: dict[str, list[str]] | None = None) -> None:
        self.names = dict(names or {})
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        if host in self.names:
            return list(self.names[host])
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
