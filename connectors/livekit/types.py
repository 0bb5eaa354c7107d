"""What the modules of the LiveKit source share: the events it emits, the factories tests replace,
and its constants (see docs/livekit-source.md)."""

from __future__ import annotations

import queue
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, TypeAlias

from quantcoach.records import AudioChunk, ParticipantAnnounce, TrackEnd

SourceEvent: TypeAlias = ParticipantAnnounce | AudioChunk | TrackEnd
#: ``(track, sample_rate, num_channels, frame_size_ms) -> async iterator of AudioFrameEvent/AudioFrame``
StreamFactory: TypeAlias = Callable[[Any, int, int, int], AsyncIterator[Any]]
#: ``room name -> rtc.Room``-like object (``on``, ``connect``, ``disconnect``, ``remote_participants``)
RoomFactory: TypeAlias = Callable[[str], Any]
#: Control events: an iterable / ``queue.Queue`` shared by the process's workers, or one feed per worker.
RoomEvents: TypeAlias = Iterable[Any] | queue.Queue | Callable[[int, int], Iterable[Any]]

SAMPLE_RATE = 48000  # what the SDK resamples every track to; the flow's resampler takes it to 16 kHz
NUM_CHANNELS = 1
RESYNC_S = 1.0  # wall clock ahead of a track's samples by more than this: the track had a gap
MAX_BATCH = 512  # items per next_batch: bounds the time one call spends
LEAVE_TIMEOUT_S = 5.0
