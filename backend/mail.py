"""Sending e-mail through ``CTOPS_SMTP_URL``, over :func:`backend.outbound.connect`.

An asyncio SMTP client of our own rather than ``smtplib`` in a thread: the
connection is opened by the one outbound function, so the outbound policy
(resolve once, check every address, connect to that address) applies to mail
exactly as to webhooks, and a send shares the event loop and one deadline
instead of tying up a thread.

``CTOPS_SMTP_URL``:

- ``smtps://user:password@host:465``: implicit TLS;
- ``smtp://user:password@host:587``: STARTTLS, required whenever credentials
  are given (a server that does not offer it is an error: the password never
  crosses in clear); without credentials STARTTLS is used when offered;
- credentials are percent-decoded; AUTH PLAIN (or LOGIN) after TLS.

TLS verifies the server's certificate and name against the system store plus
``CTOPS_CA_BUNDLE``. The password never appears in errors or logs:
:func:`redacted` is the only form of the URL that is ever shown.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import email.policy
import email.utils
import ssl
from collections.abc import Sequence
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit, urlunsplit

from backend import http_client, outbound
from backend.errors import CheckErrorCode, CheckFailed

MAX_REPLY_LINES = 100
DEFAULT_PORTS = {"smtp": 25, "smtps": 465}


class MailError(CheckFailed):
    """The SMTP server refused something (with its code), or the dialogue broke."""

    def __init__(self, message: str, *, smtp_code: int | None = None) -> None:
        super().__init__(CheckErrorCode.CONNECTION_REFUSED, message)
        self.smtp_code = smtp_code


@dataclasses.dataclass(frozen=True)
class SmtpServer:
    scheme: str
    host: str
    port: int
    username: str | None = dataclasses.field(default=None, repr=False)
    password: str | None = dataclasses.field(default=None, repr=False)

    @property
    def where(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


def parse(url: str) -> SmtpServer:
    """ValueError (without the URL in it) when it is not an smtp:// or smtps:// URL."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise ValueError("CTOPS_SMTP_URL is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError("CTOPS_SMTP_URL must start with smtp:// (STARTTLS) or smtps:// (implicit TLS)")
    if not parts.hostname:
        raise ValueError("CTOPS_SMTP_URL has no host")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    return SmtpServer(scheme, outbound.normalise_host(parts.hostname), port or DEFAULT_PORTS[scheme], username, password)


def redacted(url: str | None) -> str | None:
    """The URL with its password replaced by ``***`` (the only form ever shown)."""
    if not url:
        return url
    try:
        parts = urlsplit(url.strip())
        if parts.password is None:
            return urlunsplit(parts)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "(unparseable URL)"


def validate_settings(settings: object) -> None:
    url = getattr(settings, "smtp_url", None)
    if url:
        try:
            parse(url)
        except ValueError as exc:
            raise SystemExit(f"Invalid setting: {exc}") from None


def build_message(
    *, sender: str, recipients: Sequence[str], subject: str, text: str, html: str, message_id_domain: str = "ctops"
) -> EmailMessage:
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject
    message["Date"] = email.utils.formatdate(usegmt=True)
    message["Message-ID"] = email.utils.make_msgid(domain=message_id_domain)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return message


class _Session:
    def __init__(self, connection: outbound.Connection, server: SmtpServer) -> None:
        self.connection = connection
        self.server = server

    async def reply(self) -> tuple[int, list[str]]:
        lines: list[str] = []
        for _ in range(MAX_REPLY_LINES):
            raw = await self.connection.reader.readline()
            if not raw:
                raise MailError(f"The SMTP server {self.server.where} closed the connection.")
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if len(line) < 3 or not line[:3].isdigit():
                raise MailError(f"{self.server.where} is not an SMTP server.")
            lines.append(line[4:])
            if len(line) == 3 or line[3] != "-":
                return int(line[:3]), lines
        raise MailError(f"The SMTP server {self.server.where} sent too long a reply.")

    async def command(self, text: str, expect: tuple[int, ...], *, shown: str | None = None) -> list[str]:
        """Send one command; ``shown`` is what errors say was sent (never credentials)."""
        self.connection.writer.write(text.encode("utf-8") + b"\r\n")
        await self.connection.writer.drain()
        code, lines = await self.reply()
        if code not in expect:
            what = shown or text.split(" ", 1)[0]
            detail = " ".join(lines)[:200]
            raise MailError(f"The SMTP server refused {what} ({code} {detail}).", smtp_code=code)
        return lines


def _extensions(lines: list[str]) -> dict[str, str]:
    out = {}
    for line in lines[1:]:
        keyword, _, rest = line.partition(" ")
        out[keyword.upper()] = rest.upper()
    return out


async def send(
    server: SmtpServer,
    message: EmailMessage,
    *,
    sender: str,
    recipients: Sequence[str],
    policy: outbound.Policy,
    timeout: float,
    ca_bundle: str | None = None,
    resolver: outbound.Resolver | None = None,
    client_name: str = "ctops.invalid",
) -> None:
    """Deliver ``message`` to ``recipients`` (all accepted, or MailError)."""
    context = http_client.tls_context(ca_bundle)
    connection: outbound.Connection | None = None
    try:
        async with asyncio.timeout(timeout):
            implicit = server.scheme == "smtps"
            connection = await outbound.connect(
                server.host, server.port, policy=policy, timeout=timeout,
                tls=context if implicit else None, server_name=server.host if implicit else None, resolver=resolver,
            )  # fmt: skip
            session = _Session(connection, server)
            code, _ = await session.reply()
            if code != 220:
                raise MailError(f"The SMTP server {server.where} is not ready ({code}).", smtp_code=code)
            extensions = _extensions(await session.command(f"EHLO {client_name}", (250,)))
            if not implicit:
                if "STARTTLS" in extensions:
                    await session.command("STARTTLS", (220,))
                    await connection.writer.start_tls(context, server_hostname=server.host)
                    extensions = _extensions(await session.command(f"EHLO {client_name}", (250,)))
                elif server.username is not None:
                    raise MailError(
                        f"The SMTP server {server.where} does not offer STARTTLS: the credentials in CTOPS_SMTP_URL "
                        "are never sent in clear (use smtps:// or a server with STARTTLS)."
                    )
            if server.username is not None:
                await _authenticate(session, extensions, server)
            await session.command(f"MAIL FROM:<{_address(sender)}>", (250,), shown="MAIL FROM")
            for recipient in recipients:
                await session.command(f"RCPT TO:<{_address(recipient)}>", (250, 251), shown=f"the recipient {recipient}")
            await session.command("DATA", (354,))
            connection.writer.write(_dot_stuffed(message.as_bytes()) + b".\r\n")
            await connection.writer.drain()
            code, lines = await session.reply()
            if code != 250:
                raise MailError(f"The SMTP server refused the message ({code} {' '.join(lines)[:200]}).", smtp_code=code)
            connection.writer.write(b"QUIT\r\n")
            await connection.writer.drain()
    except CheckFailed:
        raise
    except (Exception, asyncio.TimeoutError) as exc:  # noqa: BLE001 - every network failure is typed
        if isinstance(exc, ssl.SSLCertVerificationError):
            raise MailError(f"The SMTP server {server.where} presented a certificate that does not verify "
                            f"({exc.verify_message}).") from None  # fmt: skip
        raise outbound.failure(exc, server.host, server.port, tls=True) from None
    finally:
        if connection is not None:
            connection.abort()


async def _authenticate(session: _Session, extensions: dict[str, str], server: SmtpServer) -> None:
    mechanisms = set(extensions.get("AUTH", "").split())
    user = server.username or ""
    password = server.password or ""
    if "PLAIN" in mechanisms or not mechanisms:
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode("ascii")
        await session.command(f"AUTH PLAIN {token}", (235,), shown="the credentials (AUTH PLAIN)")
    elif "LOGIN" in mechanisms:
        await session.command("AUTH LOGIN", (334,))
        await session.command(base64.b64encode(user.encode()).decode("ascii"), (334,), shown="the user name (AUTH LOGIN)")
        await session.command(base64.b64encode(password.encode()).decode("ascii"), (235,), shown="the credentials (AUTH LOGIN)")
    else:
        raise MailError(f"The SMTP server {server.where} offers no AUTH mechanism we speak (PLAIN, LOGIN).")


def _address(text: str) -> str:
    address = email.utils.parseaddr(text)[1]
    if not address or any(c in address for c in "<>\r\n "):
        raise MailError("Not a valid e-mail address.")
    return address


def _dot_stuffed(data: bytes) -> bytes:
    data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    lines = data.split(b"\r\n")
    return b"\r\n".join(b"." + line if line.startswith(b".") else line for line in lines)
