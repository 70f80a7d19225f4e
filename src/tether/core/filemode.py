"""Which modes keep the data directory private. Pure (the I/O is store/datadir.py).

The data directory holds the CA's private key (in SQLite's database and its write-ahead
log), ACL tokens and the proxies' secrets: anyone who can read it can mint certificates
the mesh accepts. So, as ssh does with ~/.ssh, Tether keeps it to its own user:

- the directory is 0700 and owned by the user Tether runs as; anything else is refused
  at start, with the command that fixes it (Tether does not chmod an operator's
  directory behind their back: they may have shared it on purpose, and should know);
- every file Tether writes in it is 0600; a file of ours left wider (by an older Tether,
  or SQLite copying the mode of a database created under umask 022) is narrowed.
"""

from __future__ import annotations

import stat

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
#: Bits that let anyone but the owner in (read, write or, for a directory, enter).
OTHERS = stat.S_IRWXG | stat.S_IRWXO


def data_dir_problem(path: str, mode: int, owner: int, user: int) -> str | None:
    """Why the data directory at `path` (its st_mode and owner) is not private to `user`."""
    if not stat.S_ISDIR(mode):
        return f"-data-dir {path} is not a directory"
    if owner != user:
        return (f"-data-dir {path} is owned by uid {owner}, not by this user (uid {user}), who would share its "
                f"keys and tokens with that owner: chown {user} {path} (or run Tether as uid {owner})")
    if mode & OTHERS:
        return (f"-data-dir {path} is open to other users (mode {stat.S_IMODE(mode):04o}) and holds the CA key "
                f"and tokens: chmod 700 {path}")
    return None


def narrowed(mode: int) -> int | None:
    """The permission bits of a file of ours with other users' bits removed, or None when
    it is private already."""
    if not mode & OTHERS:
        return None
    return stat.S_IMODE(mode) & ~OTHERS
