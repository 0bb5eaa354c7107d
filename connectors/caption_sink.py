"""A Bytewax sink that hands every transcript (partial and final) to a ``CaptionPublisher``.

The publisher and its transport decide what goes out and never raise, so this sink never stops the
flow; ``track_sid_for`` gives the transcribed audio track's sid where the source knows it (live).
"""

from __future__ import annotations

from collections.abc import Callable

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from connectors.captions import CaptionPublisher
from quantcoach.records import Transcript


class CaptionSink(DynamicSink[Transcript]):
    def __init__(
        self,
        publisher: Callable[[], CaptionPublisher],
        track_sid_for: Callable[[str, str], str] | None = None,
    ) -> None:
        self._publisher = publisher
        self._track_sid_for = track_sid_for or (lambda room, identity: "")

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _CaptionPartition:
        return _CaptionPartition(self._publisher(), self._track_sid_for)


class _CaptionPartition(StatelessSinkPartition[Transcript]):
    def __init__(self, publisher: CaptionPublisher, track_sid_for: Callable[[str, str], str]) -> None:
        self.publisher = publisher
        self._track_sid_for = track_sid_for

    def write_batch(self, items: list[Transcript]) -> None:
        for t in items:
            self.publisher.publish(t, self._track_sid_for(t.room, t.participant))

    def close(self) -> None:
        close = getattr(self.publisher.transport, "close", None)
        if close is not None:
            close()
