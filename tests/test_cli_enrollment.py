"""`ctops enrollment-token create`, run as a real process."""

from __future__ import annotations

import re

from tests.support.processes import ctops, ctops_env


def test_enrollment_token_create_prints_the_secret_last(tmp_path):
    env = ctops_env(CTOPS_DATA_DIR=str(tmp_path / "data"))
    ctops("migrate", env=env)
    created = ctops("enrollment-token", "create", "--name", "rollout", "--max-uses", "5", "--expires-in-hours", "2", env=env)
    lines = created.stdout.strip().splitlines()
    assert re.fullmatch(r"ctops_enr_[A-Za-z0-9_-]{43}", lines[-1])
    assert "rollout" in lines[0] and "5 use(s)" in lines[0]
    again = ctops("enrollment-token", "create", "--name", "rollout", env=env, check=False)
    assert again.returncode == 2 and "exists already" in again.stderr and "Traceback" not in again.stderr
    bad = ctops("enrollment-token", "create", "--name", "x", "--max-uses", "0", env=env, check=False)
    assert bad.returncode == 2 and "maxUses" in bad.stderr
