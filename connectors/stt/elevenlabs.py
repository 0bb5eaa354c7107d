"""ElevenLabs realtime speech-to-text (Scribe realtime WebSocket) behind the ``SttEngine`` protocol.

The protocol subset, its sources and how we map it are in ``docs/elevenlabs-realtime-protocol.md``.
In short: one WebSocket session per participant stream with ``commit_strategy=vad`` and
``include_timestamps=true``; base64 PCM goes up in ``input_audio_chunk`` messages; partials come back
as ``partial_transcript`` and each commit as ``committed_transcript`` followed by its twin
``committed_transcript_with_timestamps``, which we pair into exactly one final.

Threading: the Bytewax worker calls ``push_audio``/``poll``/``settled``/``end_input``; all network work
runs on the process-wide loop thread (``connectors.aio.shared_loop``). The two sides share one small
state object under a ``threading.Lock``; the worker never waits on the network.

Reliability: every sample not yet covered by a committed transcript is kept. When a session drops (or
answers a retryable error, or stalls) the stream reconnects with jittered exponential backoff and
re-sends that audio, tracking the new session's stream-time origin, so no final is lost and none is
repeated. Non-retryable errors (auth, terms, quota, rejected parameters) or too many consecutive
failures end the stream: ``poll`` raises ``SttError`` once. The API key is never logged or raised.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import math
import random
import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from connectors.aio import LoopThread, shared_loop
from connectors.stt.protocol import STT_SAMPLE_RATE, SttError, SttEvent
from quantcoach.settings import Settings

log = logging.getLogger(__name__)

SR = STT_SAMPLE_RATE
FRAME = SR // 10  # 100 ms: granularity of the client-side loudness map

# Server message types (docs/elevenlabs-realtime-protocol.md has the sources).
FATAL_ERRORS = frozenset({"auth_error", "unaccepted_terms", "quota_exceeded", "invalid_request"})
SESSION_END_ERRORS = frozenset({"session_time_limit_exceeded", "insufficient_audio_activity"})
RETRYABLE_ERRORS = frozenset(
    {
        "error",
        "transcriber_error",
        "rate_limited",
        "queue_overflow",
        "resource_exhausted",
        "input_error",
        "chunk_size_exceeded",
        "commit_throttled",
    }
)
ERROR_TYPES = FATAL_ERRORS | SESSION_END_ERRORS | RETRYABLE_ERRORS
PARTIAL_TYPES = frozenset({"partial_transcript", "final_transcript", "final_transcript_with_timestamps"})
IGNORED_TYPES = frozenset({"committed_transcript_entities", "edited_transcript"})


@dataclass(frozen=True, slots=True)
class ElevenLabsOptions:
    """Tunables; the defaults are for production, tests shrink the timings."""

    chunk_ms: int = 200  # audio per input_audio_chunk
    commit_strategy: Literal["vad", "manual"] = "vad"
    vad_silence_threshold_secs: float | None = 1.0  # None: server default (1.5 s)
    include_timestamps: bool = True
    connect_timeout_s: float = 10.0  # TCP + handshake + session_started
    twin_wait_s: float = 1.0  # how long a plain commit waits for its timestamped twin
    flush_timeout_s: float = 10.0  # end_input: commit sent, no answer -> the session failed
    stall_timeout_s: float = 15.0  # speech sent and nothing heard back for this long -> reconnect
    keepalive_s: float = 5.0  # no audio sent for this long -> empty input_audio_chunk
    partial_chunk_after_s: float = 0.3  # a short remainder is sent after this much push silence
    idle_commit_s: float = 3.0  # no pushes for this long with speech uncommitted -> commit it
    idle_close_s: float = 20.0  # this much quiet audio (or push silence) and nothing open -> close
    max_failures: int = 8  # consecutive failed sessions before the stream gives up
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 15.0
    max_retained_s: float = 120.0  # cap on audio kept for re-sending (bounded memory)
    quiet_dbfs: float = -50.0  # 100 ms frames below this RMS are silence for settled()/idle logic
    settle_margin_s: float = 0.25  # settled() stays this far before the first speech frame
    tail_tolerance_s: float = 0.2  # loud frames this close after a committed word are its tail
    use_system_proxy: bool = True

    @property
    def chunk_samples(self) -> int:
        return max(1, SR * self.chunk_ms // 1000)


class ElevenLabsEngine:
    """``SttEngine`` for ElevenLabs realtime STT: one WebSocket session per stream."""

    name = "elevenlabs"

    def __init__(
        self,
        settings: Settings,
        *,
        options: ElevenLabsOptions | None = None,
        loop: LoopThread | None = None,
    ) -> None:
        if not settings.elevenlabs_api_key:
            raise SttError("ELEVENLABS_API_KEY is not set (needed by the elevenlabs STT engine)")
        self._settings = settings
        self.options = options or ElevenLabsOptions()
        self._loop = loop or shared_loop()
        self._url = _session_url(settings, self.options)
        self._streams: weakref.WeakSet[ElevenLabsStream] = weakref.WeakSet()
        self._lock = threading.Lock()
        self.stats: Counter[str] = Counter()  # engine-wide totals, for logs and tests

    def __repr__(self) -> str:
        return f"ElevenLabsEngine(url={self._url!r}, streams={len(self._streams)})"

    @property
    def url(self) -> str:
        """The session URL (query parameters, never the key: that goes in a header)."""
        return self._url

    def stream(self, key: str) -> ElevenLabsStream:
        s = ElevenLabsStream(self, key)
        with self._lock:
            self._streams.add(s)
        return s

    def close(self) -> None:
        with self._lock:
            streams = list(self._streams)
        for s in streams:
            s.close()

    # internal ----------------------------------------------------------------------------------
    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.stats[name] += n


def _session_url(settings: Settings, o: ElevenLabsOptions) -> str:
    params: dict[str, str] = {
        "model_id": settings.elevenlabs_model_id,
        "audio_format": f"pcm_{SR}",
        "commit_strategy": o.commit_strategy,
        "include_timestamps": "true" if o.include_timestamps else "false",
    }
    if o.vad_silence_threshold_secs is not None:
        params["vad_silence_threshold_secs"] = f"{o.vad_silence_threshold_secs:g}"
    if settings.elevenlabs_language:
        params["language_code"] = settings.elevenlabs_language
    parts = urlsplit(settings.elevenlabs_base_url)
    query = dict(parse_qsl(parts.query))
    query.update(params)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


# --------------------------------------------------------------------------------------------------
class _Pcm:
    """Audio kept from stream sample ``start`` to ``end`` (int16 pieces, no copies on append)."""

    def __init__(self) -> None:
        self._pieces: deque[np.ndarray] = deque()
        self.start = 0
        self.end = 0

    def append(self, pcm: np.ndarray) -> None:
        if len(pcm):
            self._pieces.append(pcm)
            self.end += len(pcm)

    def read(self, a: int, b: int) -> np.ndarray:
        a, b = max(a, self.start), min(b, self.end)
        out: list[np.ndarray] = []
        pos = self.start
        for piece in self._pieces:
            nxt = pos + len(piece)
            if nxt > a and pos < b:
                out.append(piece[max(a - pos, 0) : min(b, nxt) - pos])
            if nxt >= b:
                break
            pos = nxt
        return np.concatenate(out) if out else np.zeros(0, np.int16)

    def trim(self, upto: int) -> None:
        upto = min(upto, self.end)
        while self._pieces and self.start + len(self._pieces[0]) <= upto:
            self.start += len(self._pieces.popleft())
        if self._pieces and upto > self.start:
            self._pieces[0] = self._pieces[0][upto - self.start :]
            self.start = upto
        if not self._pieces:
            self.start = self.end


@dataclass(slots=True)
class _Held:
    """A plain committed_transcript waiting for its timestamped twin."""

    text: str
    sent_at: int  # stream samples sent when it arrived
    deadline: float


@dataclass(slots=True)
class _Session:
    origin: int  # stream sample of the first audio sent on this session (server time 0)
    opened: float
    started: asyncio.Event = field(default_factory=asyncio.Event)
    progressed: bool = False  # received a commit: the session worked
    held: _Held | None = None
    expect_twin: tuple[str, str] | None = None  # (message_type, normalized text) to drop once
    last_send: float = 0.0
    unanswered_since: float | None = None  # speech sent, no server message since
    commit_sent_at: float | None = None  # end_input flush
    idle_commit: bool = False
    last_msg: float = 0.0
    end_empty_answer: bool = False  # an empty commit came after our final commit: nothing left
    last_partial: str | None = None
    twin_misses: int = 0  # plain commits in a row whose twin never came


@dataclass(frozen=True, slots=True)
class _Outcome:
    kind: Literal["finished", "ended", "retry", "fatal"]
    reason: str


class ElevenLabsStream:
    """One participant's session; see the module docstring for the threading and retry model."""

    def __init__(self, engine: ElevenLabsEngine, key: str) -> None:
        self._engine = engine
        self._o = engine.options
        self._key = key
        self._lock = threading.Lock()
        self._pcm = _Pcm()
        self._pushed = 0  # stream samples pushed
        self._send_pos = 0  # next sample to send on the current session
        self._covered = 0  # samples before this are covered by a committed transcript
        self._loud = bytearray()  # per FRAME: 1 if louder than quiet_dbfs
        self._loud_base = 0  # frame index of _loud[0]
        self._tail = np.zeros(0, np.int16)  # samples of the incomplete last frame
        self._quiet_rms = 32768.0 * 10 ** (self._o.quiet_dbfs / 20)
        self._events: list[SttEvent] = []
        self._last_final_end = 0.0
        self._settled_promised = 0.0
        self._end_requested = False
        self._finished = False
        self._closed = False
        self._error: SttError | None = None
        self._error_raised = False
        self._last_push = time.monotonic()
        self._session_active = False  # a session is sending: _send_pos is its position
        self._last_session_progressed = False
        self._silent_ends = 0  # insufficient_audio_activity ends in a row
        self._dropped_warned_at = -math.inf
        self.stats: Counter[str] = Counter()
        self._wake = asyncio.Event()
        self._wake_scheduled = False
        self._future = engine._loop.submit(self._run())

    def __repr__(self) -> str:
        return f"ElevenLabsStream(key={self._key!r}, pushed_s={self._pushed / SR:.2f})"

    # ---------------------------------------------------------------- worker-thread side (SttStream)
    def push_audio(self, pcm: np.ndarray) -> None:
        samples = _as_int16(pcm)
        with self._lock:
            if self._closed or self._error is not None:
                return
            if self._end_requested:
                self.stats["pushed_after_end"] += 1
                return
            self._pcm.append(samples)
            self._pushed += len(samples)
            self._last_push = time.monotonic()
            self._map_loudness(samples)
            self._trim_locked()
        self._poke()

    def end_input(self) -> None:
        with self._lock:
            if self._end_requested:
                return
            self._end_requested = True
            if len(self._tail):  # the last, short frame still counts for speech detection
                self._map_loudness(np.zeros(FRAME - len(self._tail), np.int16))
        self._poke()

    def poll(self) -> list[SttEvent]:
        with self._lock:
            if self._events:
                out, self._events = self._events, []
                return out
            if self._error is not None and not self._error_raised:
                self._error_raised = True
                raise self._error
            return []

    def settled(self) -> float:
        with self._lock:
            if self._finished or self._error is not None:
                return math.inf
            self._settled_promised = max(self._settled_promised, self._floor_locked() / SR)
            return self._settled_promised

    @property
    def retained_seconds(self) -> float:
        """Audio kept for re-sending (diagnostics; bounded by ``max_retained_s``)."""
        with self._lock:
            return (self._pcm.end - self._pcm.start) / SR

    @property
    def done(self) -> bool:
        with self._lock:
            if self._events:
                return False
            return self._finished or (self._error is not None and self._error_raised)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._future.cancel()

    # ---------------------------------------------------------------- shared state (under _lock)
    def _poke(self) -> None:
        """Wake the loop-side sender; at most one callback in flight per stream."""
        with self._lock:
            if self._wake_scheduled:
                return
            self._wake_scheduled = True
        with contextlib.suppress(RuntimeError):  # loop closed at interpreter exit
            self._engine._loop.loop.call_soon_threadsafe(self._do_wake)

    def _do_wake(self) -> None:
        with self._lock:
            self._wake_scheduled = False
        self._wake.set()

    def _map_loudness(self, samples: np.ndarray) -> None:
        buf = np.concatenate((self._tail, samples)) if len(self._tail) else samples
        n = len(buf) // FRAME
        if n:
            frames = buf[: n * FRAME].astype(np.float32).reshape(n, FRAME)
            rms = np.sqrt(np.mean(frames * frames, axis=1))
            self._loud.extend((rms >= self._quiet_rms).astype(np.uint8).tobytes())
        self._tail = buf[n * FRAME :].copy()

    def _loud_frames(self, a: int, b: int) -> np.ndarray:
        """Start samples of loud frames that start in [a, b)."""
        f0 = max(-(-a // FRAME), self._loud_base)
        f1 = min(-(-b // FRAME), self._loud_base + len(self._loud))
        if f1 <= f0:
            return np.zeros(0, np.int64)
        flags = np.frombuffer(self._loud, np.uint8, count=f1 - f0, offset=f0 - self._loud_base)
        return (np.flatnonzero(flags) + f0) * FRAME

    def _utterance_span_locked(self, a: int, b: int) -> tuple[int, int]:
        """Without word times: the first utterance in [a, b) by the loudness map.

        It ends at the first pause as long as the server's VAD silence threshold (a little less, as
        the server's VAD is not ours); ``b`` (all audio sent when the commit came) can be far past it
        when audio is sent faster than real time.
        """
        loud = self._loud_frames(a, b)
        if not len(loud):
            return a, b
        pause = round(0.8 * (self._o.vad_silence_threshold_secs or 1.5) * SR)
        gaps = np.flatnonzero(np.diff(loud) - FRAME >= pause)
        last = int(loud[gaps[0]]) if len(gaps) else int(loud[-1])
        return int(loud[0]), min(last + FRAME, b)

    def _first_speech_locked(self) -> int | None:
        """First loud frame after the committed audio (ignoring the last word's tail), if any."""
        a = self._covered + (round(self._o.tail_tolerance_s * SR) if self._covered else 0)
        loud = self._loud_frames(a, self._pushed)
        return int(loud[0]) if len(loud) else None

    def _floor_locked(self) -> int:
        """No final will start before this sample: settled() and where a new session starts."""
        margin = round(self._o.settle_margin_s * SR)
        speech = self._first_speech_locked()
        mapped_end = (self._loud_base + len(self._loud)) * FRAME
        bound = speech if speech is not None else mapped_end
        return max(self._covered, min(bound - margin, self._pushed))

    def _has_speech_pending_locked(self) -> bool:
        return self._first_speech_locked() is not None

    def _trim_locked(self) -> None:
        keep_from = self._floor_locked()
        if self._session_active:
            keep_from = min(keep_from, self._send_pos)
        cap = round(self._o.max_retained_s * SR)
        if self._pushed - keep_from > cap:
            forced = self._pushed - cap
            if self._session_active:
                forced = min(forced, self._send_pos)
            if forced > keep_from:
                dropped = forced - max(self._covered, self._pcm.start)
                if dropped > 0:
                    self.stats["dropped_samples"] += dropped
                    self._engine._count("dropped_samples", dropped)
                    now = time.monotonic()
                    if now - self._dropped_warned_at > 60:
                        self._dropped_warned_at = now
                        log.warning(
                            "elevenlabs %s: %.0f s of uncommitted audio retained; dropping the oldest",
                            self._key,
                            self._o.max_retained_s,
                        )
                self._covered = max(self._covered, forced)
                keep_from = forced
        self._pcm.trim(keep_from)
        frame_keep = min(self._covered, self._pcm.start) // FRAME
        if frame_keep > self._loud_base:
            del self._loud[: frame_keep - self._loud_base]
            self._loud_base = frame_keep

    # ---------------------------------------------------------------- loop side: the session loop
    async def _run(self) -> None:
        failures = 0
        try:
            while True:
                if not await self._wait_for_work():
                    return
                outcome = await self._session()
                self._count(f"outcome_{outcome.kind}")
                if outcome.kind == "finished":
                    with self._lock:
                        self._finished = True
                    return
                if outcome.kind == "fatal":
                    self._give_up(outcome.reason)
                    return
                if outcome.kind == "ended":
                    log.info("elevenlabs %s: session ended (%s)", self._key, outcome.reason)
                    if self._last_session_progressed:
                        failures = 0
                    else:  # a benign end that achieved nothing: never reconnect in a tight loop
                        await asyncio.sleep(self._o.backoff_initial_s * random.uniform(0.5, 1.0))
                    continue
                failures = 1 if self._last_session_progressed else failures + 1
                if failures >= self._o.max_failures:
                    self._give_up(f"{failures} consecutive session failures, last: {outcome.reason}")
                    return
                delay = min(self._o.backoff_max_s, self._o.backoff_initial_s * 2 ** (failures - 1))
                delay *= random.uniform(0.5, 1.0)  # jitter: many streams must not reconnect in step
                log.warning(
                    "elevenlabs %s: session failed (%s); reconnecting in %.2f s (failure %d/%d)",
                    self._key,
                    outcome.reason,
                    delay,
                    failures,
                    self._o.max_failures,
                )
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must not kill the loop thread or hang the stream
            log.exception("elevenlabs %s: internal error", self._key)
            self._give_up(f"internal error ({type(exc).__name__})")

    async def _wait_for_work(self) -> bool:
        """Until there is speech to send or the input ended; False once finished or closed."""
        while True:
            self._wake.clear()
            with self._lock:
                if self._closed:
                    return False
                if self._has_speech_pending_locked():
                    return True
                if self._end_requested:
                    self._finished = True  # nothing left but silence: no session needed
                    return False
            await self._wake.wait()

    def _give_up(self, reason: str) -> None:
        msg = _scrub(f"elevenlabs STT gave up on {self._key}: {reason}", self._secret)
        log.error("%s", msg)
        self._count("gave_up")
        with self._lock:
            self._error = SttError(msg)

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.stats[name] += n
        self._engine._count(name, n)

    @property
    def _secret(self) -> str:
        return self._engine._settings.elevenlabs_api_key.reveal()

    # ---------------------------------------------------------------- one WebSocket session
    async def _session(self) -> _Outcome:
        o = self._o
        with self._lock:
            origin = self._floor_locked()  # final only when sending starts (see _sender)
            resend = self._pushed - origin
        s = _Session(origin=origin, opened=time.monotonic())
        self._last_session_progressed = False
        self._count("connects")
        log.debug(
            "elevenlabs %s: connecting at stream %.2f s (%.2f s to send)", self._key, origin / SR, resend / SR
        )
        ws: ClientConnection | None = None
        try:
            try:
                ws = await asyncio.wait_for(
                    connect(
                        self._engine.url,
                        additional_headers={"xi-api-key": self._secret},
                        open_timeout=o.connect_timeout_s,
                        close_timeout=2.0,
                        proxy=True if o.use_system_proxy else None,
                        logger=_ScrubbingLogger(logging.getLogger("websockets.client"), self._secret),
                    ),
                    o.connect_timeout_s + 1.0,
                )
            except InvalidStatus as exc:
                status = exc.response.status_code
                kind = "fatal" if status in (400, 401, 403, 404) else "retry"
                return _Outcome(kind, f"handshake rejected with HTTP {status}")
            except InvalidURI:
                return _Outcome("fatal", "invalid ELEVENLABS_BASE_URL")
            except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed) as exc:
                return _Outcome("retry", f"connect failed ({type(exc).__name__})")
            recv = asyncio.ensure_future(self._receiver(ws, s))
            send = asyncio.ensure_future(self._sender(ws, s))
            try:
                done, _ = await asyncio.wait({recv, send}, return_when=asyncio.FIRST_COMPLETED)
                first = recv if recv in done else send
                outcome = first.result()
                if outcome is None:  # the sender lost the socket: let the receiver say why
                    outcome = await asyncio.wait_for(recv, 2.0)
            except (ConnectionClosed, TimeoutError, OSError) as exc:
                outcome = _Outcome("retry", f"connection lost ({type(exc).__name__})")
            finally:
                for t in (recv, send):
                    t.cancel()
                await asyncio.gather(recv, send, return_exceptions=True)
            if s.held is not None:
                if outcome.kind == "finished":
                    self._release_held(s)
                else:
                    # Its twin died with the session. Its audio is still uncovered, so the next
                    # session re-sends and re-commits it (with word times): emitting it now instead
                    # would have to guess where it ends.
                    s.held = None
                    self._count("held_commit_resent")
            return outcome
        finally:
            self._last_session_progressed = s.progressed
            with self._lock:
                self._session_active = False
                self._trim_locked()
            if ws is not None:
                # Close in the background: a peer that stopped reading (it just sent an error) can hold
                # the closing handshake for close_timeout, and the outcome must not wait for that.
                task = asyncio.ensure_future(_close_quietly(ws))
                _closing.add(task)
                task.add_done_callback(_closing.discard)

    async def _sender(self, ws: ClientConnection, s: _Session) -> _Outcome | None:
        o = self._o
        try:
            await s.started.wait()
            with self._lock:
                # Nothing was sent while connecting, so the cap could trim: start from what is kept.
                s.origin = self._send_pos = self._floor_locked()
                self._session_active = True
            s.last_send = time.monotonic()
            while True:
                self._wake.clear()
                now = time.monotonic()
                with self._lock:
                    if self._closed:
                        return _Outcome("ended", "closed")
                    avail = self._pushed - self._send_pos
                    end_req = self._end_requested
                    since_push = now - self._last_push
                    n = 0
                    if avail >= o.chunk_samples or (
                        avail > 0 and (end_req or since_push >= o.partial_chunk_after_s)
                    ):
                        a = self._send_pos
                        n = min(avail, o.chunk_samples)
                        pcm = self._pcm.read(a, a + n)
                        speech = len(self._loud_frames(a - FRAME + 1, a + n)) > 0
                    uncommitted_speech = self._has_speech_pending_locked() and self._covered < self._send_pos
                    idle = not self._has_speech_pending_locked() and (
                        self._pushed - self._covered >= o.idle_close_s * SR or since_push >= o.idle_close_s
                    )
                if n:
                    await ws.send(_audio_message(pcm))
                    with self._lock:
                        self._send_pos = a + n
                        self._trim_locked()
                    s.last_send = now
                    if speech and s.unanswered_since is None:
                        s.unanswered_since = now
                    self._count("chunks_sent")
                    await asyncio.sleep(0)  # a long backlog must not starve other streams on the loop
                    continue
                if end_req:
                    if s.commit_sent_at is None:
                        await ws.send(_commit_message())
                        s.commit_sent_at = now
                        s.last_send = now
                        finished = self._end_reached(s)  # nothing uncommitted: no answer needed
                        if finished is not None:
                            return finished
                        continue
                elif since_push >= o.idle_commit_s and uncommitted_speech and not s.idle_commit:
                    # the track went quiet mid-utterance (muted): VAD needs audio to commit, so ask
                    s.idle_commit = True
                    await ws.send(_commit_message())
                    s.last_send = now
                    self._count("idle_commits")
                    continue
                elif idle and s.held is None:
                    return _Outcome("ended", "idle")
                if since_push < o.idle_commit_s:
                    s.idle_commit = False
                if s.unanswered_since is not None and now >= s.unanswered_since + o.stall_timeout_s:
                    self._count("stalls")
                    return _Outcome("retry", f"server silent for {o.stall_timeout_s:g} s")
                if now - s.last_send >= o.keepalive_s:
                    # no audio for a while: the server closes silent sockets after ~10 s
                    await ws.send(_audio_message(np.zeros(0, np.int16)))
                    s.last_send = now
                    self._count("keepalives")
                timeout = o.keepalive_s - (now - s.last_send)
                limits = [o.partial_chunk_after_s] if avail > 0 else []
                if not end_req:
                    limits += [o.idle_commit_s, o.idle_close_s]
                for limit in limits:
                    if since_push < limit:
                        timeout = min(timeout, limit - since_push)
                if s.unanswered_since is not None:
                    timeout = min(timeout, s.unanswered_since + o.stall_timeout_s - now)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), max(timeout, 0.01))
        except ConnectionClosed:
            return None

    async def _receiver(self, ws: ClientConnection, s: _Session) -> _Outcome:
        o = self._o
        while True:
            now = time.monotonic()
            deadlines = [now + 1.0]  # re-check now and then: the sender changes what we wait for
            if not s.started.is_set():
                deadlines.append(s.opened + o.connect_timeout_s)
            if s.held is not None:
                deadlines.append(s.held.deadline)
            if s.unanswered_since is not None:
                deadlines.append(s.unanswered_since + o.stall_timeout_s)
            if s.commit_sent_at is not None:
                deadlines.append(max(s.commit_sent_at, s.last_msg) + o.flush_timeout_s)
            try:
                raw = await asyncio.wait_for(ws.recv(), max(min(deadlines) - now, 0.0))
            except TimeoutError:
                outcome = self._on_deadline(s)
                if outcome is not None:
                    return outcome
                continue
            except ConnectionClosed as exc:
                return self._on_close(s, exc)
            s.unanswered_since = None
            s.last_msg = time.monotonic()
            outcome = self._on_message(s, raw) or self._end_reached(s)
            if outcome is not None:
                return outcome

    def _end_reached(self, s: _Session) -> _Outcome | None:
        """After end_input's commit: done once every sample is sent and no speech is uncommitted.

        The answer to our commit cannot be told from a VAD commit racing it, so the test is on what
        the commits covered; an empty commit after ours says the server had nothing left at all.
        """
        if s.commit_sent_at is None or s.held is not None:
            return None
        with self._lock:
            all_sent = self._send_pos >= self._pushed
            pending = self._has_speech_pending_locked()
        if all_sent and (not pending or s.end_empty_answer):
            return _Outcome("finished", "input ended")
        return None

    def _on_deadline(self, s: _Session) -> _Outcome | None:
        o = self._o
        now = time.monotonic()
        if not s.started.is_set():
            if now >= s.opened + o.connect_timeout_s:
                return _Outcome("retry", "no session_started")
            return None
        if s.held is not None and now >= s.held.deadline:
            self._count("twin_missing")
            s.twin_misses += 1
            self._release_held(s)
        if s.unanswered_since is not None and now >= s.unanswered_since + o.stall_timeout_s:
            self._count("stalls")
            return _Outcome("retry", f"server silent for {o.stall_timeout_s:g} s")
        if s.commit_sent_at is not None:
            if now >= max(s.commit_sent_at, s.last_msg) + o.flush_timeout_s:
                return _Outcome("retry", "final commit not answered")
            return self._end_reached(s)
        return None

    def _on_close(self, s: _Session, exc: ConnectionClosed) -> _Outcome:
        code = exc.rcvd.code if exc.rcvd is not None else None
        if code == 1000 and (s.progressed or time.monotonic() - s.opened >= 5.0):
            return _Outcome("ended", "server closed the session")  # e.g. its idle timeout
        return _Outcome("retry", f"connection closed (code {code})")

    def _on_message(self, s: _Session, raw: str | bytes) -> _Outcome | None:
        try:
            msg = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            self._count("malformed")
            log.warning(
                "elevenlabs %s: malformed message ignored: %.80r", self._key, _scrub(str(raw), self._secret)
            )
            return None
        if not isinstance(msg, dict) or not isinstance(msg.get("message_type"), str):
            self._count("malformed")
            log.warning("elevenlabs %s: message without message_type ignored", self._key)
            return None
        mt = msg["message_type"]
        if mt == "error" and msg.get("error") in ERROR_TYPES:
            mt = msg["error"]  # some docs show the kind in `error` under a generic message_type
        text = msg.get("text") if isinstance(msg.get("text"), str) else ""
        if mt == "session_started":
            s.started.set()
            log.debug("elevenlabs %s: session %s started", self._key, str(msg.get("session_id"))[:64])
        elif mt in PARTIAL_TYPES:
            self._on_partial(s, text)
        elif mt == "committed_transcript":
            self._on_committed(s, text)
        elif mt == "committed_transcript_with_timestamps":
            self._on_committed_timed(s, text, msg.get("words"))
        elif mt in ERROR_TYPES:
            return self._on_error(s, mt, msg.get("error"))
        elif mt in IGNORED_TYPES:
            pass
        else:
            self._count("unknown_messages")
            log.warning("elevenlabs %s: unknown message type %.40r ignored", self._key, mt)
        return None

    def _on_error(self, s: _Session, kind: str, detail: Any) -> _Outcome:
        self._count(f"error_{kind}")
        why = kind if not isinstance(detail, str) else f"{kind}: {_scrub(detail, self._secret)[:200]}"
        if kind in FATAL_ERRORS:
            return _Outcome("fatal", why)
        if kind in SESSION_END_ERRORS:
            if kind == "insufficient_audio_activity" and not s.progressed:
                self._silent_ends += 1
                if self._silent_ends >= 2:
                    # Twice in a row the server heard no speech in what we sent (noise our loudness
                    # map took for speech): stop re-sending it, or we would reconnect forever.
                    with self._lock:
                        self._covered = max(self._covered, self._send_pos)
                        self._trim_locked()
            return _Outcome("ended", why)
        return _Outcome("retry", why)

    # ---------------------------------------------------------------- transcripts
    def _on_partial(self, s: _Session, text: str) -> None:
        text = text.strip()
        if not text or text == s.last_partial:
            return
        s.last_partial = text
        with self._lock:
            speech = self._first_speech_locked()
            start = max(self._covered, speech if speech is not None else self._covered) / SR
            end = max(self._send_pos / SR, start)
            self._events.append(SttEvent("partial", text, start, end))

    def _on_committed(self, s: _Session, text: str) -> None:
        if s.expect_twin == ("committed_transcript", _norm(text)):
            s.expect_twin = None  # the plain twin of a timestamped commit that came first
            return
        s.expect_twin = None
        if s.held is not None:
            self._count("twin_missing")
            self._release_held(s)
        with self._lock:
            sent = self._send_pos
        if self._o.include_timestamps and s.twin_misses < 2:
            s.held = _Held(text, sent, time.monotonic() + self._o.twin_wait_s)
        else:  # no twins expected (any more): a late one is dropped by expect_twin
            self._commit(s, text, None, sent)
            s.expect_twin = ("committed_transcript_with_timestamps", _norm(text))

    def _on_committed_timed(self, s: _Session, text: str, words: Any) -> None:
        if s.held is not None:
            held, s.held = s.held, None
            s.twin_misses = 0
            self._commit(s, text or held.text, words, held.sent_at)
            return
        if s.expect_twin == ("committed_transcript_with_timestamps", _norm(text)):
            s.expect_twin = None  # late twin of a plain commit we already emitted
            return
        with self._lock:
            sent = self._send_pos
        s.expect_twin = ("committed_transcript", _norm(text))
        self._commit(s, text, words, sent)

    def _release_held(self, s: _Session) -> None:
        held, s.held = s.held, None
        if held is not None:
            s.expect_twin = ("committed_transcript_with_timestamps", _norm(held.text))
            self._commit(s, held.text, None, held.sent_at)

    def _commit(self, s: _Session, text: str, words: Any, sent_at: int) -> None:
        """One server commit: advance the covered audio and emit its final (if it has text)."""
        s.progressed = True
        self._silent_ends = 0
        s.last_partial = None
        self._last_session_progressed = True
        text = text.strip()
        if s.commit_sent_at is not None and not text:
            s.end_empty_answer = True
        with self._lock:
            cov = self._covered
            span = _word_span(words, s.origin)
            if span is not None:
                start, end = span
                new_cov = min(max(end, cov), sent_at)
            elif text:
                start, end = self._utterance_span_locked(cov, sent_at)
                new_cov = max(cov, end)
            else:  # an empty commit: do not swallow speech that may follow it
                start = end = cov
                speech = self._first_speech_locked()
                new_cov = max(cov, min(sent_at, speech if speech is not None else sent_at))
            self._covered = new_cov
            if text:
                t0 = max(start / SR, self._last_final_end, self._settled_promised)
                t1 = max(end / SR, t0)
                self._last_final_end = t1
                self._events.append(SttEvent("final", text, t0, t1))
            self._trim_locked()
        self._count("finals" if text else "empty_commits")


# --------------------------------------------------------------------------------------------------
_closing: set[asyncio.Future[None]] = set()  # background closes (a reference keeps them alive)


async def _close_quietly(ws: ClientConnection) -> None:
    with contextlib.suppress(Exception):
        await ws.close()


def _word_span(words: Any, origin: int) -> tuple[int, int] | None:
    """Stream samples spanned by the timed words (spacing excluded), or None without usable words."""
    if not isinstance(words, list):
        return None
    starts: list[float] = []
    ends: list[float] = []
    for w in words:
        if not isinstance(w, Mapping) or w.get("type") == "spacing":
            continue
        a, b = w.get("start"), w.get("end")
        if _finite(a) and _finite(b) and 0 <= a <= b:
            starts.append(float(a))
            ends.append(float(b))
    if not starts:
        return None
    return origin + round(min(starts) * SR), origin + round(max(ends) * SR)


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _norm(text: str) -> str:
    return " ".join(text.casefold().split())


def _as_int16(pcm: np.ndarray) -> np.ndarray:
    a = np.asarray(pcm).reshape(-1)
    if a.dtype == np.int16:
        return a.copy()  # the caller may reuse its buffer
    if np.issubdtype(a.dtype, np.floating):
        return (np.clip(np.nan_to_num(a), -1.0, 1.0) * 32767).astype(np.int16)
    return np.clip(a, -32768, 32767).astype(np.int16)


def _audio_message(pcm: np.ndarray) -> str:
    return json.dumps(
        {
            "message_type": "input_audio_chunk",
            "audio_base_64": base64.b64encode(pcm.astype("<i2").tobytes()).decode("ascii"),
            "commit": False,
            "sample_rate": SR,
        }
    )


def _commit_message() -> str:
    return json.dumps(
        {"message_type": "input_audio_chunk", "audio_base_64": "", "commit": True, "sample_rate": SR}
    )


def _scrub(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


class _ScrubbingLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """websockets logs request headers at DEBUG, the xi-api-key among them: mask it."""

    def __init__(self, logger: logging.Logger, secret: str) -> None:
        super().__init__(logger, {})
        self._secret = secret

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        try:
            text = str(msg) % args if args else str(msg)
        except (TypeError, ValueError):
            text = f"{msg} {args}"
        kwargs.setdefault("stacklevel", 2)
        self.logger.log(level, "%s", _scrub(text, self._secret), **kwargs)
