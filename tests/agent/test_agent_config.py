"""agent.config: reading, validating and writing the TOML file."""

from __future__ import annotations

import os
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest

from agent import config
from tests.agent.processes import PYTHON, ROOT


def test_defaults():
    settings = config.Config()
    assert settings.interval_seconds == 3600
    assert settings.max_file_size == 1024 * 1024
    assert settings.follow_symlinks is True
    assert settings.ports == []
    assert settings.optional_paths() == list(config.DEFAULT_PATHS)
    assert settings.excludes() == list(config.DEFAULT_EXCLUDES)
    assert settings.hostname


def test_load_full_file(tmp_path: Path):
    path = tmp_path / "agent.toml"
    path.write_text(
        'server_url = "https://ctops.example/"\ntoken = "t0k"\nhostname = "web01"\n'
        'paths = ["/opt/app/tls"]\nexclude = ["*.bak"]\nports = [443, "8443"]\n'
        'keystore_passwords = ["s3cret"]\ninterval_seconds = 600\nmax_file_size = 2048\n'
        "follow_symlinks = false\nretry_initial_seconds = 0.01\nretry_max_seconds = 0.05\nretry_attempts = 3\n"
    )
    settings = config.load(str(path))
    assert settings.server_url == "https://ctops.example"
    assert settings.ports == [443, 8443]
    assert settings.scan_paths() == ["/opt/app/tls"]
    assert settings.excludes() == [*config.DEFAULT_EXCLUDES, "*.bak"]
    assert (settings.interval_seconds, settings.max_file_size, settings.follow_symlinks) == (600, 2048, False)
    assert (settings.retry_initial_seconds, settings.retry_attempts) == (0.01, 3)


def test_defaults_can_be_switched_off(tmp_path: Path):
    path = tmp_path / "agent.toml"
    path.write_text('default_paths = false\ndefault_excludes = false\nexclude = ["*.old"]\nports = "auto"\n')
    settings = config.load(str(path))
    assert settings.optional_paths() == []
    assert settings.excludes() == ["*.old"]
    assert settings.ports == "auto"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("exlude = []\n", "unknown setting(s): exlude"),
        ('interval_seconds = "1h"\n', "interval_seconds: expected int"),
        ("follow_symlinks = 1\n", "follow_symlinks: expected bool"),
        ("max_file_size = true\n", "max_file_size: expected int"),
        ("ports = [70000]\n", "not a TCP port number"),
        ('ports = ["https"]\n', "neither a port number nor"),
        ("paths = [1]\n", "paths: expected a list of strings"),
        ("interval_seconds = 0\n", "interval_seconds: must be at least 1"),
        ("this is not toml", "not valid TOML"),
    ],
)
def test_bad_settings_are_refused_with_the_reason(tmp_path: Path, text, message):
    path = tmp_path / "agent.toml"
    path.write_text(text)
    with pytest.raises(config.ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        config.load(str(path))


def test_explicit_file_must_exist(tmp_path: Path):
    with pytest.raises(config.ConfigError, match="no such file"):
        config.load(str(tmp_path / "nope.toml"))


def test_write_creates_parents_and_mode_0600_and_keeps_other_settings(tmp_path: Path):
    path = tmp_path / "etc" / "ctops" / "agent.toml"
    config.write(str(path), {"server_url": "http://127.0.0.1:8000", "token": 'a"b\\c\u00e9', "hostname": "h"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert tomllib.loads(path.read_text())["token"] == 'a"b\\c\u00e9'

    with path.open("a") as handle:
        handle.write('keystore_passwords = ["x"]\nports = [443]\n')
    path.chmod(0o644)
    config.write(str(path), {"token": "new"})
    values = tomllib.loads(path.read_text())
    assert values == {
        "server_url": "http://127.0.0.1:8000",
        "token": "new",
        "hostname": "h",
        "keystore_passwords": ["x"],
        "ports": [443],
    }
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["agent.toml"]  # no temporary left behind


def test_to_toml_round_trips():
    values = {"s": "line\nbreak \"quoted\" \\ tab\t", "i": 3, "f": 0.5, "b": False, "l": ["a", "b"], "n": [1, 2]}
    assert tomllib.loads(config.to_toml(values)) == values


PRINT_DEFAULTS = "from agent import config; print(config.default_config_path()); print(config.load().token)"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to compare root's and a user's default")
def test_default_config_path_for_root_and_for_users(public_tmp: Path):
    assert config.default_config_path() == "/etc/ctops/agent.toml"
    as_nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", PYTHON, "-c", PRINT_DEFAULTS]
    environment = {"PATH": os.environ["PATH"], "HOME": "/nonexistent"}
    plain = subprocess.run(as_nobody, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60)
    assert plain.stdout.splitlines() == ["/nonexistent/.config/ctops/agent.toml", "None"], plain.stderr

    (public_tmp / "ctops").mkdir(mode=0o755)
    (public_tmp / "ctops" / "agent.toml").write_text('token = "from-xdg"\n')
    (public_tmp / "ctops" / "agent.toml").chmod(0o644)
    with_xdg = {**environment, "XDG_CONFIG_HOME": str(public_tmp)}
    xdg = subprocess.run(as_nobody, cwd=ROOT, env=with_xdg, capture_output=True, text=True, timeout=60)
    assert xdg.stdout.splitlines() == [f"{public_tmp}/ctops/agent.toml", "from-xdg"], xdg.stderr
