"""Small files in the data directory (tokens, proxy secrets, the node ID): written 0600 from
the first byte.

The file is created under a temporary name with mode 0600 (never a moment readable by
others, whatever the umask) and renamed over the old one, so a crash leaves either the
old or the new content, never a torn file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)  # O_CREAT's mode applies only to a new file
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_private_json(path: Path, data: Any) -> None:
    write_private(path, json.dumps(data, indent=1, sort_keys=True).encode())


def read_private_json(path: Path, default: Any) -> Any:
    """The JSON in `path`, or `default` when it does not exist."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default
