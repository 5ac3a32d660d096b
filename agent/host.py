"""One scan of this host: the files, then the ports, as one report document.

``ctops-agent scan`` prints it; ``ctops-agent run`` sends it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from backend import clock

from agent import formats, report, scan
from agent.config import Config


@dataclass
class HostScan:
    document: dict[str, Any]
    """The annotated ``ReportCertificatesInput`` (see :func:`agent.report.build`)."""
    files_read: int


def scan_host(
    config: Config,
    *,
    paths: Sequence[str] | None = None,
    ports: Sequence[int] | str | None = None,
    progress: scan.Progress | None = None,
) -> HostScan:
    """One scan of this host: files, then ports.

    ``paths`` (when given) replace the configured and default paths; ``ports``
    (when given) replace the configured ports.
    """
    scanned_at = clock.now()
    if paths:
        roots, optional = list(paths), []
    else:
        roots, optional = config.scan_paths(), config.optional_paths()
    files = scan.scan_files(
        roots,
        optional_paths=optional,
        excludes=scan.Excludes(config.excludes()),
        max_file_size=config.max_file_size,
        follow_symlinks=config.follow_symlinks,
        passwords=formats.passwords_to_try(config.keystore_passwords),
        progress=progress,
    )
    wanted_ports = config.ports if ports is None else ports
    if wanted_ports:
        from agent import probe  # ssl and threads: loaded only when ports are probed

        found = probe.probe_ports(wanted_ports, hostname=config.hostname, timeout=config.probe_timeout_seconds)
        port_certificates, port_errors, ports_complete = found.certificates, found.errors, found.complete
    else:
        port_certificates, port_errors, ports_complete = [], [], True
    document = report.build(
        files=files.certificates,
        ports=port_certificates,
        errors=[*files.errors, *port_errors],
        complete=files.complete and ports_complete,
        hostname=config.hostname,
        scanned_at=scanned_at,
        interval_seconds=config.interval_seconds,
    )
    return HostScan(document, files.files_read)
