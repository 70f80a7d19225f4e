"""The data directory on disk: created private, refused when it is not, files kept 0600.

    prepare_data_dir(Path("/var/lib/tether"))   # at start, before anything is written
    create_private_file(path)                   # before SQLite opens a new database

The decisions are core/filemode.py's. SQLite creates its `-wal` and `-shm` files with the
mode of the database file, so a database created 0600 keeps its write-ahead log, which
holds the CA key in clear, 0600 too.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from tether.core.errors import InvalidInput
from tether.core.filemode import PRIVATE_DIR_MODE, PRIVATE_FILE_MODE, data_dir_problem, narrowed

log = logging.getLogger("tether.store")

#: Folders of ours inside the data directory whose files are narrowed at start too.
SUBDIRS = ("proxies",)


def prepare_data_dir(path: Path) -> None:
    """Create the data directory 0700, or check an existing one (InvalidInput naming the
    fix); then narrow any file of ours that others could read."""
    try:
        path.mkdir(mode=PRIVATE_DIR_MODE, parents=True)
    except FileExistsError:
        pass
    st = path.stat()
    problem = data_dir_problem(str(path), st.st_mode, st.st_uid, os.geteuid())
    if problem:
        raise InvalidInput(problem)
    for folder in (path, *(path / sub for sub in SUBDIRS)):
        if folder.is_dir():
            for entry in folder.iterdir():
                narrow_file(entry)


def narrow_file(path: Path) -> None:
    """A regular file of ours that others may read becomes private (logged: it was exposed)."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    mode = narrowed(st.st_mode)
    if mode is None or not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
        return  # private already, or not a file of ours (a symlink's target is not ours to change)
    path.chmod(mode)
    log.warning("%s was readable by other users (mode %04o); it is now %04o", path, stat.S_IMODE(st.st_mode), mode)


def create_private_file(path: Path) -> None:
    """Make sure `path` exists as a private file (created 0600, whatever the umask)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE_MODE)
    os.close(fd)
    narrow_file(path)
