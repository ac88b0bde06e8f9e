"""One atomic, durable file writer for every key, state and result file.

A reader of ``path`` sees either the old content or the new, never a prefix, and
after :func:`write_atomic` returns the new content survives a power cut:

1. the data goes to a fresh temporary file in the *same* directory (a rename is
   atomic only within one file system), created with ``O_CREAT | O_EXCL`` under a
   random name, so two writers never share a temporary file;
2. the file is flushed and ``fsync``-ed before it is renamed (without that,
   ext4/XFS may commit the rename before the data: a zero-length file after a
   crash, the failure studied by Pillai et al., "All File Systems Are Not Created
   Equal", OSDI 2014);
3. ``os.replace`` (POSIX ``rename(2)``: atomic replacement) puts it in place;
4. the directory is ``fsync``-ed, so the rename itself is durable.

``private=True`` creates the temporary file with mode 0600 from the start (the
mode argument of ``open(2)``; the umask can only remove bits): a secret is never
readable by group or others at any moment, and nothing is ``chmod``-ed after
writing. ``exclusive=True`` refuses to replace an existing file (keys are
created once): the finished temporary file is hard-linked to ``path``, which
fails atomically if ``path`` exists, so a concurrent creator cannot be
overwritten either.

If the write fails or the process is interrupted before step 3, ``path`` keeps
its old content; the temporary file is removed on a Python-level failure (a
SIGKILL may leave a ``.<name>.<random>.tmp`` file beside it, never a torn
``path``).
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

__all__ = ["private_database", "write_atomic", "write_json_atomic"]

_PUBLIC_MODE = 0o666  # the umask applies, as for open(path, "w")
_PRIVATE_MODE = 0o600


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(
    path: Path | str,
    data: bytes | str,
    *,
    private: bool = False,
    exclusive: bool = False,
    encoding: str = "utf-8",
) -> Path:
    """Atomically and durably replace ``path`` with ``data``; returns ``path``.

    ``private``: mode 0600 from creation on (for keys, secrets, settings).
    ``exclusive``: raise :class:`FileExistsError` if ``path`` exists (nothing is
    written then). The parent directory must exist.
    """
    target = Path(path)
    payload = data.encode(encoding) if isinstance(data, str) else bytes(data)
    directory = target.parent
    tmp = directory / f".{target.name}.{secrets.token_hex(6)}.tmp"
    mode = _PRIVATE_MODE if private else _PUBLIC_MODE
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), mode)
    try:
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if exclusive:
            os.link(tmp, target)  # FileExistsError if a file is there: never overwritten
            tmp.unlink()
        else:
            os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(directory)
    return target


def write_json_atomic(
    path: Path | str,
    obj: Any,
    *,
    private: bool = False,
    exclusive: bool = False,
    sort_keys: bool = True,
    ensure_ascii: bool = True,
) -> Path:
    """:func:`write_atomic` of ``obj`` as indented JSON with a final newline.

    NaN and infinities are refused (``allow_nan=False``): they are not JSON.
    """
    text = json.dumps(
        obj, indent=2, sort_keys=sort_keys, ensure_ascii=ensure_ascii, allow_nan=False
    )
    return write_atomic(path, text + "\n", private=private, exclusive=exclusive)


def private_database(path: Path | str) -> Path:
    """Make ``path`` (an SQLite database: an audit log, a budget ledger, a run contract)
    readable by its owner only, before SQLite opens it.

    A missing file is created empty with mode 0600 (SQLite then initialises it and
    creates its ``-wal`` and ``-shm`` files with the same mode as the database); an
    existing file with group or other bits, such as one created before this rule
    (0644 under the usual umask), is narrowed to 0600 (its ``-wal``/``-shm`` siblings
    too). A file of another owner is left as it is (``chmod`` would fail)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, _PRIVATE_MODE)
    except FileExistsError:
        for candidate in (
            path,
            path.with_name(path.name + "-wal"),
            path.with_name(path.name + "-shm"),
        ):
            try:
                if candidate.stat().st_mode & 0o077:
                    os.chmod(candidate, _PRIVATE_MODE)
            except OSError:  # gone, another owner's, a read-only file system
                continue
    else:
        os.close(fd)
    return path
