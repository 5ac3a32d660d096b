"""Java keystores (JKS and JCEKS): the certificate parts only.

pyjks cannot be used here: its twofish dependency needs a C compiler and the
hosts the agent runs on have none. This is a small reader for what the agent
needs and nothing more:

* trusted-certificate entries and the certificate chains of private-key
  entries, which both formats store in clear, so they are read with or without
  the store password;
* the integrity digest at the end of the file, SHA-1 over
  ``password as UTF-16BE + b"Mighty Aphrodite" + every preceding byte``, which
  is how a password is known to be the right one.

Private keys are skipped by their length and never decoded. JCEKS secret-key
entries are Java-serialized ``SealedObject`` streams without a length prefix;
:class:`_SerializedObjectSkipper` walks the serialization grammar just far
enough to find where such an entry ends.

Layout (both formats, big-endian)::

    magic u32 (FEEDFEED JKS | CECECECE JCEKS), version u32 (1|2), count u32
    count * entry:
        tag u32 (1 private key, 2 trusted certificate, 3 secret key [JCEKS])
        alias (Java modified UTF-8, u16 length), date u64 (ms)
        1: key u32 length + bytes, chain count u32, chain * certificate
        2: certificate
        3: Java serialization stream (AC ED 00 05 ...)
    certificate = [type (u16-length UTF), if version 2] u32 length + bytes
    SHA-1 digest (20 bytes)
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass

JKS_MAGIC = b"\xfe\xed\xfe\xed"
JCEKS_MAGIC = b"\xce\xce\xce\xce"
WHITENER = b"Mighty Aphrodite"

_PRIVATE_KEY, _TRUSTED_CERT, _SECRET_KEY = 1, 2, 3


class KeystoreFormatError(ValueError):
    """The data is not a keystore this reader understands."""


@dataclass(frozen=True)
class KeystoreCertificate:
    alias: str
    der: bytes


@dataclass(frozen=True)
class Keystore:
    kind: str  # "JKS" or "JCEKS"
    certificates: list[KeystoreCertificate]  # in file order; chains leaf first
    verified: bool  # one of the passwords matched the integrity digest
    problem: str | None = None  # why reading stopped early, if it did


def is_keystore(data: bytes) -> bool:
    return data[:4] in (JKS_MAGIC, JCEKS_MAGIC)


def integrity_digest(password: str, body: bytes) -> bytes:
    return hashlib.sha1(password.encode("utf-16-be") + WHITENER + body).digest()


def read(data: bytes, passwords: Iterable[str] = ()) -> Keystore:
    """Read every certificate of a JKS/JCEKS keystore.

    Raises :class:`KeystoreFormatError` only when the header is not a keystore
    header. A keystore damaged further on yields the certificates before the
    damage and a ``problem``.
    """
    if len(data) < 12 or not is_keystore(data):
        raise KeystoreFormatError("not a JKS/JCEKS keystore")
    kind = "JKS" if data[:4] == JKS_MAGIC else "JCEKS"
    version, count = struct.unpack_from(">II", data, 4)
    if version not in (1, 2):
        raise KeystoreFormatError(f"unsupported {kind} version {version}")
    reader = _Reader(data, 12)
    certificates: list[KeystoreCertificate] = []
    for number in range(count):
        try:
            _read_entry(reader, kind, version, certificates)
        except _Truncated as exc:
            return Keystore(kind, certificates, False, f"keystore damaged in entry {number + 1} of {count}: {exc}")
    body_end = reader.offset
    digest = data[body_end : body_end + 20]
    if len(digest) != 20:
        return Keystore(kind, certificates, False, "keystore truncated: integrity digest missing")
    body = data[:body_end]
    verified = any(integrity_digest(password, body) == digest for password in passwords)
    return Keystore(kind, certificates, verified)


class _Truncated(Exception):
    pass


class _Reader:
    __slots__ = ("data", "offset")

    def __init__(self, data: bytes, offset: int) -> None:
        self.data = data
        self.offset = offset

    def take(self, size: int) -> bytes:
        end = self.offset + size
        if size < 0 or end > len(self.data):
            raise _Truncated(f"needs {size} bytes at offset {self.offset}, file has {len(self.data)}")
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack(">H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack(">I", self.take(4))[0]

    def s32(self) -> int:
        return struct.unpack(">i", self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack(">Q", self.take(8))[0]

    def utf(self) -> str:
        return _modified_utf8(self.take(self.u16()))


def _modified_utf8(raw: bytes) -> str:
    """Decode Java's modified UTF-8 (NUL as C0 80, surrogate pairs as two 3-byte runs)."""
    try:
        text = raw.replace(b"\xc0\x80", b"\x00").decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace")
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _read_entry(reader: _Reader, kind: str, version: int, out: list[KeystoreCertificate]) -> None:
    tag = reader.u32()
    alias = reader.utf()
    reader.u64()  # creation date
    if tag == _PRIVATE_KEY:
        reader.take(reader.u32())  # the protected key: skipped, never decoded
        for _ in range(reader.u32()):
            _read_certificate(reader, version, alias, out)
    elif tag == _TRUSTED_CERT:
        _read_certificate(reader, version, alias, out)
    elif tag == _SECRET_KEY and kind == "JCEKS":
        _SerializedObjectSkipper(reader).skip_stream()
    else:
        raise _Truncated(f"unknown entry tag {tag}")


def _read_certificate(reader: _Reader, version: int, alias: str, out: list[KeystoreCertificate]) -> None:
    cert_type = reader.utf() if version == 2 else "X.509"
    der = reader.take(reader.u32())
    if cert_type == "X.509":
        out.append(KeystoreCertificate(alias, der))


class _SerializedObjectSkipper:
    """Skip one Java object serialization stream (header and one object).

    Only the grammar is followed (class descriptors, field values, arrays,
    strings, references, block data); no object is built. JCEKS writes each
    secret-key entry with a fresh ObjectOutputStream, so each has its own
    header and handle table.
    """

    _MAX_DEPTH = 64
    _PRIMITIVE_SIZES = {"B": 1, "C": 2, "D": 8, "F": 4, "I": 4, "J": 8, "S": 2, "Z": 1}

    def __init__(self, reader: _Reader) -> None:
        self.reader = reader
        self.handles: list[object] = []
        self.depth = 0

    def skip_stream(self) -> None:
        if self.reader.take(4) != b"\xac\xed\x00\x05":
            raise _Truncated("secret-key entry is not a Java serialization stream")
        self._content()

    def _new_handle(self, value: object) -> int:
        self.handles.append(value)
        return len(self.handles) - 1

    def _content(self) -> object:
        self.depth += 1
        if self.depth > self._MAX_DEPTH:
            raise _Truncated("serialized object nested too deeply")
        try:
            return self._dispatch(self.reader.u8())
        finally:
            self.depth -= 1

    def _dispatch(self, code: int) -> object:
        r = self.reader
        if code == 0x70:  # TC_NULL
            return None
        if code == 0x71:  # TC_REFERENCE
            index = r.u32() - 0x7E0000
            if not 0 <= index < len(self.handles):
                raise _Truncated("bad back reference in serialized object")
            return self.handles[index]
        if code in (0x72, 0x7D):  # TC_CLASSDESC, TC_PROXYCLASSDESC
            return self._class_desc(code)
        if code == 0x73:  # TC_OBJECT
            desc = self._content()
            self._new_handle(None)
            self._class_data(desc)
            return None
        if code == 0x74:  # TC_STRING
            value = r.utf()
            self._new_handle(value)
            return value
        if code == 0x7C:  # TC_LONGSTRING
            value = _modified_utf8(r.take(r.u64()))
            self._new_handle(value)
            return value
        if code == 0x75:  # TC_ARRAY
            desc = self._content()
            self._new_handle(None)
            self._array(desc, r.s32())
            return None
        if code == 0x76:  # TC_CLASS
            desc = self._content()
            self._new_handle(desc)
            return desc
        if code == 0x7E:  # TC_ENUM
            self._content()
            self._new_handle(None)
            self._content()
            return None
        if code == 0x77:  # TC_BLOCKDATA
            r.take(r.u8())
            return None
        if code == 0x7A:  # TC_BLOCKDATALONG
            r.take(r.s32())
            return None
        if code == 0x79:  # TC_RESET
            self.handles.clear()
            return self._content()
        raise _Truncated(f"unsupported serialization code 0x{code:02x}")

    def _class_desc(self, code: int) -> dict:
        r = self.reader
        if code == 0x7D:
            desc = {"name": "<proxy>", "flags": 0x02, "fields": [], "super": None}
            self._new_handle(desc)
            for _ in range(r.u32()):
                r.utf()
        else:
            desc = {"name": r.utf(), "flags": 0, "fields": [], "super": None}
            r.u64()  # serialVersionUID
            self._new_handle(desc)
            desc["flags"] = r.u8()
            for _ in range(r.u16()):
                typecode = chr(r.u8())
                r.utf()  # field name
                if typecode in "[L":
                    self._content()  # the field's class name, a string object
                elif typecode not in self._PRIMITIVE_SIZES:
                    raise _Truncated(f"bad field type {typecode!r} in serialized object")
                desc["fields"].append(typecode)
        self._annotation()
        desc["super"] = self._content()
        return desc

    def _annotation(self) -> None:
        while self.reader.data[self.reader.offset : self.reader.offset + 1] != b"\x78":
            self._content()
        self.reader.take(1)  # TC_ENDBLOCKDATA

    def _class_data(self, desc: object) -> None:
        chain = []
        while isinstance(desc, dict):
            chain.append(desc)
            desc = desc["super"]
        for cls in reversed(chain):  # superclass data first
            flags = cls["flags"]
            if flags & 0x04:  # SC_EXTERNALIZABLE
                if not flags & 0x08:  # SC_BLOCK_DATA
                    raise _Truncated("old-protocol externalizable object")
                self._annotation()
                continue
            for typecode in cls["fields"]:
                self._value(typecode)
            if flags & 0x01:  # SC_WRITE_METHOD
                self._annotation()

    def _value(self, typecode: str) -> None:
        if typecode in "[L":
            self._content()
        else:
            self.reader.take(self._PRIMITIVE_SIZES[typecode])

    def _array(self, desc: object, size: int) -> None:
        if not isinstance(desc, dict) or size < 0:
            raise _Truncated("bad array in serialized object")
        element = desc["name"][1:2]
        if element in self._PRIMITIVE_SIZES:
            self.reader.take(self._PRIMITIVE_SIZES[element] * size)
        else:
            for _ in range(size):
                self._content()
