"""The agent's one configuration file (TOML), its defaults and its writer.

Every setting is documented in ``docs/agent.md``; :class:`Config` is the one
place that knows them. ``ctops-agent enroll`` writes the file (mode 0600, it
holds the agent token); people may add the other settings by hand.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from dataclasses import dataclass, field
from typing import Any

SYSTEM_CONFIG = "/etc/ctops/agent.toml"

DEFAULT_PATHS = (
    "/etc/ssl",
    "/etc/pki",
    "/etc/letsencrypt/live",
    "/usr/local/share/ca-certificates",
)

#: The distributions' trust stores: hundreds of public roots per host that
#: nobody here renews. Locally added CAs (/usr/local/share/ca-certificates,
#: /etc/pki/ca-trust/source/anchors) are still found.
DEFAULT_EXCLUDES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Alpine: the generated bundle
    "/etc/ssl/certs/????????.[0-9]",  # OpenSSL hash links (c_rehash)
    "/usr/share/ca-certificates/*",  # Debian, Ubuntu: the roots /etc/ssl/certs/*.pem link to
    "/etc/ssl/ca-bundle.pem",  # SUSE: the generated bundle
    "/var/lib/ca-certificates/*",  # SUSE: /etc/ssl/certs links here
    "/etc/pki/ca-trust/extracted/*",  # RHEL, Fedora: the generated bundles
    "/etc/pki/tls/certs/ca-bundle*",  # RHEL: compatibility links to the bundles
    "/usr/share/pki/ca-trust-source/*",  # RHEL, Fedora: the distribution's roots
    "cacerts",  # Java trust stores, anywhere (e.g. /etc/ssl/certs/java/cacerts)
)


class ConfigError(ValueError):
    """The configuration file is missing, unreadable or has a bad setting."""


def default_hostname() -> str:
    """The fully qualified name when the resolver knows one, else the plain host name."""
    import socket

    fqdn = socket.getfqdn()
    if fqdn and "." in fqdn and not fqdn.startswith("localhost"):
        return fqdn
    return socket.gethostname()


def default_config_path() -> str:
    """``/etc/ctops/agent.toml`` for root, else ``$XDG_CONFIG_HOME/ctops/agent.toml``."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return SYSTEM_CONFIG
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "ctops", "agent.toml")


@dataclass
class Config:
    server_url: str | None = None
    token: str | None = None
    hostname: str = field(default_factory=default_hostname)
    paths: list[str] = field(default_factory=list)
    """Scanned in addition to :data:`DEFAULT_PATHS` (unless ``default_paths`` is false)."""
    default_paths: bool = True
    exclude: list[str] = field(default_factory=list)
    """Added to :data:`DEFAULT_EXCLUDES` (unless ``default_excludes`` is false)."""
    default_excludes: bool = True
    ports: list[int] | str = field(default_factory=list)
    """Port numbers, or ``"auto"`` for every listening port."""
    keystore_passwords: list[str] = field(default_factory=list)
    interval_seconds: int = 3600
    max_file_size: int = 1024 * 1024
    follow_symlinks: bool = True
    probe_timeout_seconds: float = 3.0
    request_timeout_seconds: float = 30.0
    ca_file: str | None = None
    """PEM file of the CA(s) that signed the server's certificate, when not a public CA."""
    retry_initial_seconds: float = 5.0
    retry_max_seconds: float = 300.0
    retry_attempts: int = 6

    def scan_paths(self) -> list[str]:
        return list(self.paths)

    def optional_paths(self) -> list[str]:
        """Built-in paths: skipped silently where the host does not have them."""
        return list(DEFAULT_PATHS) if self.default_paths else []

    def excludes(self) -> list[str]:
        return [*(DEFAULT_EXCLUDES if self.default_excludes else ()), *self.exclude]


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "server_url": (str,),
    "token": (str,),
    "hostname": (str,),
    "paths": (list,),
    "default_paths": (bool,),
    "exclude": (list,),
    "default_excludes": (bool,),
    "ports": (list, str),
    "keystore_passwords": (list,),
    "interval_seconds": (int,),
    "max_file_size": (int,),
    "follow_symlinks": (bool,),
    "probe_timeout_seconds": (int, float),
    "request_timeout_seconds": (int, float),
    "ca_file": (str,),
    "retry_initial_seconds": (int, float),
    "retry_max_seconds": (int, float),
    "retry_attempts": (int,),
}
assert set(_FIELD_TYPES) == {f.name for f in dataclasses.fields(Config)}


def parse_ports(values: list[Any] | str) -> list[int] | str:
    """``[443, "8443"]`` -> ``[443, 8443]``; ``"auto"`` (alone or in the list) -> ``"auto"``."""
    items = [values] if isinstance(values, str) else list(values)
    ports: list[int] = []
    for item in items:
        if isinstance(item, str) and item.strip().lower() == "auto":
            return "auto"
        try:
            port = int(item)
        except (TypeError, ValueError):
            raise ConfigError(f"ports: {item!r} is neither a port number nor \"auto\"") from None
        if isinstance(item, bool) or not 0 < port < 65536:
            raise ConfigError(f"ports: {item!r} is not a TCP port number")
        ports.append(port)
    return sorted(set(ports))


def from_mapping(values: dict[str, Any]) -> Config:
    unknown = sorted(set(values) - set(_FIELD_TYPES))
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
    clean: dict[str, Any] = {}
    for name, value in values.items():
        expected = _FIELD_TYPES[name]
        if not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected):
            raise ConfigError(f"{name}: expected {' or '.join(t.__name__ for t in expected)}")
        if name in ("paths", "exclude", "keystore_passwords") and not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{name}: expected a list of strings")
        clean[name] = value
    if "ports" in clean:
        clean["ports"] = parse_ports(clean["ports"])
    config = Config(**clean)
    for name in ("interval_seconds", "max_file_size", "retry_attempts"):
        if getattr(config, name) < 1:
            raise ConfigError(f"{name}: must be at least 1")
    for name in ("probe_timeout_seconds", "request_timeout_seconds", "retry_initial_seconds", "retry_max_seconds"):
        if getattr(config, name) <= 0:
            raise ConfigError(f"{name}: must be positive")
    if config.server_url is not None:
        config.server_url = config.server_url.rstrip("/")
    return config


def read_mapping(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def load(path: str | None = None, *, required: bool = False) -> Config:
    """The configuration at ``path`` (default: :func:`default_config_path`).

    A missing default file gives the defaults unless ``required``; a file
    named explicitly must exist.
    """
    if path is None:
        path = default_config_path()
        if not required and not os.path.exists(path):
            return Config()
    try:
        return from_mapping(read_mapping(path))
    except ConfigError as exc:
        if str(exc).startswith(path):
            raise
        raise ConfigError(f"{path}: {exc}") from None


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON string escapes are valid TOML basic strings
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def to_toml(values: dict[str, Any]) -> str:
    """TOML for a flat mapping of strings, numbers, booleans and lists of those."""
    return "".join(f"{name} = {_toml_value(value)}\n" for name, value in values.items())


def write(path: str, updates: dict[str, Any]) -> None:
    """Set ``updates`` in the file at ``path``, keeping its other settings.

    The file is replaced atomically with mode 0600 (it holds the token); its
    parent directories are created (mode 0700) when missing. Comments in an
    existing file are not kept.
    """
    import tempfile

    values: dict[str, Any] = read_mapping(path) if os.path.exists(path) else {}
    values.update(updates)
    from_mapping(values)  # refuse to write a file we could not read back
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=".agent-", suffix=".toml", dir=directory)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("# CT-Ops agent configuration; settings: docs/agent.md\n")
            handle.write(to_toml(values))
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
