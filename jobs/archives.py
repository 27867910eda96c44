"""Code archives in, output files out: validated, size-limited, never trusting paths inside."""

from __future__ import annotations

import hashlib
import io
import posixpath
import tarfile
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

from django.conf import settings
from django.core.exceptions import ValidationError

# /code is made root-owned and read-only: the job's user (uid 1000) can read and run it, not change it.
CODE_ROOT = "code"
READ_ONLY_DIR, READ_ONLY_FILE, READ_ONLY_EXEC = 0o555, 0o444, 0o555


@dataclass(frozen=True)
class ArchiveFacts:
    format: str  # "tar" or "zip"
    sha256: str
    size_bytes: int
    file_count: int


def _mib(value: int) -> int:
    return value * 1024 * 1024


def archive_inspect(fileobj: IO[bytes], *, field: str = "code") -> ArchiveFacts:
    """Checks an uploaded archive (zip, or tar possibly compressed): its size, that every path
    stays inside it, and its entry count and unpacked size. Returns its format, SHA-256 and
    file count. The limits are checked while the entries are listed, from their headers, so a
    small compressed upload that would unpack to far more is refused before it is unpacked."""
    digest, size = hashlib.sha256(), 0
    fileobj.seek(0)
    while chunk := fileobj.read(1024 * 1024):
        digest.update(chunk)
        size += len(chunk)
    if size > _mib(settings.DOCKYARD_JOB_CODE_MAX_MB):
        raise ValidationError({field: f"The archive is larger than {settings.DOCKYARD_JOB_CODE_MAX_MB} MiB."})
    fileobj.seek(0)
    unpacked = files = 0
    for entries, member in enumerate(_members(fileobj, field=field), start=1):
        unpacked += member.size
        files += not member.is_dir
        _check_limits(entries, unpacked, field=field)
    fileobj.seek(0)
    fmt = "zip" if zipfile.is_zipfile(fileobj) else "tar"
    fileobj.seek(0)
    return ArchiveFacts(fmt, digest.hexdigest(), size, files)


def _check_limits(entries: int, unpacked: int, *, field: str) -> None:
    most = settings.DOCKYARD_JOB_CODE_MAX_FILES
    if entries > most:
        raise ValidationError({field: f"The archive holds more than {most} entries, the limit for code archives."})
    if unpacked > _mib(settings.DOCKYARD_JOB_CODE_MAX_UNPACKED_MB):
        raise ValidationError(
            {field: f"Unpacked, the archive would be larger than {settings.DOCKYARD_JOB_CODE_MAX_UNPACKED_MB} MiB, "
                    "the limit for code archives."}
        )  # fmt: skip


def _zip_entry_count(fileobj: IO[bytes]) -> int:
    """The entry count a zip's end record declares, read before its central directory is: a
    small upload can declare millions of entries, which zipfile would all load."""
    fileobj.seek(0)
    end = zipfile._EndRecData(fileobj)  # the stdlib's own end-record reader, zip64 too
    fileobj.seek(0)
    return end[zipfile._ECD_ENTRIES_TOTAL] if end else 0


@dataclass(frozen=True)
class _Member:
    path: str
    size: int
    is_dir: bool
    executable: bool


def _safe(name: str, field: str) -> str | None:
    path = posixpath.normpath(name.replace("\\", "/")).lstrip("/")
    if path in ("", "."):
        return None
    if path == ".." or path.startswith("../"):
        raise ValidationError({field: f"The archive has a path outside itself: {name}"})
    return path


def _members(fileobj: IO[bytes], *, field: str) -> Iterator[_Member]:
    if zipfile.is_zipfile(fileobj):
        _check_limits(_zip_entry_count(fileobj), 0, field=field)
        with zipfile.ZipFile(fileobj) as archive:
            for info in archive.infolist():
                path = _safe(info.filename, field)
                if path is not None:
                    yield _Member(path, info.file_size, info.is_dir(), bool((info.external_attr >> 16) & 0o111))
        return
    fileobj.seek(0)
    try:
        with tarfile.open(fileobj=fileobj, mode="r:*") as archive:
            for info in archive:
                path = _safe(info.name, field)
                if path is None or not (info.isfile() or info.isdir()):
                    continue  # links and devices are not unpacked
                yield _Member(path, info.size, info.isdir(), bool(info.mode & 0o111))
    except tarfile.TarError:
        raise ValidationError({field: "That is not a zip or tar archive."}) from None


def code_tar(fileobj: IO[bytes]) -> bytes:
    """The archive rewritten as a tar of /code: regular files and folders only, owned by root,
    read-only (executables stay executable), for the backend to put in place before start."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        tar.addfile(_entry(CODE_ROOT, directory=True))
        made = {CODE_ROOT}
        for member, data in _contents(fileobj):
            target = f"{CODE_ROOT}/{member.path}"
            for parent in _parents(target):
                if parent not in made:
                    tar.addfile(_entry(parent, directory=True))
                    made.add(parent)
            if member.is_dir:
                if target not in made:
                    tar.addfile(_entry(target, directory=True))
                    made.add(target)
                continue
            entry = _entry(target, size=len(data), executable=member.executable)
            tar.addfile(entry, io.BytesIO(data))
    return out.getvalue()


def _contents(fileobj: IO[bytes]) -> Iterator[tuple[_Member, bytes]]:
    fileobj.seek(0)
    if zipfile.is_zipfile(fileobj):
        fileobj.seek(0)
        with zipfile.ZipFile(fileobj) as archive:
            for info in archive.infolist():
                path = _safe(info.filename, "code")
                if path is not None:
                    member = _Member(path, info.file_size, info.is_dir(), bool((info.external_attr >> 16) & 0o111))
                    yield member, b"" if info.is_dir() else archive.read(info)
        return
    fileobj.seek(0)
    with tarfile.open(fileobj=fileobj, mode="r:*") as archive:
        for info in archive:
            path = _safe(info.name, "code")
            if path is None or not (info.isfile() or info.isdir()):
                continue
            member = _Member(path, info.size, info.isdir(), bool(info.mode & 0o111))
            yield member, (archive.extractfile(info).read() if info.isfile() else b"")


def _parents(path: str) -> list[str]:
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _entry(name: str, *, directory: bool = False, size: int = 0, executable: bool = False) -> tarfile.TarInfo:
    entry = tarfile.TarInfo(name)
    entry.uid = entry.gid = 0
    entry.mtime = 0  # same archive in, same bytes out
    if directory:
        entry.type, entry.mode = tarfile.DIRTYPE, READ_ONLY_DIR
    else:
        entry.size, entry.mode = size, READ_ONLY_EXEC if executable else READ_ONLY_FILE
    return entry


def content_checksum(fileobj: IO[bytes]) -> str:
    """SHA-256 over the unpacked files (sorted paths and their bytes): equal for equal code,
    whatever archive format or timestamps carried it."""
    digest = hashlib.sha256()
    for member, data in sorted(_contents(fileobj), key=lambda item: item[0].path):
        if not member.is_dir:
            digest.update(member.path.encode() + b"\0" + hashlib.sha256(data).digest())
    fileobj.seek(0)
    return digest.hexdigest()


# --- Reading tar streams from a container -------------------------------------------------------


class ChunkReader(io.RawIOBase):
    """A readable file over an iterator of byte chunks (a backend's archive stream)."""

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks = iter(chunks)
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._pending))
        buffer[:size], self._pending = self._pending[:size], self._pending[size:]
        return size


def tar_stream_files(chunks: Iterable[bytes]) -> Iterator[tuple[str, tarfile.TarInfo, IO[bytes]]]:
    """(path relative to the archived folder, its entry, file) for each regular file of a tar
    stream, read once, front to back."""
    reader = io.BufferedReader(ChunkReader(chunks), buffer_size=1024 * 1024)
    with tarfile.open(fileobj=reader, mode="r|") as tar:
        for info in tar:
            if not info.isfile():
                continue
            path = _safe(info.name, "output")
            _, _, relative = (path or "").partition("/")
            if relative:
                yield relative, info, tar.extractfile(info)


@contextmanager
def tar_single_file_open(chunks: Iterable[bytes], *, limit: int) -> Iterator[tuple[IO[bytes] | None, int]]:
    """(file, size) of the one file in a tar stream, positioned so that at most its last `limit`
    bytes are left to read; (None, 0) when the stream holds no file. The head is read past in
    bounded pieces, never held."""
    reader = io.BufferedReader(ChunkReader(chunks), buffer_size=1024 * 1024)
    with tarfile.open(fileobj=reader, mode="r|") as tar:
        for info in tar:
            if info.isfile():
                handle = tar.extractfile(info)
                _skip(handle, info.size - limit)
                yield handle, info.size
                return
    yield None, 0


def _skip(handle: IO[bytes], count: int) -> None:
    while count > 0 and (piece := handle.read(min(count, 1024 * 1024))):
        count -= len(piece)


def tar_single_file(chunks: Iterable[bytes], *, limit: int) -> bytes:
    """The content of the one file in a tar stream (at most its last `limit` bytes)."""
    with tar_single_file_open(chunks, limit=limit) as (handle, _):
        return handle.read() if handle is not None else b""


def folder_snapshot(chunks: Iterable[bytes], *, field: str = "code_path") -> tuple[bytes, int]:
    """A tar of the regular files of a folder streamed out of a container, paths relative to
    the folder, within the unpacked-size limit. Returns (tar bytes, file count)."""
    limit = _mib(settings.DOCKYARD_JOB_CODE_MAX_UNPACKED_MB)
    out, total, count = io.BytesIO(), 0, 0
    with tarfile.open(fileobj=out, mode="w") as tar:
        for path, info, handle in tar_stream_files(chunks):
            total += info.size
            if total > limit:
                raise ValidationError(
                    {field: f"The folder is larger than {settings.DOCKYARD_JOB_CODE_MAX_UNPACKED_MB} MiB."}
                )
            entry = tarfile.TarInfo(path)
            entry.size, entry.mode, entry.mtime = info.size, 0o755 if info.mode & 0o111 else 0o644, 0
            tar.addfile(entry, handle)
            count += 1
    return out.getvalue(), count
