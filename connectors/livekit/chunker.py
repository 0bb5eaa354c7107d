"""One track's audio: the SDK's stream of it and ``TrackChunker``, which cuts its frames into
``CHUNK_MS`` AudioChunks on media time (docs/livekit-source.md, "Media time")."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
from livekit import rtc

from connectors.livekit.types import NUM_CHANNELS, RESYNC_S
from quantcoach.records import AudioChunk

log = logging.getLogger(__name__)


def sdk_audio_stream(
    track: Any, sample_rate: int, num_channels: int, frame_size_ms: int
) -> AsyncIterator[Any]:
    """The real SDK stream; ``frame_size_ms`` makes the SDK hand out whole chunks, not 10 ms frames."""
    return rtc.AudioStream(
        track, sample_rate=sample_rate, num_channels=num_channels, frame_size_ms=frame_size_ms
    )


class TrackChunker:
    """Turns one track's frames (any size) into ``chunk_ms`` AudioChunks stamped with media time."""

    def __init__(
        self,
        room: str,
        participant: str,
        chunk_ms: int,
        start: float,
        clock: Callable[[], float],
        resync_s: float = RESYNC_S,
        session_id: str = "",
    ) -> None:
        self.room, self.participant, self.session_id = room, participant, session_id
        self._chunk_ms = chunk_ms
        self._clock = clock  # media-time clock
        self._resync_s = resync_s
        self._rate: int | None = None
        self._channels = NUM_CHANNELS
        self._chunk_frames = 0
        self._pending: list[np.ndarray] = []
        self._pending_frames = 0
        self._base = start  # media time of the timeline anchor
        self._emitted = 0  # frames emitted since the anchor

    @property
    def position(self) -> float:
        """Media time just after the last frame received."""
        if self._rate is None:
            return self._base
        return self._base + (self._emitted + self._pending_frames) / self._rate

    def add(self, frame: rtc.AudioFrame) -> list[AudioChunk]:
        rate, channels = frame.sample_rate, frame.num_channels
        n = frame.samples_per_channel
        samples = np.frombuffer(frame.data, dtype=np.int16)[: n * channels].reshape(n, channels)
        out: list[AudioChunk] = []
        if self._rate != rate or self._channels != channels:
            if self._rate is not None:  # format change mid-track: close the chunk, keep the timeline
                out += self.flush()
                self._anchor(self.position)
            self._rate, self._channels = rate, channels
            self._chunk_frames = max(1, rate * self._chunk_ms // 1000)
        arrival = self._clock() - n / rate  # media time at which this frame started, by the wall clock
        if arrival - self.position > self._resync_s:
            out += self.flush()
            log.debug("%s/%s: %.2f s gap in the track", self.room, self.participant, arrival - self.position)
            self._anchor(arrival)
        if n:
            self._pending.append(samples)
            self._pending_frames += n
        while self._pending_frames >= self._chunk_frames:
            out.append(self._take(self._chunk_frames))
        return out

    def flush(self) -> list[AudioChunk]:
        """The frames held back (less than a chunk), as a last, shorter chunk."""
        return [self._take(self._pending_frames)] if self._pending_frames else []

    def _anchor(self, at: float) -> None:
        self._base, self._emitted = at, 0

    def _take(self, n: int) -> AudioChunk:
        assert self._rate is not None
        buf = self._pending[0] if len(self._pending) == 1 else np.concatenate(self._pending)
        samples, rest = buf[:n].copy(), buf[n:]  # copy: never keep a view of the SDK's frame buffer
        self._pending = [rest] if len(rest) else []
        self._pending_frames -= n
        start = self._base + self._emitted / self._rate
        self._emitted += n
        return AudioChunk(self.room, self.participant, samples, self._rate, start, self.session_id)
