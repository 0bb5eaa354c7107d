"""A local stand-in for ElevenLabs' realtime speech-to-text WebSocket, for tests (loopback only).

It speaks the protocol as ElevenLabs documents it (``elevenlabs_protocol`` names the sources), not as
our engine happens to use it:

- the handshake: the ``xi-api-key`` header, or a single-use ``token`` query parameter (consumed on
  use); every documented query parameter checked against its type and range (``keyterms`` repeated,
  at most 50 of at most 20 characters), a refusal answered with ``invalid_request``;
- ``session_started`` with the session's whole documented ``config``;
- ``input_audio_chunk`` with all four required fields, ``previous_text`` (a string, or null as the
  SDKs send it) on the first chunk only, base64 PCM no larger than ``max_chunk_bytes``;
- commits by its VAD (``vad_silence_threshold_secs`` of silence), on ``commit: true`` under either
  strategy, and by itself after 90 s of uncommitted audio; a commit request with less than 0.3 s of
  uncommitted audio (or sooner than ``min_commit_interval_s`` after the last) is ignored and answered
  ``commit_throttled`` [OBS], the socket left open (``throttle_closes``: closed, as [EVT] says of
  every error);
- ``partial_transcript``, optionally ``final_transcript`` (and its timestamped form) once an utterance
  settles, ``committed_transcript`` and, with ``include_timestamps``, its twin
  ``committed_transcript_with_timestamps``: ``language_code`` the given one, else "eng" as if detected
  with ``include_language_detection``, else null; word times in seconds since the session's first
  audio, each word with ``logprob``, ``speaker_id`` and ``characters`` (strings as [API] has them, or
  ``word_variant="sdk"``: timed character objects and ``channel_index``, as the SDK types have them);
- every error as ``{"message_type": <kind>, "error": <detail>}`` and then a close.

Faults (``elevenlabs_protocol.Fault``) are planned per connection (``plan``) or for every later one
(``always``). An optional idle timeout closes a session that receives no ``input_audio_chunk`` for a
while, as the real service does. Timeouts and stalls are on ``server.clock``; give the server and the
engine the same ``ManualClock`` and a test moves time itself instead of sleeping.
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
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from quantcoach.aio import LoopThread
from stt.clock import SYSTEM_CLOCK, Clock
from tests.support.elevenlabs_audio import (  # re-exported: the tests import them from here
    SR,
    VOCAB,
    ManualClock,
    Recognizer,
    silence,
    tone_utterance,
    word_logprob,
    word_tone,
)
from tests.support.elevenlabs_protocol import (
    ERROR_TYPES,
    MALFORMED,
    MIN_COMMIT_S,
    PATH,
    ConnectionRecord,
    Fault,
    check_params,
)

__all__ = [
    "ERROR_TYPES", "SR", "VOCAB", "ConnectionRecord", "Fault", "ManualClock", "ScribeTestServer",
    "silence", "tone_utterance", "word_logprob", "word_tone",
]  # fmt: skip


class _Closed(Exception):
    """The session is over (an error was sent and the socket closed, or a fault ended it)."""


# ------------------------------------------------------------------------------------------ server
class ScribeTestServer:
    """Run with ``with ScribeTestServer(api_key) as server:``; point the engine at ``server.url``."""

    def __init__(
        self,
        api_key: str = "test-key",
        *,
        auth_failure: Literal["message", "http"] = "message",
        twin: Literal["after", "before", "none"] = "after",
        finals: bool = False,
        word_variant: Literal["docs", "sdk"] = "docs",
        idle_timeout_s: float | None = None,
        max_chunk_bytes: int = 128 * 1024,
        min_commit_interval_s: float | None = None,
        throttle_closes: bool = False,
        word_time_offset_s: float = 0.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.api_key = api_key
        self.tokens: set[str] = set()  # single-use tokens, each accepted once instead of the key
        self.clock = clock
        self.auth_failure = auth_failure
        self.twin = twin
        self.finals = finals  # send final_transcript(_with_timestamps) before each commit
        self.word_variant = word_variant
        self.idle_timeout_s = idle_timeout_s
        self.max_chunk_bytes = max_chunk_bytes
        self.min_commit_interval_s = min_commit_interval_s  # commits closer than this are throttled
        self.throttle_closes = throttle_closes
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
        query = parse_qsl(urlsplit(request.path).query, keep_blank_values=True)
        with self._lock:
            index = len(self.connections)
            fault = self._plan[index] if index < len(self._plan) else self.always
            record = ConnectionRecord(index)
            token = next((v for k, v in query if k == "token"), None)
            record.key_ok = request.headers.get("xi-api-key") == self.api_key or token in self.tokens
            self.tokens.discard(token or "")  # "Will be consumed on use"
            record.params = {k: v for k, v in query if k not in ("keyterms", "token")}
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

        async def fail(message_type: str, detail: str | None, code: int = 1008) -> None:
            """An error, then the close [EVT]; the session is over."""
            await send({"message_type": message_type, **({"error": detail} if detail is not None else {})})
            record.closed_reason = message_type
            await ws.close(code, message_type)
            raise _Closed

        try:
            if not record.key_ok:
                await fail("auth_error", "Invalid API key")
            config, problem = check_params(record.params, record.keyterms)
            if problem:
                await fail("invalid_request", problem)
            await send({"message_type": "session_started", "session_id": uuid.uuid4().hex, "config": config})
            await _Session(self, ws, record, fault, config, send, fail).run()
        except _Closed:
            pass
        except ConnectionClosed:
            record.closed_reason = record.closed_reason or "client gone"


class _Session:
    """One connection after ``session_started``: chunks in, transcripts out."""

    def __init__(
        self,
        server: ScribeTestServer,
        ws: ServerConnection,
        record: ConnectionRecord,
        fault: Fault | None,
        config: dict[str, Any],
        send: Any,
        fail: Any,
    ) -> None:
        self.server, self.ws, self.record, self.fault = server, ws, record, fault
        self.send, self.fail = send, fail
        vad = config["commit_strategy"] == "vad"
        self.rec = Recognizer(config["vad_silence_threshold_secs"] if vad else None)
        self.timed = config["include_timestamps"]
        detect = config["include_language_detection"]
        # "Detected or specified language code": the given one, "eng" as if detected, else null
        self.language = config["language_code"] or ("eng" if detect else None)
        self.detect = detect
        self.last_commit_request = -float("inf")

    async def run(self) -> None:
        server, record, first_chunk = self.server, self.record, True
        while True:
            try:
                raw = await server.clock.wait_for(self.ws.recv(), server.idle_timeout_s)
            except TimeoutError:
                record.closed_reason = "idle"
                await self.ws.close(1000, "")  # the real service closes quiet sockets without an error
                return
            pcm, commit = await self._chunk(raw, first_chunk)
            first_chunk = False
            record.chunks += 1
            record.last_chunk_at = server.clock.monotonic()
            record.empty_chunks += not len(pcm)
            record.audio_samples += len(pcm)
            for kind, value in self.rec.feed(pcm):
                if kind == "partial":
                    await self.send({"message_type": "partial_transcript", "text": value})
                else:
                    await self._send_commit(*value)
            if commit:
                await self._commit_request()
            fault = self.fault
            if fault is not None and not record.fault_fired and _due(fault, record, self.rec):
                record.fault_fired = True
                await self._fire(fault)

    async def _chunk(self, raw: str | bytes, first: bool) -> tuple[np.ndarray, bool]:
        """An ``input_audio_chunk`` as the schema has it [API], or the error for it."""
        try:
            msg = json.loads(raw)
        except ValueError:
            await self.fail("input_error", "message is not JSON")
        if not isinstance(msg, dict) or msg.get("message_type") != "input_audio_chunk":
            await self.fail("input_error", "expected message_type input_audio_chunk")
        rate, commit, audio = msg.get("sample_rate"), msg.get("commit"), msg.get("audio_base_64")
        if type(rate) is not int or rate != SR or not isinstance(commit, bool):
            await self.fail("input_error", "sample_rate must be the integer 16000 and commit a boolean")
        if not isinstance(audio, str):
            await self.fail("input_error", "audio_base_64 is required")
        previous = msg.get("previous_text")
        if previous is not None and (not isinstance(previous, str) or not first):
            await self.fail("input_error", "previous_text can only be sent (as text) with the first chunk")
        try:
            data = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError, TypeError):
            await self.fail("input_error", "audio_base_64 is not base64")
        if len(data) > self.server.max_chunk_bytes:
            await self.fail("chunk_size_exceeded", f"chunk of {len(data)} bytes")
        if len(data) % 2:
            await self.fail("input_error", "odd number of PCM bytes")
        self.record.max_chunk_bytes = max(self.record.max_chunk_bytes, len(data))
        return np.frombuffer(data, "<i2"), commit

    async def _commit_request(self) -> None:
        record, server, fault = self.record, self.server, self.fault
        record.commit_requests += 1
        record.commit_at.append(record.audio_samples)
        if fault is not None and fault.on_commit and not record.fault_fired:
            record.fault_fired = True
            await self._fire(fault)
        now = server.clock.monotonic()
        interval = server.min_commit_interval_s
        if self.rec.uncommitted_s < MIN_COMMIT_S:
            why = (
                f"Commit request ignored: only {self.rec.uncommitted_s:.2f}s of uncommitted audio. "
                f"You need at least {MIN_COMMIT_S}s of uncommitted audio before committing."
            )
        elif interval is not None and now - self.last_commit_request < interval:
            why = "Commit request ignored: too many commit requests in a short period of time."
        else:
            self.last_commit_request = now
            await self._send_commit(*self.rec.commit())
            return
        record.throttled += 1
        if server.throttle_closes:
            await self.fail("commit_throttled", why)
        await self.send({"message_type": "commit_throttled", "error": why})

    async def _send_commit(self, text: str, words: list[dict[str, Any]]) -> None:
        server = self.server
        words = [self._word(w) for w in words]
        stamped = {"text": text, "language_code": self.language, "words": words}
        if server.finals:
            await self.send({"message_type": "final_transcript", "text": text})
            if self.timed or self.detect:
                await self.send({"message_type": "final_transcript_with_timestamps", **stamped})
        plain = {"message_type": "committed_transcript", "text": text}
        timed = {"message_type": "committed_transcript_with_timestamps", **stamped}
        if not self.timed or server.twin == "none":
            await self.send(plain)
        elif server.twin == "before":
            await self.send(timed)
            await self.send(plain)
        else:
            await self.send(plain)
            await self.send(timed)

    def _word(self, w: dict[str, Any]) -> dict[str, Any]:
        offset = self.server.word_time_offset_s
        w = {**w, "start": w["start"] + offset, "end": w["end"] + offset}
        if self.server.word_variant == "sdk" and w["type"] == "word":
            step = (w["end"] - w["start"]) / max(1, len(w["text"]))
            w["characters"] = [
                {"text": c, "start": w["start"] + i * step, "end": w["start"] + (i + 1) * step}
                for i, c in enumerate(w["text"])
            ]
            w["channel_index"] = 0
        return w

    async def _fire(self, fault: Fault) -> None:
        """Apply a fault; raises ``_Closed`` when the session is over."""
        ws = self.ws
        if fault.kind == "drop":
            if fault.abort:
                self.record.closed_reason = "aborted"
                ws.transport.abort()
            else:
                await ws.close(fault.close_code, "")
            raise _Closed
        if fault.kind == "error":
            code = 1008 if fault.error_type in ("auth_error", "quota_exceeded", "unaccepted_terms") else 1011
            await self.fail(
                fault.error_type, f"{fault.error_type} (injected)" if fault.error_field else None, code
            )
        if fault.kind == "throttle":
            await self.send(
                {"message_type": "commit_throttled", "error": "Commit request ignored (injected)"}
            )
        if fault.kind == "stall":
            await self.server.clock.sleep(fault.duration_s)
        if fault.kind == "malformed":
            for raw in MALFORMED:
                await ws.send(raw)


def _due(fault: Fault, record: ConnectionRecord, rec: Recognizer) -> bool:
    if fault.kind in ("slow", "http_status", "none") or fault.on_commit:
        return False
    return record.audio_samples >= fault.at_audio_s * SR and (not fault.mid_utterance or rec.open)


class _QuietLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The server's websockets logger without DEBUG, where request headers (the key) go."""

    def __init__(self) -> None:
        super().__init__(logging.getLogger("tests.scribe_server"), {})

    def isEnabledFor(self, level: int) -> bool:
        return level > logging.DEBUG and self.logger.isEnabledFor(level)
