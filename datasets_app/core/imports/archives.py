"""Unpack an uploaded zip of images + manifest, refusing anything that could escape or
explode (absolute paths, '..', links, too many files, too many bytes once unpacked)."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path, PurePosixPath

MAX_FILES = 200_000
MAX_UNPACKED_BYTES = 20 * 1024**3


class ArchiveRejected(ValueError):
    pass


def extract_zip(
    archive: Path,
    dest: Path,
    *,
    max_files: int = MAX_FILES,
    max_unpacked_bytes: int = MAX_UNPACKED_BYTES,
) -> Path:
    """Extract `archive` into `dest` and return the folder that holds the manifest."""
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        raise ArchiveRejected(f"{archive.name} is not a zip file: {exc}") from None
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        if len(members) > max_files:
            raise ArchiveRejected(
                f"the zip holds {len(members):,} files; the limit is {max_files:,}"
            )
        declared = sum(m.file_size for m in members)
        if declared > max_unpacked_bytes:
            raise ArchiveRejected(
                f"the zip unpacks to {declared:,} bytes; the limit is {max_unpacked_bytes:,}"
            )
        written = 0
        for member in members:
            name = PurePosixPath(member.filename)
            if name.is_absolute() or ".." in name.parts:
                raise ArchiveRejected(f"zip entry {member.filename!r} points outside the archive")
            if stat.S_ISLNK(member.external_attr >> 16):
                raise ArchiveRejected(f"zip entry {member.filename!r} is a symbolic link")
            target = dest.joinpath(*name.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as src, target.open("wb") as out:
                # Count what is really written: the declared sizes can lie.
                while chunk := src.read(1 << 20):
                    written += len(chunk)
                    if written > max_unpacked_bytes:
                        raise ArchiveRejected("the zip unpacks to more than its declared size")
                    out.write(chunk)
    return _manifest_folder(dest)


def _manifest_folder(root: Path) -> Path:
    from datasets_app.core.imports.records import MANIFEST_NAMES

    for folder in (root, *sorted(p for p in root.iterdir() if p.is_dir())):
        if any((folder / name).is_file() for name in MANIFEST_NAMES):
            return folder
    raise ArchiveRejected(
        f"the zip has no {' or '.join(MANIFEST_NAMES)} at its top level or in one folder"
    )
