"""Channel secrets at rest: Fernet (AES-128-CBC + HMAC-SHA256) keyed by ``CTOPS_SECRET_KEY``.

What is encrypted: a webhook channel's signing secret and a Slack channel's
incoming-webhook URL (the URL is the credential). Nothing decrypted ever goes
into a response, a log line or an error message.

The key:

- ``CTOPS_SECRET_KEY``: one Fernet key (32 url-safe base64 bytes, as
  ``Fernet.generate_key()`` prints them), or several separated by commas to
  rotate: the first encrypts, every one decrypts.
- Embedded mode without it: a key is generated on first start into
  ``$CTOPS_DATA_DIR/secret.key`` (created with mode 0600, never overwritten).
- Production mode (``REDIS_URL`` set) without it: channels that need a secret
  cannot be created, and the server and worker refuse to start while such
  channels exist (they could not be used).
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from backend.errors import BadUserInput, CtopsError

log = logging.getLogger("ctops.secrets")

KEY_FILE = "secret.key"
GENERATE_HINT = (
    'generate one with: python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
)


class SecretKeyMissing(BadUserInput):
    """Production mode without CTOPS_SECRET_KEY: channel secrets cannot be stored."""


class SecretUnreadable(CtopsError):
    """A stored secret does not decrypt with the configured key(s)."""

    code = "SECRET_UNREADABLE"


def _parse_keys(text: str) -> list[Fernet]:
    keys = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            keys.append(Fernet(part.encode("ascii")))
        except (ValueError, UnicodeEncodeError):
            raise ValueError(f"CTOPS_SECRET_KEY is not a Fernet key (32 url-safe base64-encoded bytes); {GENERATE_HINT}") from None
    if not keys:
        raise ValueError(f"CTOPS_SECRET_KEY is empty; {GENERATE_HINT}")
    return keys


def validate_settings(settings: object) -> None:
    """Refuse to start on a malformed CTOPS_SECRET_KEY (checked before anything runs)."""
    key = getattr(settings, "secret_key", None)
    if key:
        try:
            _parse_keys(key)
        except ValueError as exc:
            raise SystemExit(f"Invalid setting: {exc}") from None


def key_file(settings: object) -> Path:
    return Path(getattr(settings, "data_dir")) / KEY_FILE


def _read_or_create_key_file(path: Path) -> str:
    """The embedded key: read it, or create it (0600, exclusively: two processes
    starting at once agree on the first one written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        key = Fernet.generate_key()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "wb") as out:
                out.write(key + b"\n")
            log.info("Generated the secret key for channel secrets: %s (mode 0600; back it up with the database)", path)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        os.chmod(path, 0o600)
        log.warning("%s was readable by others (mode %o): set to 0600", path, mode)
    text = path.read_text(encoding="ascii").strip()
    if not text:  # a concurrent creator has not written it yet
        import time

        for _ in range(50):
            time.sleep(0.01)
            text = path.read_text(encoding="ascii").strip()
            if text:
                break
    return text


@functools.lru_cache(maxsize=8)
def _box(configured: str | None, embedded: bool, path: str) -> MultiFernet | None:
    if configured:
        return MultiFernet(_parse_keys(configured))
    if embedded:
        return MultiFernet(_parse_keys(_read_or_create_key_file(Path(path))))
    return None


def box(settings: object) -> MultiFernet | None:
    """The key ring for these settings; None in production mode without a key."""
    return _box(
        getattr(settings, "secret_key", None),
        bool(getattr(settings, "embedded", True)),
        str(key_file(settings)),
    )


def key_source(settings: object) -> str:
    """For /readyz: ``configured`` (CTOPS_SECRET_KEY), ``generated`` (embedded key
    file) or ``missing``."""
    if getattr(settings, "secret_key", None):
        return "configured"
    if getattr(settings, "embedded", True):
        return "generated"
    return "missing"


def encrypt(settings: object, plaintext: str) -> str:
    ring = box(settings)
    if ring is None:
        raise SecretKeyMissing(
            "CTOPS_SECRET_KEY is not set: in production mode it is required to store channel secrets "
            "(webhook secrets, Slack URLs)."
        )
    return ring.encrypt(plaintext.encode("utf-8")).decode("ascii")


def decrypt(settings: object, token: str) -> str:
    ring = box(settings)
    if ring is None:
        raise SecretUnreadable("CTOPS_SECRET_KEY is not set: the channel's secret cannot be read.")
    try:
        return ring.decrypt(token.encode("ascii")).decode("utf-8")
    except (InvalidToken, ValueError):
        raise SecretUnreadable(
            "The channel's secret does not decrypt with CTOPS_SECRET_KEY (was the key changed? "
            "keep the old key after the new one, comma-separated, to rotate)."
        ) from None


async def check_ready(settings: object) -> None:
    """At start-up: make sure stored secrets can be used (generate the embedded
    key on first start; refuse to start in production without a key while
    channels need one)."""
    if getattr(settings, "secret_key", None) or getattr(settings, "embedded", True):
        box(settings)
        return
    from backend.models import NotificationChannel

    needing = await NotificationChannel.filter(secret_encrypted__isnull=False, deleted_at__isnull=True).count()
    if needing:
        raise SystemExit(
            f"CTOPS_SECRET_KEY is not set, but {needing} notification channel(s) store an encrypted secret: "
            f"set the key they were stored with. {GENERATE_HINT}"
        )
