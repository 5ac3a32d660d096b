"""What a scan finds: certificates at their locations, and the problems met.

Plain values shared by the file walk (:mod:`agent.scan`), the port probe
(:mod:`agent.probe`) and the report builder (:mod:`agent.report`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FileCertificate:
    """A certificate in a file.

    ``path`` is the file's resolved real path; ``link_paths`` the other paths
    (symbolic links, or paths through linked directories) the scan reached it
    by, sorted. ``index`` counts certificates only, from 0, in file order; in
    a keystore it counts within the entry named ``alias`` (see
    :class:`agent.formats.Found`).
    """

    path: str
    index: int
    der: bytes
    link_paths: tuple[str, ...] = ()
    alias: str | None = None


@dataclass(frozen=True, slots=True)
class PortCertificate:
    """A certificate served on a TCP port; ``index`` 0 is the leaf."""

    address: str
    port: int
    server_name: str | None
    index: int
    der: bytes


@dataclass(frozen=True, order=True, slots=True)
class ScanError:
    """Something that could hold certificates but could not be read.

    ``path`` is a file or directory path, or ``address:port`` for a port.
    ``reason`` is short and for people; it never contains file contents or
    passwords.
    """

    path: str
    reason: str


def endpoint(address: str, port: int) -> str:
    """``address:port`` as people write it (``[::1]:443`` for IPv6)."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
