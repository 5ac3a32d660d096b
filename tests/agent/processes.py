"""Running the real agent CLI in a subprocess, as root or as an unprivileged user."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
_DROPPED = ("CTOPS_FAKE_NOW", "CTOPS_CLOCK_OFFSET_SECONDS")


def environment(extra: dict | None = None) -> dict[str, str]:
    """This environment without proxies or a shifted clock, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy") and k not in _DROPPED}
    env.update(extra or {})
    return env


def run_cli(
    *args: str, user: str | None = None, env: dict | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    """``python -m agent.cli ARGS`` in a subprocess, optionally as another user (via setpriv)."""
    command = [PYTHON, "-m", "agent.cli", *args]
    if user is not None:
        command = ["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups", *command]
    return subprocess.run(command, cwd=ROOT, env=environment(env), capture_output=True, text=True, timeout=timeout)
