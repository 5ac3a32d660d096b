"""The file walk: every certificate under the given paths.

* Each file is read once, by its real path; the other paths that led to it
  (symbolic links, linked directories) become its ``link_paths``.
* A directory is walked once, whatever the number of links to it, so
  symbolic-link loops end.
* Only regular files are read (never FIFOs, sockets or devices), at most
  ``max_file_size`` bytes each.
* Exclude patterns prune files and directories met while walking; a path named
  as a root is always read.

``complete`` is False when a root that was asked for does not exist or a
directory cannot be listed: the scan may have missed certificates there, so
the server must not take their absence as removal. Files that fail inside a
readable directory are errors but leave the scan complete.
"""

from __future__ import annotations

import errno
import fnmatch
import operator
import os
import re
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from agent import formats
from agent.findings import FileCertificate, ScanError

Progress = Callable[[int, int], None]
"""Called with (files read, certificates found) as the scan goes."""


class Excludes:
    """Shell-style patterns (``*``, ``?``, ``[...]``; ``*`` also matches ``/``).

    A pattern with a ``/`` is matched against the whole path, one without
    against the file or directory name alone (``cacerts`` matches a file called
    ``cacerts`` anywhere).
    """

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(patterns)
        alternatives = [fnmatch.translate(p) for p in self.patterns if "/" in p]
        names = [fnmatch.translate(p) for p in self.patterns if "/" not in p]
        if names:  # the last component of an absolute path: after its last "/"
            alternatives.append(r"(?s:.*/)(?!.*/)(?:" + "|".join(names) + ")")
        self._match = re.compile("|".join(alternatives)).match if alternatives else None

    def match(self, path: str) -> bool:
        """Whether the absolute ``path`` is excluded."""
        return self._match is not None and self._match(path) is not None


@dataclass
class FileScan:
    certificates: list[FileCertificate] = field(default_factory=list)
    errors: list[ScanError] = field(default_factory=list)
    complete: bool = True
    files_read: int = 0


class FileTooLarge(Exception):
    pass


_FIRST_READ = 64 * 1024  # all of almost every certificate file, in one system call


def read_file(path: str, limit: int) -> bytes:
    """The whole file, or :class:`FileTooLarge` if it has more than ``limit`` bytes."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        want = min(limit + 1, _FIRST_READ)
        data = os.read(fd, want)
        if len(data) < want:  # a short read of a regular file is its end
            return data
        if os.fstat(fd).st_size > limit:  # a big file: not read any further
            raise FileTooLarge
        chunks, size = [data], len(data)
        while size <= limit:
            chunk = os.read(fd, min(1024 * 1024, limit + 1 - size))
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
        raise FileTooLarge
    finally:
        os.close(fd)


def _reason(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied"
    if exc.errno == errno.ELOOP:
        return "symbolic link loop"
    if isinstance(exc, FileNotFoundError):
        return "no such file or directory"
    return (exc.strerror or type(exc).__name__).lower()


_name = operator.attrgetter("name")


class _Walk:
    def __init__(self, excludes: Excludes, follow_symlinks: bool, out: FileScan) -> None:
        self.excludes = excludes
        self.follow_symlinks = follow_symlinks
        self.out = out
        self.files: dict[str, list[str]] = {}  # real path -> walked paths, in discovery order
        self.visited_dirs: set[tuple[int, int]] = set()

    def add_root(self, path: str, optional: bool) -> None:
        path = os.path.abspath(path)
        try:
            st = os.stat(path)
        except OSError as exc:
            if not (optional and isinstance(exc, FileNotFoundError)):
                self.out.errors.append(ScanError(path, _reason(exc)))
                self.out.complete = False
            return
        real = os.path.realpath(path)
        if stat.S_ISDIR(st.st_mode):
            if (st.st_dev, st.st_ino) not in self.visited_dirs:
                self.visited_dirs.add((st.st_dev, st.st_ino))
                self.walk(path, real)
        elif stat.S_ISREG(st.st_mode):
            self.files.setdefault(real, []).append(path)
        else:
            self.out.errors.append(ScanError(path, "not a regular file or directory"))

    def walk(self, top: str, top_real: str) -> None:
        stack = [(top, top_real)]
        while stack:
            directory, real_directory = stack.pop()
            try:
                with os.scandir(directory) as listing:
                    entries = sorted(listing, key=_name, reverse=True)
            except OSError as exc:
                self.out.errors.append(ScanError(directory, _reason(exc)))
                self.out.complete = False
                continue
            for entry in entries:  # reversed, so the stack pops subdirectories in name order
                self._entry(entry, real_directory, stack)

    def _entry(self, entry: os.DirEntry, real_directory: str, stack: list[tuple[str, str]]) -> None:
        walked = entry.path
        try:
            if entry.is_symlink():
                if not self.follow_symlinks:
                    return
                real = os.path.realpath(walked)
                try:
                    st = os.stat(walked)
                except FileNotFoundError:
                    if not self.excludes.match(walked):
                        self.out.errors.append(ScanError(walked, "broken symbolic link"))
                    return
                is_dir, is_file = stat.S_ISDIR(st.st_mode), stat.S_ISREG(st.st_mode)
            else:
                real = real_directory + "/" + entry.name if real_directory != "/" else "/" + entry.name
                is_dir = entry.is_dir(follow_symlinks=False)
                is_file = not is_dir and entry.is_file(follow_symlinks=False)
                st = entry.stat(follow_symlinks=False) if is_dir else None
        except OSError as exc:
            if not self.excludes.match(walked):
                self.out.errors.append(ScanError(walked, _reason(exc)))
            return
        if self.excludes.match(walked) or (real != walked and self.excludes.match(real)):
            return
        if is_dir:
            key = (st.st_dev, st.st_ino)
            if key not in self.visited_dirs:
                self.visited_dirs.add(key)
                stack.append((walked, real))
        elif is_file:
            self.files.setdefault(real, []).append(walked)
        # sockets, FIFOs, devices: never opened


def scan_files(
    paths: Sequence[str],
    *,
    optional_paths: Sequence[str] = (),
    excludes: Excludes | None = None,
    max_file_size: int = 1024 * 1024,
    follow_symlinks: bool = True,
    passwords: Sequence[str] = formats.DEFAULT_PASSWORDS,
    progress: Progress | None = None,
) -> FileScan:
    """Walk ``paths`` (missing ones are errors) and ``optional_paths`` (missing
    ones are skipped silently, e.g. the built-in defaults) and read every file.

    ``passwords`` are tried in order on PKCS#12 files and keystores.
    """
    out = FileScan()
    passwords = tuple(passwords)
    formats.start_scan()
    walk = _Walk(excludes or Excludes(()), follow_symlinks, out)
    for path in paths:
        walk.add_root(path, optional=False)
    for path in optional_paths:
        walk.add_root(path, optional=True)
    found = 0
    for real, walked in walk.files.items():
        try:
            data = read_file(real, max_file_size)
        except FileTooLarge:
            out.errors.append(ScanError(real, f"larger than max_file_size ({max_file_size} bytes)"))
        except OSError as exc:
            out.errors.append(ScanError(real, _reason(exc)))
        else:
            out.files_read += 1
            decoded = formats.decode(data, passwords)
            if decoded.errors:
                out.errors.extend(ScanError(real, reason) for reason in decoded.errors)
            if decoded.certificates:
                links = () if walked == [real] else tuple(sorted({p for p in walked if p != real}))
                out.certificates.extend(
                    FileCertificate(real, certificate.index, certificate.der, links, certificate.alias)
                    for certificate in decoded.certificates
                )
                found += len(decoded.certificates)
        if progress is not None:
            progress(out.files_read, found)
    return out
