"""The snapshot file (`tether snapshot save|restore`): every document of a store at one index.

A gzip-compressed JSON document:
{"Format": "tether-snapshot", "Version": 1, "Index": N, "Entries": [{"Key", "Value"}, ...]}.
The same file restores into SQLite or etcd (the migration path from one server to several).
Ephemeral keys (the elected leader, live servers, heartbeats) are left out: they belong to
the servers that wrote them. A corrupt file, another format or a newer version is refused
before anything is written.
"""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Any, Iterable

from tether.core.errors import InvalidInput

FORMAT = "tether-snapshot"
VERSION = 1
EPHEMERAL = ("leader/", "servers/", "heartbeat/")


def is_ephemeral(key: str) -> bool:
    return key.startswith(EPHEMERAL)


def encode(index: int, entries: Iterable[tuple[str, Any]]) -> bytes:
    doc = {"Format": FORMAT, "Version": VERSION, "Index": index,
           "Entries": [{"Key": k, "Value": v} for k, v in entries if not is_ephemeral(k)]}
    return gzip.compress(json.dumps(doc, separators=(",", ":")).encode(), mtime=0)


def decode(data: bytes) -> tuple[int, list[tuple[str, Any]]]:
    """(index, [(key, value)]) or InvalidInput saying what is wrong with the file."""
    try:
        doc = json.loads(gzip.decompress(data))
    except (OSError, EOFError, zlib.error, ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"not a Tether snapshot (corrupt or truncated: {exc})") from None
    if not isinstance(doc, dict) or doc.get("Format") != FORMAT:
        raise InvalidInput("not a Tether snapshot (no Format: tether-snapshot)")
    version = doc.get("Version")
    if not isinstance(version, int) or version > VERSION:
        raise InvalidInput(f"snapshot format version {version!r} is newer than this Tether reads ({VERSION}); "
                           "restore it with a newer Tether")
    entries = doc.get("Entries")
    if not isinstance(entries, list) or not all(
            isinstance(e, dict) and isinstance(e.get("Key"), str) and "Value" in e for e in entries):
        raise InvalidInput("not a Tether snapshot (Entries must be a list of {Key, Value})")
    keys = [e["Key"] for e in entries]
    if len(set(keys)) != len(keys):
        raise InvalidInput("corrupt snapshot: a key appears twice")
    return int(doc.get("Index", 0)), [(e["Key"], e["Value"]) for e in entries]
