"""Unpacking a data-set zip safely: no entry escapes its folder, no bomb, nothing half-written."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from core import settings
from core.data.folders import IGNORED_NAMES, KEPT_LABELS, DatasetError, find_root, summarize

MAX_KEPT_LABELS_BYTES = 2 ** 20  # a list of photo names: far more than any data set's


def _safe_member_path(name: str) -> PurePosixPath | None:
    """The entry's relative path, or None if it would land outside the target folder."""
    name = name.replace("\\", "/")
    path = PurePosixPath(name)
    if path.is_absolute() or (path.parts and ":" in path.parts[0]) or ".." in path.parts:
        return None
    return path


def extract_zip(archive: str | Path | bytes, target: str | Path) -> Path:
    """Unpacks a data-set zip into `target` (replacing it) and returns the data set root in it.

    Refuses archives with entries that escape the folder, too many files, too much uncompressed
    data or bomb-like compression ratios; skips symlinks, hidden files (but the labels confirmed in
    the app, `.kept_labels.json`, which the app's own zips carry) and `__MACOSX/`.
    Nothing is written outside `target`, and `target` is only replaced once everything is good.

    Raises:
        DatasetError: the archive is not a zip, is unsafe or too large, or holds no data set.
    """
    import io

    target = Path(target)
    source = io.BytesIO(archive) if isinstance(archive, (bytes, bytearray)) else archive
    try:
        bundle = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DatasetError(f"Not a readable zip archive ({exc}).") from exc
    with bundle:
        members = bundle.infolist()
        if len(members) > settings.MAX_ZIP_FILES:
            raise DatasetError(f"The zip has {len(members)} entries; the limit is {settings.MAX_ZIP_FILES}.")
        declared = sum(m.file_size for m in members)
        if declared > settings.max_zip_bytes():
            raise DatasetError(f"The zip unpacks to {declared / 2**20:.0f} MB; the limit is "
                               f"{settings.max_zip_bytes() / 2**20:.0f} MB.")
        for member in members:
            if _safe_member_path(member.filename) is None:
                raise DatasetError(f"Unsafe path in zip: {member.filename!r} would land outside the "
                                   "data set folder. Nothing was extracted.")
            if member.file_size > 2**20 and member.file_size > settings.MAX_ZIP_RATIO * max(member.compress_size, 1):
                raise DatasetError(f"{member.filename!r} expands {member.file_size // max(member.compress_size, 1)}x: "
                                   "refusing a likely zip bomb. Nothing was extracted.")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=target.parent))
        try:
            written = 0
            for member in members:
                rel = _safe_member_path(member.filename)
                mode = member.external_attr >> 16
                hidden = [p.startswith(".") or p in IGNORED_NAMES for p in rel.parts]
                # The one hidden file kept: the confirmed labels (checked for place and size once unpacked).
                if (member.is_dir() or stat.S_ISLNK(mode) or not rel.parts or any(hidden[:-1])
                        or (hidden[-1] and rel.name != KEPT_LABELS)):
                    continue
                out = staging.joinpath(*rel.parts)
                if staging.resolve() not in out.resolve().parents:
                    raise DatasetError(f"Unsafe path in zip: {member.filename!r}.")
                out.parent.mkdir(parents=True, exist_ok=True)
                with bundle.open(member) as src, open(out, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        if written > settings.max_zip_bytes():  # headers can lie
                            raise DatasetError("The zip unpacks to more than its declared size limit.")
                        dst.write(chunk)
            root = find_root(staging)
            for stray in staging.rglob(KEPT_LABELS):  # only the data set's own (beside train/) means anything
                if stray.parent != root or stray.stat().st_size > MAX_KEPT_LABELS_BYTES:
                    stray.unlink()
            summarize(root)  # refuse unusable data before replacing anything
            rel_root = root.relative_to(staging)
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
            return target / rel_root
        except zipfile.BadZipFile as exc:
            raise DatasetError(f"The zip is corrupt ({exc}).") from exc
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
