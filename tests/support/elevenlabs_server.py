"""A local stand-in for ElevenLabs' realtime speech-to-text WebSocket, for tests (loopback only).

It speaks the subset in docs/elevenlabs-realtime-protocol.md, as ElevenLabs documents it: checks the
``xi-api-key`` header and the query parameters (``keyterms`` repeated, at most 50 of at most 20
characters), answers ``session_started`` with the session's config, decodes base64 PCM from
``input_audio_chunk`` messages (all four fields required, ``previous_text`` on the first chunk only),
finds utterances with an energy VAD (``vad_silence_threshold_secs`` of silence commits one; a
``commit: true`` chunk commits at once, even under ``commit_strategy=vad``), and sends
``partial_transcript``, ``committed_transcript`` and ``committed_transcript_with_timestamps`` (with
``language_code`` and word times in seconds since the session's first audio, each word with a
``logprob``).

Recognition is deterministic and independent of the session: every word is a tone burst whose pitch
names it (``VOCAB[k]`` is ``BASE_HZ + k * STEP_HZ``), so the same audio re-sent on a new session gives
the same text, which is what makes "no final lost, none repeated" testable. ``tone_utterance`` builds
such audio.

Faults are planned per connection (``plan``) or for every later one (``always``): drop the connection
(abort or close frame; also on a commit request, before answering it), answer a documented error type,
stall, send malformed JSON, unknown message types and hostile shapes, slow every message down, or reject
the HTTP handshake. An optional idle timeout closes a session
that receives no ``input_audio_chunk`` for a while, as the real service does.

Timeouts and stalls are on ``server.clock``; give the server and the engine the same ``ManualClock``
and a test moves time itself instead of sleeping.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import threading
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qsl, urlsplit

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from quantcoach.aio import LoopThread
from stt.clock import SYSTEM_CLOCK, Clock

T = TypeVar("T")
SR = 16_000  # the protocol's pcm_16000, stated here on its own: the server is the engine's oracle
VAD_FRAME = SR // 100  # 10 ms decisions
VOCAB = (
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
    "india", "juliett", "kilo", "lima", "mike", "november", "oscar", "papa",
)  # fmt: skip
BASE_HZ = 400.0
STEP_HZ = 100.0
PATH = "/v1/speech-to-text/realtime"
MAX_KEYTERMS, MAX_KEYTERM_CHARS = 50, 20  # Scribe v2 Realtime's documented keyterm limits
ERROR_TYPES = (
    "error", "auth_error", "quota_exceeded", "commit_throttled", "unaccepted_terms", "rate_limited",
    "queue_overflow", "resource_exhausted", "session_time_limit_exceeded", "input_error",
    "chunk_size_exceeded", "insufficient_audio_activity", "transcriber_error",
)  # fmt: skip


# ------------------------------------------------------------------------------------------ audio
def word_tone(word: str, seconds: float, amplitude: float = 0.3) -> np.ndarray:
    """int16 tone burst that the server hears as ``word``."""
    k = VOCAB.index(word)
    t = np.arange(round(seconds * SR)) / SR
    return (amplitude * 32767 * np.sin(2 * np.pi * (BASE_HZ + k * STEP_HZ) * t)).astype(np.int16)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * SR), np.int16)


def tone_utterance(text: str, word_s: float = 0.3, gap_s: float = 0.1) -> np.ndarray:
    parts: list[np.ndarray] = []
    for i, word in enumerate(text.split()):
        if i:
            parts.append(silence(gap_s))
        parts.append(word_tone(word, word_s))
    return np.concatenate(parts)


# ------------------------------------------------------------------------------------------ clock
class ManualClock:
    """A ``stt.clock.Clock`` whose time moves only on ``advance`` (from any thread; sleepers on any loop)."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._lock = threading.Lock()
        self._sleepers: list[tuple[float, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def monotonic(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds
            due = [x for x in self._sleepers if x[0] <= self._now]
            self._sleepers = [x for x in self._sleepers if x[0] > self._now]
        for _, loop, fut in due:
            with contextlib.suppress(RuntimeError):  # that loop is closed
                loop.call_soon_threadsafe(_wake_sleeper, fut)

    async def sleep(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._lock:
            deadline = self._now + seconds
            if deadline > self._now:
                entry = (deadline, loop, fut)
                self._sleepers.append(entry)
            else:
                fut.set_result(None)
        try:
            await fut
        finally:
            with self._lock:
                self._sleepers = [x for x in self._sleepers if x[2] is not fut]

    async def wait_for(self, aw: Awaitable[T], timeout: float | None) -> T:
        if timeout is None:
            return await aw
        task = asyncio.ensure_future(aw)
        timer = asyncio.ensure_future(self.sleep(timeout))
        try:
            await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # we were cancelled
            task.cancel()
            raise
        finally:
            timer.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
            if task.cancelled():
                raise TimeoutError
        return task.result()  # done, or it finished while being cancelled

    def __repr__(self) -> str:
        return f"ManualClock(now={self.monotonic():.3f})"


def _wake_sleeper(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


# ------------------------------------------------------------------------------------------ faults
@dataclass(frozen=True)
class Fault:
    """What goes wrong on one connection, and when.

    It fires once the session has received ``at_audio_s`` seconds of audio (and, with
    ``mid_utterance``, only while an utterance is open, i.e. after a partial and before its commit;
    with ``on_commit``, only on a commit request, before it is answered).
    """

    kind: Literal["drop", "error", "stall", "malformed", "slow", "http_status", "none"]
    at_audio_s: float = 0.0
    mid_utterance: bool = False
    error_type: str = "error"  # kind == "error": the message_type sent before closing
    abort: bool = True  # kind == "drop": abort TCP (True) or send a close frame with close_code
    close_code: int = 1011
    duration_s: float = 1.0  # kind == "stall"
    delay_s: float = 0.05  # kind == "slow": before every message the server sends
    status: int = 503  # kind == "http_status"
    on_commit: bool = False


@dataclass
class ConnectionRecord:
    index: int
    params: dict[str, str] = field(default_factory=dict)  # single-valued query parameters
    keyterms: list[str] = field(default_factory=list)  # the repeated `keyterms` parameter, in order
    key_ok: bool = False
    audio_samples: int = 0
    chunks: int = 0
    empty_chunks: int = 0
    max_chunk_bytes: int = 0
    commit_requests: int = 0
    commit_at: list[int] = field(default_factory=list)  # audio_samples received at each commit request
    last_chunk_at: float = 0.0  # on the server's clock
    sent: list[str] = field(default_factory=list)  # message types sent
    fault_fired: bool = False
    closed_reason: str = ""


# ------------------------------------------------------------------------------------------ recognizer
class _Recognizer:
    """Energy VAD + pitch-to-word, fed whole 10 ms frames; times are session seconds."""

    def __init__(
        self, silence_s: float | None, threshold_rms: float = 0.01 * 32768, word_gap_s: float = 0.04
    ) -> None:
        # silence_s None: manual commits only (commit_strategy=manual)
        self.silence_frames = max(1, round(silence_s * 100)) if silence_s is not None else 1 << 62
        self.word_gap_frames = max(1, round(word_gap_s * 100))
        self.threshold = threshold_rms
        self.frame = 0  # next frame index
        self.tail = np.zeros(0, np.int16)
        self.words: list[tuple[int, int, str]] = []  # (start frame, end frame, text)
        self.current: list[np.ndarray] = []
        self.current_start = 0
        self.last_loud = -1
        self.open = False

    def feed(self, pcm: np.ndarray) -> list[tuple[str, Any]]:
        """Events: ("partial", text) and ("commit", (text, words))."""
        buf = np.concatenate((self.tail, pcm)) if len(self.tail) else pcm
        n = len(buf) // VAD_FRAME
        self.tail = buf[n * VAD_FRAME :]
        out: list[tuple[str, Any]] = []
        changed = False
        for i in range(n):
            frame = buf[i * VAD_FRAME : (i + 1) * VAD_FRAME]
            loud = float(np.sqrt(np.mean(frame.astype(np.float64) ** 2))) >= self.threshold
            if loud:
                if not self.current:
                    self.current_start = self.frame
                self.current.append(frame)
                self.last_loud = self.frame
                self.open = True
                changed = True
            else:
                quiet = self.frame - self.last_loud
                if self.current and quiet >= self.word_gap_frames:
                    self._close_word()
                if self.open and quiet >= self.silence_frames:
                    out.append(("commit", self._commit()))
                    changed = False
            self.frame += 1
        if changed and self.open:
            out.append(("partial", self.text(with_current=True)))
        return out

    def commit(self) -> tuple[str, list[dict[str, Any]]]:
        return self._commit()

    def text(self, with_current: bool = False) -> str:
        words = [w for _, _, w in self.words]
        if with_current and self.current and len(self.current) >= 5:
            words.append(_pitch_word(np.concatenate(self.current)))
        return " ".join(words)

    def _close_word(self) -> None:
        self.words.append((self.current_start, self.last_loud + 1, _pitch_word(np.concatenate(self.current))))
        self.current = []

    def _commit(self) -> tuple[str, list[dict[str, Any]]]:
        if self.current:
            self._close_word()
        words: list[dict[str, Any]] = []
        for i, (a, b, w) in enumerate(self.words):
            if i:
                prev_end = self.words[i - 1][1]
                words.append({"text": " ", "start": prev_end / 100, "end": a / 100, "type": "spacing"})
            words.append(
                {
                    "text": w,
                    "start": a / 100,
                    "end": b / 100,
                    "type": "word",
                    "speaker_id": "speaker_0",
                    "logprob": word_logprob(w),
                    "characters": list(w),
                }
            )
        text = self.text()
        self.words = []
        self.open = False
        return text, words


def word_logprob(word: str) -> float:
    """The (made-up, deterministic) log probability the server gives a word."""
    return -0.01 * (VOCAB.index(word) + 1) if word in VOCAB else -2.0


def _pitch_word(samples: np.ndarray) -> str:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples))))
    hz = float(np.argmax(spectrum)) * SR / len(samples)
    k = round((hz - BASE_HZ) / STEP_HZ)
    return VOCAB[k] if 0 <= k < len(VOCAB) else "unknown"


# ------------------------------------------------------------------------------------------ server
class ScribeTestServer:
    """Run with ``with ScribeTestServer(api_key) as server:``; point the engine at ``server.url``."""

    def __init__(
        self,
        api_key: str = "test-key",
        *,
        auth_failure: Literal["message", "http"] = "message",
        twin: Literal["after", "before", "none"] = "after",
        idle_timeout_s: float | None = None,
        max_chunk_bytes: int = 128 * 1024,
        word_time_offset_s: float = 0.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.api_key = api_key
        self.clock = clock
        self.auth_failure = auth_failure
        self.twin = twin
        self.idle_timeout_s = idle_timeout_s
        self.max_chunk_bytes = max_chunk_bytes
        self.word_time_offset_s = word_time_offset_s  # a hostile server: word times off by this much
        self.connections: list[ConnectionRecord] = []
        self._plan: list[Fault | None] = []
        self.always: Fault | None = None
        self._lock = threading.Lock()
        self._thread: LoopThread | None = None
        self._server: Server | None = None
        self.port = 0

    # lifecycle ---------------------------------------------------------------------------------
    def __enter__(self) -> ScribeTestServer:
        self._thread = LoopThread("scribe-test-server")

        async def start() -> Server:
            return await serve(
                self._handle,
                "127.0.0.1",
                0,
                process_request=self._process_request,
                close_timeout=0.2,  # its own closes after a fault need not wait on a busy client
                logger=_QuietLogger(),  # websockets logs request headers (the key) at DEBUG
            )

        self._server = self._thread.call(start(), 5)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._thread is not None and self._server is not None
        server = self._server

        async def stop() -> None:
            for conn, task in list(server.handlers.items()):  # no closing handshakes: clients may be gone
                conn.transport.abort()
                task.cancel()  # e.g. a handler asleep in an injected stall
            server.close(close_connections=False)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)

        with contextlib.suppress(Exception):
            self._thread.call(stop(), 5)
        self._thread.stop()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{PATH}"

    # test controls -----------------------------------------------------------------------------
    def plan(self, *faults: Fault | None) -> None:
        """Faults for the next connections, in order (None: a healthy connection)."""
        with self._lock:
            self._plan = list(faults)

    def records(self) -> list[ConnectionRecord]:
        with self._lock:
            return list(self.connections)

    # handshake ----------------------------------------------------------------------------------
    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        with self._lock:
            index = len(self.connections)
            fault = self._plan[index] if index < len(self._plan) else self.always
            record = ConnectionRecord(index)
            record.key_ok = request.headers.get("xi-api-key") == self.api_key
            query = parse_qsl(urlsplit(request.path).query, keep_blank_values=True)
            record.params = {k: v for k, v in query if k != "keyterms"}
            record.keyterms = [v for k, v in query if k == "keyterms"]
            self.connections.append(record)
        connection.qc_record = record  # type: ignore[attr-defined]
        connection.qc_fault = fault  # type: ignore[attr-defined]
        if urlsplit(request.path).path != PATH:
            return connection.respond(404, "not found\n")
        if fault is not None and fault.kind == "http_status":
            record.fault_fired = True
            return connection.respond(fault.status, "injected\n")
        if not record.key_ok and self.auth_failure == "http":
            return connection.respond(401, "invalid api key\n")
        return None

    # session ------------------------------------------------------------------------------------
    async def _handle(self, ws: ServerConnection) -> None:
        record: ConnectionRecord = ws.qc_record  # type: ignore[attr-defined]
        fault: Fault | None = ws.qc_fault  # type: ignore[attr-defined]
        delay = fault.delay_s if fault is not None and fault.kind == "slow" else 0.0

        async def send(msg: dict[str, Any]) -> None:
            if delay:
                await self.clock.sleep(delay)
            record.sent.append(str(msg.get("message_type")))
            await ws.send(json.dumps(msg))

        async def fail(message_type: str, detail: str, code: int = 1008) -> None:
            await send({"message_type": message_type, "error": detail})
            record.closed_reason = message_type
            await ws.close(code, message_type)

        try:
            if not record.key_ok:
                await fail("auth_error", "Invalid API key")
                return
            params, problem = _check_params(record.params, record.keyterms)
            if problem:
                await fail("invalid_request", problem)
                return
            await send({"message_type": "session_started", "session_id": uuid.uuid4().hex, "config": params})
            vad = params["commit_strategy"] == "vad"
            rec = _Recognizer(float(params["vad_silence_threshold_secs"]) if vad else None)
            timed = params["include_timestamps"]
            language = params["language_code"] or "eng"  # "detected" (as ISO 639-3) when not given
            first_chunk = True
            while True:
                try:
                    raw = await self.clock.wait_for(ws.recv(), self.idle_timeout_s)
                except TimeoutError:
                    record.closed_reason = "idle"
                    await ws.close(1000, "")  # the real service closes quiet sockets without an error
                    return
                try:
                    msg = json.loads(raw)
                except ValueError:
                    await fail("input_error", "message is not JSON")
                    return
                if not isinstance(msg, dict) or msg.get("message_type") != "input_audio_chunk":
                    await fail("input_error", "expected message_type input_audio_chunk")
                    return
                if msg.get("sample_rate") != SR or not isinstance(msg.get("commit"), bool):
                    await fail("input_error", "sample_rate must be 16000 and commit a boolean")
                    return
                if not isinstance(msg.get("audio_base_64"), str):
                    await fail("input_error", "audio_base_64 is required")
                    return
                if "previous_text" in msg and not first_chunk:
                    await fail("input_error", "previous_text can only be sent with the first chunk")
                    return
                first_chunk = False
                try:
                    data = base64.b64decode(msg["audio_base_64"], validate=True)
                except (binascii.Error, ValueError, TypeError):
                    await fail("input_error", "audio_base_64 is not base64")
                    return
                if len(data) > self.max_chunk_bytes:
                    await fail("chunk_size_exceeded", f"chunk of {len(data)} bytes")
                    return
                if len(data) % 2:
                    await fail("input_error", "odd number of PCM bytes")
                    return
                pcm = np.frombuffer(data, "<i2")
                record.chunks += 1
                record.last_chunk_at = self.clock.monotonic()
                record.empty_chunks += not len(pcm)
                record.max_chunk_bytes = max(record.max_chunk_bytes, len(data))
                record.audio_samples += len(pcm)
                for kind, value in rec.feed(pcm):
                    if kind == "partial":
                        await send({"message_type": "partial_transcript", "text": value})
                    else:
                        await self._send_commit(send, *value, timed=timed, language=language)
                if msg["commit"]:
                    record.commit_requests += 1
                    record.commit_at.append(record.audio_samples)
                    if fault is not None and fault.on_commit and not record.fault_fired:
                        record.fault_fired = True
                        if await self._fire(fault, ws, send, fail):
                            return
                    await self._send_commit(send, *rec.commit(), timed=timed, language=language)
                if fault is not None and not record.fault_fired and _due(fault, record, rec):
                    record.fault_fired = True
                    if await self._fire(fault, ws, send, fail):
                        return
        except ConnectionClosed:
            record.closed_reason = record.closed_reason or "client gone"

    async def _send_commit(
        self, send: Any, text: str, words: list[dict[str, Any]], *, timed: bool, language: str
    ) -> None:
        plain = {"message_type": "committed_transcript", "text": text}
        stamped = {
            "message_type": "committed_transcript_with_timestamps",
            "text": text,
            "language_code": language,
            "words": [
                {
                    **w,
                    "start": w["start"] + self.word_time_offset_s,
                    "end": w["end"] + self.word_time_offset_s,
                }
                for w in words
            ],
        }
        if not timed or self.twin == "none":
            await send(plain)
        elif self.twin == "before":
            await send(stamped)
            await send(plain)
        else:
            await send(plain)
            await send(stamped)

    async def _fire(self, fault: Fault, ws: ServerConnection, send: Any, fail: Any) -> bool:
        """Apply a fault; True when the session is over."""
        if fault.kind == "drop":
            if fault.abort:
                record: ConnectionRecord = ws.qc_record  # type: ignore[attr-defined]
                record.closed_reason = "aborted"
                ws.transport.abort()
            else:
                await ws.close(fault.close_code, "")
            return True
        if fault.kind == "error":
            code = 1008 if fault.error_type in ("auth_error", "quota_exceeded", "unaccepted_terms") else 1011
            await fail(fault.error_type, f"{fault.error_type} (injected)", code)
            return True
        if fault.kind == "stall":
            await self.clock.sleep(fault.duration_s)
            return False
        if fault.kind == "malformed":
            for raw in (
                '{"message_type": "partial_transcr',
                "[1, 2, 3]",
                '{"text": "no type"}',
                '{"message_type": "mystery_event", "text": "???"}',
                "\x00\xff not json",
                "[" * 100_000,  # nesting deeper than any JSON parser recurses
                '{"message_type": ["partial_transcript"], "text": 7}',
                '{"message_type": "partial_transcript", "text": {"nested": true}}',
                '{"message_type": "committed_transcript_with_timestamps", "text": 1, "words": "x"}',
                '{"message_type": "session_started", "config": [1], "session_id": {}}',
                '{"message_type": "partial_transcript", "text": null, "words": [[[]]]}',
                '{"message_type": "committed_transcript_with_timestamps", "text": "", "language_code": 7}',
            ):
                await ws.send(raw)
            return False
        return False


def _due(fault: Fault, record: ConnectionRecord, rec: _Recognizer) -> bool:
    if fault.kind in ("slow", "http_status", "none") or fault.on_commit:
        return False
    return record.audio_samples >= fault.at_audio_s * SR and (not fault.mid_utterance or rec.open)


def _check_params(q: dict[str, str], keyterms: list[str]) -> tuple[dict[str, Any], str]:
    """The session config (as session_started reports it), or a reason to refuse the session."""
    if not q.get("model_id"):
        return {}, "model_id is required"
    if len(keyterms) > MAX_KEYTERMS:
        return {}, f"at most {MAX_KEYTERMS} keyterms are allowed"
    for term in keyterms:
        if not term.strip() or len(term) > MAX_KEYTERM_CHARS:
            return {}, f"keyterm {term!r} must have 1 to {MAX_KEYTERM_CHARS} characters"
    audio_format = q.get("audio_format", "pcm_16000")
    if audio_format != "pcm_16000":
        return {}, f"this test server only speaks pcm_16000, not {audio_format}"
    strategy = q.get("commit_strategy", "manual")
    if strategy not in ("manual", "vad"):
        return {}, "commit_strategy must be manual or vad"
    try:
        silence_s = float(q.get("vad_silence_threshold_secs", "1.5"))
    except ValueError:
        return {}, "vad_silence_threshold_secs must be a number"
    if not 0.3 <= silence_s <= 3.0:
        return {}, "vad_silence_threshold_secs must be between 0.3 and 3.0"
    stamps = q.get("include_timestamps", "false").lower()
    if stamps not in ("true", "false"):
        return {}, "include_timestamps must be true or false"
    try:
        return _config(q, keyterms, audio_format, strategy, silence_s, stamps == "true"), ""
    except ValueError:
        return {}, "a numeric parameter is malformed"


def _config(
    q: dict[str, str], keyterms: list[str], audio_format: str, strategy: str, silence_s: float, stamps: bool
) -> dict[str, Any]:
    return {
        "sample_rate": SR,
        "audio_format": audio_format,
        "language_code": q.get("language_code", ""),
        "commit_strategy": strategy,
        "vad_silence_threshold_secs": silence_s,
        "vad_threshold": float(q.get("vad_threshold", "0.4")),
        "min_speech_duration_ms": int(q.get("min_speech_duration_ms", "100")),
        "min_silence_duration_ms": int(q.get("min_silence_duration_ms", "100")),
        "model_id": q["model_id"],
        "enable_logging": q.get("enable_logging", "true").lower() == "true",
        "include_timestamps": stamps,
        "include_language_detection": q.get("include_language_detection", "false").lower() == "true",
        "keyterms": list(keyterms),
        "no_verbatim": q.get("no_verbatim", "false").lower() == "true",
    }


class _QuietLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The server's websockets logger without DEBUG, where request headers (the key) go."""

    def __init__(self) -> None:
        super().__init__(logging.getLogger("tests.scribe_server"), {})

    def isEnabledFor(self, level: int) -> bool:
        return level > logging.DEBUG and self.logger.isEnabledFor(level)
