"""``ElevenLabsEngine``: the ``SttEngine`` for ElevenLabs realtime STT, one WebSocket session per stream."""

from __future__ import annotations

import threading
import weakref
from collections import Counter

from quantcoach.aio import LoopThread, shared_loop
from quantcoach.settings import Settings
from stt.clock import SYSTEM_CLOCK, Clock
from stt.elevenlabs.connection import Link
from stt.elevenlabs.options import ElevenLabsOptions, redacted_url, session_url
from stt.elevenlabs.stream import ElevenLabsStream, StreamContext
from stt.protocol import SttError


class ElevenLabsEngine:
    """All streams share the process-wide loop thread (or ``loop``) and time things on ``clock``."""

    name = "elevenlabs"

    def __init__(
        self,
        settings: Settings,
        *,
        options: ElevenLabsOptions | None = None,
        loop: LoopThread | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not settings.elevenlabs_api_key:
            raise SttError("ELEVENLABS_API_KEY is not set (needed by the elevenlabs STT engine)")
        self._settings = settings
        self.options = options or ElevenLabsOptions()
        self._clock = clock or SYSTEM_CLOCK
        self._url = session_url(settings, self.options)  # KeytermError (an SttError) for bad keyterms
        self._ctx = StreamContext(
            options=self.options,
            link=self._link,
            loop=loop or shared_loop(),
            backoff=self.options.backoff(),
            count=self._count,
        )
        self._streams: weakref.WeakSet[ElevenLabsStream] = weakref.WeakSet()
        self._lock = threading.Lock()
        self.stats: Counter[str] = Counter()  # engine-wide totals, for logs and tests

    def __repr__(self) -> str:
        return f"ElevenLabsEngine(url={self.url!r}, streams={len(self._streams)})"

    @property
    def url(self) -> str:
        """The session URL (query parameters, never the key: that goes in a header), with any
        credential an operator put in ``ELEVENLABS_BASE_URL`` (a single-use ``token``) masked."""
        return redacted_url(self._url)

    def stream(self, key: str) -> ElevenLabsStream:
        s = ElevenLabsStream(self._ctx, key)
        with self._lock:
            self._streams.add(s)
        return s

    def close(self) -> None:
        with self._lock:
            streams = list(self._streams)
        for s in streams:
            s.close()

    # internal ----------------------------------------------------------------------------------
    def _link(self, key: str) -> Link:
        return Link(key, self._url, self._settings.elevenlabs_api_key.reveal(), self._clock)

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.stats[name] += n
