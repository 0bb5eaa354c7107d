"""Which participants speech-to-text gave up on during a run, so that a replay can fail loudly.

The transcribe step ends such a participant's stream with a final progress mark whose ``ended`` is
``stt_failed`` (a rejected key, a server that stays down); this sink collects them from the flow's
event stream. One object is shared by every worker of the process.
"""

from __future__ import annotations

import threading
from typing import Any

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from quantcoach.records import STT_FAILED, ProgressMark


class SttFailures(DynamicSink[Any]):
    def __init__(self) -> None:
        self._failed: list[str] = []
        self._lock = threading.Lock()

    @property
    def failed(self) -> list[str]:
        """``room/identity`` of each participant STT gave up on, in the order they failed."""
        with self._lock:
            return list(self._failed)

    def note(self, item: Any) -> None:
        if isinstance(item, ProgressMark) and item.ended == STT_FAILED:
            who = f"{item.room}/{item.participant}"
            with self._lock:
                if who not in self._failed:
                    self._failed.append(who)

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Partition:
        return _Partition(self)


class _Partition(StatelessSinkPartition[Any]):
    def __init__(self, owner: SttFailures) -> None:
        self._owner = owner

    def write_batch(self, items: list[Any]) -> None:
        for item in items:
            self._owner.note(item)
