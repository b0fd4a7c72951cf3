"""Atomic writes on any fsspec filesystem: a temporary name in the same folder, then a rename."""

from __future__ import annotations

import uuid
from typing import Any

import fsspec


def write_atomic(fs: Any, path: str, data: bytes | str) -> None:
    """Write `data` to `path` so that readers see the old file, no file, or the whole new one."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with fs.open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    fs.mv(tmp, path)


def write_url(url: str, data: bytes | str) -> None:
    fs, path = fsspec.core.url_to_fs(url)
    write_atomic(fs, path, data)
