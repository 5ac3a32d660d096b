"""STARTTLS dialogues: what to say on a plain connection before the TLS handshake.

One coroutine per protocol, each reading bounded replies from an
``asyncio.StreamReader`` (lines of at most ``outbound.MAX_LINE_BYTES``, at most
:data:`MAX_REPLY_LINES` lines per reply). When the server does not offer TLS,
or answers something that is not its protocol, the result is
STARTTLS_NOT_SUPPORTED; the caller's deadline covers the dialogue.

- SMTP (RFC 3207): greeting 220, ``EHLO``, STARTTLS in the capabilities, ``STARTTLS`` -> 220.
- IMAP (RFC 3501): greeting ``* OK``, ``CAPABILITY`` lists STARTTLS, ``STARTTLS`` -> OK.
- POP3 (RFC 2595): greeting ``+OK``, ``STLS`` -> ``+OK``.
- LDAP (RFC 4511 §4.14): the StartTLS extended operation, resultCode 0.
- PostgreSQL: the SSLRequest message, answered ``S``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from backend.errors import CheckErrorCode, CheckFailed

MAX_REPLY_LINES = 100
CLIENT_NAME = "ctops-checker.invalid"


def not_supported(message: str) -> CheckFailed:
    return CheckFailed(CheckErrorCode.STARTTLS_NOT_SUPPORTED, message)


async def _line(reader: asyncio.StreamReader, protocol: str) -> str:
    try:
        raw = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raw = exc.partial
        else:
            raise not_supported(f"The server closed the connection before offering {protocol} STARTTLS.") from None
    except asyncio.LimitOverrunError:
        raise not_supported(f"The server's {protocol} reply is too long.") from None
    return raw.decode("latin-1").rstrip("\r\n")


async def _smtp_reply(reader: asyncio.StreamReader) -> tuple[int, list[str]]:
    """A (possibly multi-line) SMTP reply: its code and text lines."""
    lines: list[str] = []
    for _ in range(MAX_REPLY_LINES):
        line = await _line(reader, "SMTP")
        if len(line) < 3 or not line[:3].isdigit():
            raise not_supported(f"Not an SMTP server (it said {line[:60]!r}).")
        lines.append(line[4:])
        if len(line) == 3 or line[3] != "-":
            return int(line[:3]), lines
    raise not_supported("The SMTP reply has too many lines.")


async def smtp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    code, _ = await _smtp_reply(reader)
    if code != 220:
        raise not_supported(f"The SMTP server is not ready (greeting {code}).")
    writer.write(f"EHLO {CLIENT_NAME}\r\n".encode())
    code, lines = await _smtp_reply(reader)
    if code != 250:
        raise not_supported(f"The SMTP server refused EHLO ({code}).")
    if not any(line.split(" ", 1)[0].upper() == "STARTTLS" for line in lines[1:]):
        raise not_supported("The SMTP server does not offer STARTTLS.")
    writer.write(b"STARTTLS\r\n")
    code, lines = await _smtp_reply(reader)
    if code != 220:
        raise not_supported(f"The SMTP server refused STARTTLS ({code} {' '.join(lines)[:80]}).")


async def _imap_tagged(reader: asyncio.StreamReader, tag: str) -> tuple[str, list[str]]:
    untagged: list[str] = []
    for _ in range(MAX_REPLY_LINES):
        line = await _line(reader, "IMAP")
        if line.startswith(tag + " "):
            return line[len(tag) + 1 :].split(" ", 1)[0].upper(), untagged
        untagged.append(line)
    raise not_supported("The IMAP reply has too many lines.")


async def imap(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    greeting = await _line(reader, "IMAP")
    if not greeting.upper().startswith("* OK"):
        raise not_supported(f"Not a ready IMAP server (it said {greeting[:60]!r}).")
    capabilities = greeting.upper()
    if "STARTTLS" not in capabilities:
        writer.write(b"c1 CAPABILITY\r\n")
        status, untagged = await _imap_tagged(reader, "c1")
        capabilities = " ".join(untagged).upper() if status == "OK" else ""
    if "STARTTLS" not in capabilities.split():
        raise not_supported("The IMAP server does not offer STARTTLS.")
    writer.write(b"c2 STARTTLS\r\n")
    status, _ = await _imap_tagged(reader, "c2")
    if status != "OK":
        raise not_supported(f"The IMAP server refused STARTTLS ({status}).")


async def pop3(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    greeting = await _line(reader, "POP3")
    if not greeting.startswith("+OK"):
        raise not_supported(f"Not a ready POP3 server (it said {greeting[:60]!r}).")
    writer.write(b"STLS\r\n")
    answer = await _line(reader, "POP3")
    if not answer.startswith("+OK"):
        raise not_supported("The POP3 server does not offer STLS.")


_LDAP_STARTTLS_OID = b"1.3.6.1.4.1.1466.20037"
#: LDAPMessage { messageID 1, [APPLICATION 23] ExtendedRequest { [0] requestName } }
LDAP_STARTTLS_REQUEST = (
    b"\x30" + bytes([5 + 2 + len(_LDAP_STARTTLS_OID)])
    + b"\x02\x01\x01"
    + b"\x77" + bytes([2 + len(_LDAP_STARTTLS_OID)])
    + b"\x80" + bytes([len(_LDAP_STARTTLS_OID)]) + _LDAP_STARTTLS_OID
)  # fmt: skip


async def _ber_element(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One BER TLV (definite length, at most 64 KiB)."""
    head = await reader.readexactly(2)
    tag, first = head[0], head[1]
    if first & 0x80:
        count = first & 0x7F
        if not 0 < count <= 3:
            raise not_supported("Not an LDAP reply.")
        length = int.from_bytes(await reader.readexactly(count), "big")
    else:
        length = first
    if length > 64 * 1024:
        raise not_supported("The LDAP reply is too long.")
    return tag, await reader.readexactly(length)


def _ber_children(data: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 0
    while pos + 2 <= len(data):
        tag, first = data[pos], data[pos + 1]
        pos += 2
        if first & 0x80:
            count = first & 0x7F
            length = int.from_bytes(data[pos : pos + count], "big")
            pos += count
        else:
            length = first
        out.append((tag, data[pos : pos + length]))
        pos += length
    return out


async def ldap(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(LDAP_STARTTLS_REQUEST)
    try:
        tag, content = await _ber_element(reader)
    except asyncio.IncompleteReadError:
        raise not_supported("The server closed the connection instead of answering LDAP StartTLS.") from None
    if tag != 0x30:
        raise not_supported("Not an LDAP server.")
    parts = _ber_children(content)
    response = next((body for t, body in parts if t == 0x78), None)  # [APPLICATION 24] ExtendedResponse
    if response is None:
        raise not_supported("Not an LDAP StartTLS response.")
    fields = _ber_children(response)
    if not fields or fields[0][0] != 0x0A:  # resultCode ENUMERATED
        raise not_supported("Not an LDAP StartTLS response.")
    code = int.from_bytes(fields[0][1], "big")
    if code != 0:
        raise not_supported(f"The LDAP server refused StartTLS (resultCode {code}).")


#: Int32 length 8, Int32 80877103 (the SSLRequest code).
POSTGRES_SSL_REQUEST = (8).to_bytes(4, "big") + (80877103).to_bytes(4, "big")


async def postgres(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(POSTGRES_SSL_REQUEST)
    try:
        answer = await reader.readexactly(1)
    except asyncio.IncompleteReadError:
        raise not_supported("The server closed the connection instead of answering the PostgreSQL SSLRequest.") from None
    if answer == b"N":
        raise not_supported("The PostgreSQL server does not accept SSL (ssl = off).")
    if answer != b"S":
        raise not_supported("Not a PostgreSQL server (unexpected answer to SSLRequest).")


DIALOGUES: dict[str, Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]] = {
    "smtp": smtp,
    "imap": imap,
    "pop3": pop3,
    "ldap": ldap,
    "postgres": postgres,
}


async def negotiate(protocol: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Run ``protocol``'s dialogue; on return the next bytes are the TLS handshake."""
    try:
        await DIALOGUES[protocol](reader, writer)
        await writer.drain()
    except (ConnectionResetError, BrokenPipeError):
        raise not_supported(f"The server closed the connection during the {protocol} STARTTLS dialogue.") from None
