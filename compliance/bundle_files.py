"""The files of an audit bundle on disk: listed and copied without following anything.

Used by :func:`compliance.bundle.verify_bundle` (the listing its manifest must match)
and by the web console (:func:`copy_bundle`, before it verifies and zips a partner's
bundle). A symbolic link or special file anywhere below a bundle is refused: a link
would make the verifier read, and the console copy, what is not part of the bundle
(red team of 2026-12-06: a linked ``keys/`` folder's secret reached a report zip).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import NoReturn

from fedcollab.common.errors import AuditVerificationError

__all__ = ["bundle_files", "copy_bundle"]

_LINK_HINT = (
    "ask the bundle's author to export it again with `fedcollab audit export`, or copy "
    "it with symbolic links resolved (e.g. `cp -rL`) and verify the copy"
)


def bundle_files(root: Path) -> set[str]:
    """The relative paths of the files in the bundle folder ``root``.

    Refuses a symbolic link anywhere below ``root`` (to a folder or a file) and
    any entry that is neither a regular file nor a folder (FIFO, socket, device):
    links are never followed.
    """

    def unreadable(exc: OSError) -> NoReturn:
        where = Path(os.fsdecode(exc.filename or root))
        what = f"{where.relative_to(root).as_posix()} in " if where != root else ""
        raise AuditVerificationError(
            f"{root}: cannot read {what}the bundle folder ({exc.strerror})"
        ) from exc

    files: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable, followlinks=False):
        for name in (*dirnames, *filenames):
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            try:
                mode = path.lstat().st_mode
            except OSError as exc:
                unreadable(exc)
            if stat.S_ISLNK(mode):
                raise AuditVerificationError(
                    f"{rel}: a symbolic link inside the audit bundle (links are never "
                    "followed: what it points to is not part of the bundle)",
                    hint=_LINK_HINT,
                )
            if stat.S_ISREG(mode):
                files.add(rel)
            elif not stat.S_ISDIR(mode):
                raise AuditVerificationError(
                    f"{rel}: not a regular file (a FIFO, socket or device) inside the audit bundle",
                    hint=_LINK_HINT,
                )
    return files


def copy_bundle(src: Path | str, dst: Path | str) -> Path:
    """Copy the regular files of the bundle folder ``src`` into the new folder ``dst``.

    Nothing is followed: a symbolic link or special file below ``src`` is refused
    (AuditVerificationError) as :func:`compliance.bundle.verify_bundle` refuses it, and each file is
    opened with ``O_NOFOLLOW``.  Verify the copy, not ``src``: then what was
    verified is what was copied.  Returns ``dst``.
    """
    root, out = Path(src), Path(dst)
    for rel in sorted(bundle_files(root)):
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(root / rel, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError as exc:  # ELOOP: it became a link after the listing
            raise AuditVerificationError(
                f"{rel}: cannot be copied ({exc.strerror})", hint=_LINK_HINT
            ) from exc
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise AuditVerificationError(f"{rel}: not a regular file", hint=_LINK_HINT)
            with target.open("xb") as dest:
                while chunk := fh.read(1 << 20):
                    dest.write(chunk)
    return out
