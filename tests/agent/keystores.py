"""A small JKS / JCEKS writer for test fixtures (independent of agent.keystore).

Writes what keytool writes: trusted-certificate entries, private-key entries
(the key protected with Sun's JKS KeyProtector, so keytool can even recover
it), JCEKS secret-key entries (a Java-serialized SealedObject, byte for byte
the shape JDK 17 writes) and the integrity digest
``SHA-1(password UTF-16BE + "Mighty Aphrodite" + body)``.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import serialization

from tests.certs import Issued, der_sequence, der_tlv

JKS_MAGIC = 0xFEEDFEED
JCEKS_MAGIC = 0xCECECECE
_SUN_JKS_KEY_PROTECTOR = "1.3.6.1.4.1.42.2.17.1.1"


@dataclass
class Trusted:
    alias: str
    der: bytes


@dataclass
class PrivateKey:
    alias: str
    chain: list[Issued]  # leaf first; the leaf's key is stored
    key_password: str | None = None  # defaults to the store password


@dataclass
class SecretKey:  # JCEKS only
    alias: str
    sealed: bytes = field(default_factory=lambda: os.urandom(48))


def java_utf(text: str) -> bytes:
    """DataOutputStream.writeUTF: u16 length + modified UTF-8."""
    raw = text.encode("utf-16-be", "surrogatepass")
    out = bytearray()
    for (unit,) in struct.iter_unpack(">H", raw):
        if 0 < unit < 0x80:
            out.append(unit)
        elif unit < 0x800:  # includes NUL, written as C0 80
            out += bytes([0xC0 | unit >> 6, 0x80 | unit & 0x3F])
        else:
            out += bytes([0xE0 | unit >> 12, 0x80 | unit >> 6 & 0x3F, 0x80 | unit & 0x3F])
    return struct.pack(">H", len(out)) + bytes(out)


def _oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | arc & 0x7F)
            arc >>= 7
        body += bytes(reversed(chunk))
    return der_tlv(0x06, bytes(body))


def jks_protect_key(pkcs8: bytes, password: str) -> bytes:
    """Sun's JKS KeyProtector: SHA-1 keystream XOR, salt and check digest, in an EncryptedPrivateKeyInfo."""
    secret = password.encode("utf-16-be")
    salt = os.urandom(20)
    stream = bytearray()
    digest = salt
    while len(stream) < len(pkcs8):
        digest = hashlib.sha1(secret + digest).digest()
        stream += digest
    encrypted = bytes(a ^ b for a, b in zip(pkcs8, stream))
    check = hashlib.sha1(secret + pkcs8).digest()
    algorithm = der_sequence(_oid(_SUN_JKS_KEY_PROTECTOR), b"\x05\x00")
    return der_sequence(algorithm, der_tlv(0x04, salt + encrypted + check))


def sealed_object(sealed: bytes) -> bytes:
    """The serialization stream JCEKS writes for a secret key (JDK 17 class descriptors)."""

    def utf(text: str) -> bytes:
        return java_utf(text)

    params = bytes.fromhex("300f0408") + os.urandom(8) + bytes.fromhex("020203e8")
    out = bytearray(b"\xac\xed\x00\x05")
    out += b"\x73\x72" + utf("com.sun.crypto.provider.SealedObjectForKeyProtector")
    out += bytes.fromhex("cd57ca59e730bb53") + b"\x02\x00\x00\x78"
    out += b"\x72" + utf("javax.crypto.SealedObject") + bytes.fromhex("3e363da6c3b75470") + b"\x02\x00\x04"
    out += b"[" + utf("encodedParams") + b"\x74" + utf("[B")
    out += b"[" + utf("encryptedContent") + b"\x71" + struct.pack(">I", 0x7E0002)
    out += b"L" + utf("paramsAlg") + b"\x74" + utf("Ljava/lang/String;")
    out += b"L" + utf("sealAlg") + b"\x71" + struct.pack(">I", 0x7E0003)
    out += b"\x78\x70"  # end of annotation, no superclass
    # values of SealedObject's fields; handle 0x7e0004 is the object itself
    out += b"\x75\x72" + utf("[B") + bytes.fromhex("acf317f8060854e0") + b"\x02\x00\x00\x78\x70"
    out += struct.pack(">I", len(params)) + params
    out += b"\x75\x71" + struct.pack(">I", 0x7E0005) + struct.pack(">I", len(sealed)) + sealed
    out += b"\x74" + utf("PBEWithMD5AndTripleDES") + b"\x74" + utf("PBEWithMD5AndTripleDES")
    return bytes(out)


def keystore(
    entries: list, password: str, *, kind: str = "JKS", version: int = 2, date_ms: int = 1_700_000_000_000
) -> bytes:
    """A JKS or JCEKS keystore with ``entries``, sealed with ``password``.

    Version 2 (what every JDK since 1.2 writes) names each certificate's type;
    version 1 does not.
    """
    magic = JKS_MAGIC if kind == "JKS" else JCEKS_MAGIC

    def _certificate(der: bytes) -> bytes:
        kind_name = java_utf("X.509") if version == 2 else b""
        return kind_name + struct.pack(">I", len(der)) + der

    body = bytearray(struct.pack(">III", magic, version, len(entries)))
    for entry in entries:
        if isinstance(entry, Trusted):
            body += struct.pack(">I", 2) + java_utf(entry.alias) + struct.pack(">Q", date_ms)
            body += _certificate(entry.der)
        elif isinstance(entry, PrivateKey):
            pkcs8 = entry.chain[0].key.private_bytes(
                serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            protected = jks_protect_key(pkcs8, entry.key_password or password)
            body += struct.pack(">I", 1) + java_utf(entry.alias) + struct.pack(">Q", date_ms)
            body += struct.pack(">I", len(protected)) + protected
            body += struct.pack(">I", len(entry.chain))
            for issued in entry.chain:
                body += _certificate(issued.der)
        elif isinstance(entry, SecretKey):
            if kind != "JCEKS":
                raise ValueError("secret keys need a JCEKS keystore")
            body += struct.pack(">I", 3) + java_utf(entry.alias) + struct.pack(">Q", date_ms)
            body += sealed_object(entry.sealed)
        else:
            raise TypeError(entry)
    digest = hashlib.sha1(password.encode("utf-16-be") + b"Mighty Aphrodite" + bytes(body)).digest()
    return bytes(body) + digest
