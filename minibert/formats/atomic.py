"""Files and folders that appear whole or not at all.

Every file minibert writes goes to a temporary name in the same folder, is flushed and fsynced, and is
then renamed over the final name; a crash, a kill or a full disk leaves the old file or the new one,
never a half-written file that looks finished. A folder (`minibert convert`) is built the same way:
in a temporary sibling, then moved into place.

Written where the user meant: a symlink is followed, and the file it points to is replaced (atomically,
beside it) while the link stays; a FIFO, a device or a socket is written as it is, since renaming a file
over it would replace the special file instead. And never over its own input (`check_not_source`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (best effort where a folder cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path, mode: int = 0o666):
    """Yields a temporary path beside `path` to write to (by any means, e.g. safetensors' save_file);
    on success it is fsynced and renamed to `path` with normal permissions (`mode` less the umask). On an
    exception the temporary file is removed and `path` is left as it was."""
    path = Path(path)
    if path.is_symlink():
        path = Path(os.path.realpath(path))  # the link's target is the file meant; the link itself stays
    if path.exists() and not path.is_file() and not path.is_dir():  # a FIFO, /dev/stdout, ...: written in place
        yield path
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, mode & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


@contextmanager
def atomic_open(path, mode: str = "wb", encoding: str | None = None):
    """`open(path, mode)` that writes to a temporary file renamed over `path` once the block succeeds."""
    with atomic_path(path) as tmp, open(tmp, mode, encoding=encoding) as f:
        yield f
        f.flush()


def write_text(path, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def copy_file(src, dst) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def check_file_target(output) -> None:
    """A file can be written at `output`: it is no folder, and its folder exists and is writable."""
    output = Path(output)
    if output.is_dir():
        raise ValueError(f"{output} is a folder; give a file name")
    folder = output.parent
    if not folder.is_dir():
        raise ValueError(f"cannot write {output}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write {output}: folder {folder} is not writable")


def check_not_source(output, source, what: str = "the source", folder: bool = False) -> None:
    """Refuse to write `output` over its own input `source` (symlinks resolved). A `folder` output may
    neither be the source, nor hold it, nor lie inside it (replacing it would delete the source, or
    files inside it); a file output may not replace the source file or a file in the source folder."""
    out, src = Path(output).resolve(), Path(source).resolve()
    overlap = out == src or out in src.parents if folder else out == src
    if overlap or src in out.parents and (folder or out.exists()):
        raise ValueError(f"{output} would overwrite {what} {source}; write somewhere else")


def check_folder_target(path, force: bool = False) -> None:
    """Refuse a target folder that atomic_folder would refuse, before any work is done."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise FileExistsError(f"{path} is not empty; choose a new folder, or replace it with --force (force=True)")


@contextmanager
def atomic_folder(path, force: bool = False):
    """Yields a temporary sibling folder to fill; on success it becomes `path`.

    An existing `path` that is not empty is refused unless `force`; with `force` it is replaced whole
    (moved aside, the new folder moved in, the old one deleted), so no file of the old folder stays
    next to the new ones. On an exception the temporary folder is removed and `path` is untouched."""
    path = Path(path)
    check_folder_target(path, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if path.is_dir():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old)  # an empty folder of that name is replaced by the rename
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_folder(path.parent)
