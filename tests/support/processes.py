"""Real processes for tests: `ctops` commands, servers on free loopback ports.

Every wait is bounded in time; every process is stopped by its context manager.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def ctops_env(**overrides: str | None) -> dict[str, str]:
    """The environment for a `ctops` subprocess: ours, minus anything that
    would point it at another database or clock, plus the overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTOPS_") and k not in ("DATABASE_URL", "REDIS_URL")}
    env["PYTHONPATH"] = str(ROOT)
    for key, value in overrides.items():
        if value is not None:
            env[key] = value
    return env


def ctops(*args: str, env: dict[str, str], timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "backend.cli", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(f"ctops {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s")


def wait_for_output(log: Path, pattern: str, timeout: float = 20) -> re.Match:
    """The first match of ``pattern`` in a process's log, once it is written."""
    deadline = time.monotonic() + timeout
    while True:
        match = re.search(pattern, log.read_text(errors="replace")) if log.exists() else None
        if match is not None:
            return match
        if time.monotonic() > deadline:
            raise TimeoutError(f"{pattern!r} did not appear in {log} after {timeout} s")
        time.sleep(0.05)


@contextlib.contextmanager
def running(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """Run a command in the background (its own process group), output to ``log``."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=5)


def ctops_args(*args: str) -> list[str]:
    return [sys.executable, "-m", "backend.cli", *args]
