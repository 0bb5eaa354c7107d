"""The embedded default sink: records as JSON lines, one file per record kind and session.

Each batch is one ``os.write`` on an ``O_APPEND`` descriptor, so the partitions of several workers (or
processes) appending to one file never interleave inside a line on a local filesystem.
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from quantcoach.records import dumps

#: Files one partition keeps open; more sessions reopen theirs (O_APPEND: safe to reopen at any time).
MAX_OPEN_FILES = 64


class JsonlSink(DynamicSink[dict[str, Any]]):
    """Writes wire records to ``path_for(room, session_id)``; the directory is created on first write."""

    def __init__(self, path_for: Callable[[str, str], Path]) -> None:
        self.path_for = path_for

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _JsonlPartition:
        return _JsonlPartition(self.path_for)


class _JsonlPartition(StatelessSinkPartition[dict[str, Any]]):
    def __init__(self, path_for: Callable[[str, str], Path]) -> None:
        self._path_for = path_for
        self._fds: dict[Path, int] = {}
        self._lock = threading.Lock()

    def write_batch(self, items: list[dict[str, Any]]) -> None:
        by_path: dict[Path, list[str]] = defaultdict(list)
        for record in items:
            by_path[self._path_for(record["room"], record["session_id"])].append(dumps(record) + "\n")
        with self._lock:
            for path, lines in by_path.items():
                os.write(self._fd(path), "".join(lines).encode("utf-8"))

    def _fd(self, path: Path) -> int:
        fd = self._fds.pop(path, None)
        if fd is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            while len(self._fds) >= MAX_OPEN_FILES:  # many sessions: close the least recently written
                os.close(self._fds.pop(next(iter(self._fds))))
        self._fds[path] = fd  # most recently used last (dicts keep insertion order)
        return fd

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
