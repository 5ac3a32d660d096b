"""A throwaway PostgreSQL cluster with ``ssl = on``, for STARTTLS (SSLRequest) tests.

``initdb`` in a temporary directory, the test CA's certificate, a free loopback
port, fsync off; stopped (immediate) and deleted afterwards. As root the
cluster runs as the ``postgres`` user (``runuser``), as PostgreSQL refuses root.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests.certs import Issued
from tests.support.processes import free_port, wait_for_port
from tests.support.tls_servers import key_pem


def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _as_postgres(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@contextlib.contextmanager
def throwaway_postgres(chain: Sequence[Issued] | None) -> Iterator[int]:
    """Run a PostgreSQL with TLS serving ``chain`` (None: ``ssl = off``); yields its port."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL server binaries (initdb) are not installed (.ci/run installs them)")
    base = Path(tempfile.mkdtemp(prefix="ctops-pg-", dir="/tmp"))
    data = base / "data"
    port = free_port()
    owner = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
    if owner is not None:
        os.chown(base, owner.pw_uid, owner.pw_gid)
    try:
        subprocess.run(
            _as_postgres([str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"]),
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        settings = f"\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{base}'\nfsync = off\n"
        if chain:
            (data / "server.crt").write_text("".join(item.pem for item in chain))
            (data / "server.key").write_bytes(key_pem(chain[0]))
            for name in ("server.crt", "server.key"):
                if owner is not None:
                    os.chown(data / name, owner.pw_uid, owner.pw_gid)
            os.chmod(data / "server.key", 0o600)
            settings += "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"
        else:
            settings += "ssl = off\n"
        with open(data / "postgresql.conf", "a") as conf:
            conf.write(settings)
        subprocess.run(
            _as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-w", "-t", "60", "start"]),
            check=True, capture_output=True, timeout=90,
        )  # fmt: skip
        wait_for_port(port, timeout=30)
        yield port
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(
                _as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "-t", "30", "stop"]),
                capture_output=True, timeout=60,
            )  # fmt: skip
        shutil.rmtree(base, ignore_errors=True)
