"""Reading `-config-file` / `-config-dir` (JSON or HCL by extension, as Consul's agent does).

The files are read and parsed here; merging and validation are core/agent_config.py's.
A directory contributes its `*.json` and `*.hcl` files in lexical order (other files are
skipped, as Consul does); `-config-format` forces a format for files without those
extensions. Every problem names the file.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any, Iterable

from tether.core.agent_config import FileConfig, load_config_documents
from tether.core.errors import InvalidInput
from tether.core.hcl import parse_hcl


def config_paths(files: Iterable[Path], dirs: Iterable[Path]) -> list[Path]:
    out = list(files)
    for d in dirs:
        if not d.is_dir():
            raise InvalidInput(f"-config-dir {d}: not a directory")
        out += sorted(p for p in d.iterdir() if p.suffix in (".json", ".hcl") and p.is_file())
    return out


def read_document(path: Path, fmt: str = "") -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path}: cannot read it: {getattr(exc, 'strerror', None) or exc}") from None
    kind = fmt or path.suffix.lstrip(".")
    if kind == "json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{path}: line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    elif kind == "hcl":
        doc = parse_hcl(text, source=str(path))
    else:
        raise InvalidInput(f"{path}: name it .json or .hcl, or give -config-format json|hcl")
    if not isinstance(doc, dict):
        raise InvalidInput(f"{path}: the configuration must be an object of keys")
    return doc


def load_config(files: Iterable[Path], dirs: Iterable[Path], fmt: str = "") -> tuple[FileConfig, list[str]]:
    """(merged configuration, warnings) from the files; InvalidInput on any problem."""
    paths = config_paths(files, dirs)
    warnings = [f"{p} can be read by other users and may hold ACL tokens: chmod 600 {p}" for p in paths
                if _others_can_read(p) and _mentions_tokens(p)]
    config, more = load_config_documents((str(p), read_document(p, fmt)) for p in paths)
    return config, warnings + more


def _others_can_read(path: Path) -> bool:
    try:
        return bool(path.stat().st_mode & stat.S_IROTH)
    except OSError:
        return False


def _mentions_tokens(path: Path) -> bool:
    try:
        return "tokens" in path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
