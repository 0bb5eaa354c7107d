"""One WebSocket session of a stream, from connect to an ``Outcome``; the stream decides what comes next.

A sender and a receiver run side by side on the loop thread. The sender sends what the ledger holds
(from the floor, in ``chunk_ms`` chunks), keeps a quiet socket alive, commits at end of input, when
a track goes quiet mid-utterance and where an over-long utterance is cut (``bounds``), and ends a
session that has nothing open for a long while. Its commits keep the service's rules: never two
within ``min_commit_gap_s``, none without the 0.3 s of uncommitted audio the server needs (at the end
of input, silence after the last sample makes it up); one the server ignores (``commit_throttled``)
leaves its utterance open, and an ignored end commit is sent again. The receiver validates every
message (``messages.parse``) and turns it into partials and (paired) commits, and watches the
deadlines: no ``session_started``, a twin overdue, speech sent and nothing heard back, an unanswered
final commit. All timing is on the injected clock. The API key is only ever in the handshake header.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from stt.elevenlabs import messages as m
from stt.elevenlabs.bounds import ManualCommits
from stt.elevenlabs.connection import Link, Outcome, close_in_background, open_socket, scrub
from stt.elevenlabs.ledger import AudioLedger, Count, SendPlan
from stt.elevenlabs.options import ElevenLabsOptions
from stt.elevenlabs.twins import Commit, TwinPairer
from stt.pcm import STT_SAMPLE_RATE as SR

log = logging.getLogger(__name__)


class Session:
    """One connection's state; ``run()`` once, then read ``progressed``."""

    def __init__(
        self, link: Link, o: ElevenLabsOptions, ledger: AudioLedger, wake: asyncio.Event, count: Count
    ) -> None:
        self._link, self._o, self._ledger, self._wake, self._count = link, o, ledger, wake, count
        self._clock = link.clock
        self.origin, self._resend = ledger.floor()  # final only when sending starts (see _sender)
        self.opened = self._clock.monotonic()
        self.started = asyncio.Event()
        self.progressed = False  # received a commit: the session worked
        self.twins = TwinPairer(expect_twins=o.include_timestamps, twin_wait_s=o.twin_wait_s, count=count)
        self.last_send = 0.0
        self.unanswered_since: float | None = None  # speech sent, no server message since
        self.commit_sent_at: float | None = None  # end_input flush
        self.idle_commit = False
        self.last_msg = 0.0
        self.end_empty_answer = False  # an empty commit came after our final commit: nothing left
        self.last_partial: str | None = None
        self._slack = round(0.8 * (o.vad_silence_threshold_secs or 1.5) * SR)
        self.commits = ManualCommits(self.origin, self._slack)
        self.language: str | None = None  # the session's language, as session_started reports it
        self.last_commit = -math.inf  # when this session last sent a manual commit
        self.end_commits = 0  # end-of-input commits sent (one more after each that was ignored)
        # a commit needs this much uncommitted audio on the server, or it is ignored (commit_throttled)
        self._min_commit = round((m.MIN_COMMIT_AUDIO_S + 0.05) * SR)

    async def run(self) -> Outcome:
        self._count("connects")
        log.debug(
            "elevenlabs %s: connecting at stream %.2f s (%.2f s to send)",
            self._link.key,
            self.origin / SR,
            self._resend / SR,
        )
        ws: ClientConnection | None = None
        try:
            ws = await open_socket(self._link, self._o)
            if isinstance(ws, Outcome):
                return ws
            outcome = await self._exchange(ws)
            if self.twins.holding:
                if outcome.kind == "finished":
                    self._apply(self.twins.release())
                elif self.twins.forget():
                    # Its twin died with the session. Its audio is still uncovered, so the next
                    # session re-sends and re-commits it (with word times): emitting it now instead
                    # would have to guess where it ends.
                    self._count("held_commit_resent")
            return outcome
        finally:
            self._ledger.end_session()
            if isinstance(ws, ClientConnection):
                close_in_background(ws)

    async def _exchange(self, ws: ClientConnection) -> Outcome:
        recv = asyncio.ensure_future(self._receiver(ws))
        send = asyncio.ensure_future(self._sender(ws))
        try:
            done, _ = await asyncio.wait({recv, send}, return_when=asyncio.FIRST_COMPLETED)
            first = recv if recv in done else send
            outcome = first.result()
            if outcome is None:  # the sender lost the socket: let the receiver say why
                outcome = await asyncio.wait_for(recv, 2.0)
        except (ConnectionClosed, TimeoutError, OSError) as exc:
            outcome = Outcome("retry", f"connection lost ({type(exc).__name__})")
        finally:
            for t in (recv, send):
                t.cancel()
            await asyncio.gather(recv, send, return_exceptions=True)
        return outcome

    # ---------------------------------------------------------------- sending
    async def _sender(self, ws: ClientConnection) -> Outcome | None:
        o, clock = self._o, self._clock
        try:
            await self.started.wait()
            # Nothing was sent while connecting, so the cap could trim: start from what is kept.
            self.origin = self._ledger.begin_sending()
            self.commits = ManualCommits(self.origin, self._slack)
            self.last_send = clock.monotonic()
            while True:
                self._wake.clear()
                now = clock.monotonic()
                plan = self._ledger.plan_send(now, self.commits.open_from)
                if plan is None:
                    return Outcome("ended", "closed")
                if plan.pcm is not None:
                    await ws.send(m.audio_message(plan.pcm))
                    self._ledger.sent(plan.pos + len(plan.pcm))
                    self.last_send = now
                    if plan.speech and self.unanswered_since is None:
                        self.unanswered_since = now
                    self._count("chunks_sent")
                    await asyncio.sleep(0)  # a long backlog must not starve other streams on the loop
                    continue
                if plan.commit_due:  # the open utterance reached max_utterance_s: cut it here
                    if await self._commit(ws, plan, now):
                        self._count("utterance_cuts")
                    continue
                if plan.end_requested:
                    if self.commit_sent_at is None:
                        if plan.uncommitted_speech:  # (else no commit: the server would ignore it)
                            # too little for a commit: silence after the last sample makes it enough
                            pad = max(0, self._min_commit - plan.open_audio)
                            if not await self._commit(ws, plan, now, pad):
                                continue
                            self.end_commits += 1
                        self.commit_sent_at = now
                        finished = self._end_reached()  # nothing uncommitted: no answer needed
                        if finished is not None:
                            return finished
                        continue
                elif plan.since_push >= o.idle_commit_s and plan.uncommitted_speech and not self.idle_commit:
                    # The track went quiet mid-utterance (muted): VAD needs audio to commit, so ask,
                    # unless the server would ignore it (the utterance then waits for more audio).
                    if plan.open_audio >= self._min_commit and not await self._commit(ws, plan, now):
                        continue
                    self.idle_commit = True
                    self._count("idle_commits" if plan.open_audio >= self._min_commit else "idle_too_short")
                    continue
                elif plan.idle and not self.twins.holding:
                    return Outcome("ended", "idle")
                if plan.since_push < o.idle_commit_s:
                    self.idle_commit = False
                if self.unanswered_since is not None and now >= self.unanswered_since + o.stall_timeout_s:
                    self._count("stalls")
                    return Outcome("retry", f"server silent for {o.stall_timeout_s:g} s")
                if now - self.last_send >= o.keepalive_s:
                    # no audio for a while: the server closes silent sockets after ~10 s
                    await ws.send(m.keepalive_message())
                    self.last_send = now
                    self._count("keepalives")
                await self._nap(plan, now)
        except ConnectionClosed:
            return None

    async def _commit(self, ws: ClientConnection, plan: SendPlan, now: float, padding: int = 0) -> bool:
        """A manual commit of everything sent (``plan.pos`` samples; ``padding`` samples of silence
        after them); its answer is taken like a VAD commit's. Never two within ``min_commit_gap_s``
        ("several times in a short sequence" [API]): until then, a nap and False."""
        due = self.last_commit + self._o.min_commit_gap_s
        if now < due:
            await self._nap(plan, now, until=due)
            return False
        for message in m.commit_messages(padding, self._o.chunk_samples):
            await ws.send(message)
        self.commits.sent(plan.pos)
        self.last_send = now
        # the gap runs from when the commit actually left: ``now`` may be stale by the sends' awaits
        self.last_commit = max(now, self._clock.monotonic())
        if padding:
            self._count("commit_padding_samples", padding)
        return True

    async def _nap(self, plan: SendPlan, now: float, until: float = math.inf) -> None:
        """Until something is pushed or the next of the sender's timers (or ``until``) is due."""
        o = self._o
        timeout = min(o.keepalive_s - (now - self.last_send), until - now)
        limits = [o.partial_chunk_after_s] if plan.avail > 0 else []
        if not plan.end_requested:
            limits += [o.idle_commit_s, o.idle_close_s]
        for limit in limits:
            if plan.since_push < limit:
                timeout = min(timeout, limit - plan.since_push)
        if self.unanswered_since is not None:
            timeout = min(timeout, self.unanswered_since + o.stall_timeout_s - now)
        with contextlib.suppress(TimeoutError):
            await self._clock.wait_for(self._wake.wait(), max(timeout, 0.01))

    def _end_reached(self) -> Outcome | None:
        """After end_input's commit: done once every sample is sent and no speech is uncommitted.

        The answer to our commit cannot be told from a VAD commit racing it, so the test is on what
        the commits covered; an empty commit after ours says the server had nothing left at all.
        """
        if self.commit_sent_at is None or self.twins.holding:
            return None
        all_sent, committed = self._ledger.all_sent_and_committed()
        if all_sent and (committed or self.end_empty_answer):
            return Outcome("finished", "input ended")
        return None

    # ---------------------------------------------------------------- receiving
    async def _receiver(self, ws: ClientConnection) -> Outcome:
        o, clock = self._o, self._clock
        while True:
            now = clock.monotonic()
            deadlines = [now + 1.0]  # re-check now and then: the sender changes what we wait for
            if not self.started.is_set():
                deadlines.append(self.opened + o.connect_timeout_s)
            if self.twins.deadline is not None:
                deadlines.append(self.twins.deadline)
            if self.unanswered_since is not None:
                deadlines.append(self.unanswered_since + o.stall_timeout_s)
            if self.commit_sent_at is not None:
                deadlines.append(max(self.commit_sent_at, self.last_msg) + o.flush_timeout_s)
            try:
                raw = await clock.wait_for(ws.recv(), max(min(deadlines) - now, 0.0))
            except TimeoutError:
                outcome = self._on_deadline()
                if outcome is not None:
                    return outcome
                continue
            except ConnectionClosed as exc:
                return self._on_close(exc)
            self.unanswered_since = None
            self.last_msg = clock.monotonic()
            outcome = self._on_message(raw) or self._end_reached()
            if outcome is not None:
                return outcome

    def _on_deadline(self) -> Outcome | None:
        o = self._o
        now = self._clock.monotonic()
        if not self.started.is_set():
            if now >= self.opened + o.connect_timeout_s:
                return Outcome("retry", "no session_started")
            return None
        self._apply(self.twins.expire(now))
        if self.unanswered_since is not None and now >= self.unanswered_since + o.stall_timeout_s:
            self._count("stalls")
            return Outcome("retry", f"server silent for {o.stall_timeout_s:g} s")
        if self.commit_sent_at is not None:
            if now >= max(self.commit_sent_at, self.last_msg) + o.flush_timeout_s:
                return Outcome("retry", "final commit not answered")
            return self._end_reached()
        return None

    def _on_close(self, exc: ConnectionClosed) -> Outcome:
        code = exc.rcvd.code if exc.rcvd is not None else None
        if code == 1000 and (self.progressed or self._clock.monotonic() - self.opened >= 5.0):
            return Outcome("ended", "server closed the session")  # e.g. its idle timeout
        return Outcome("retry", f"connection closed (code {code})")

    def _on_message(self, raw: str | bytes) -> Outcome | None:
        try:
            return self._take(raw)
        except Exception:  # whatever a message holds, the stream goes on: counted and logged
            self._count("bad_messages")
            log.exception("elevenlabs %s: message could not be taken; ignored", self._link.key)
            return None

    def _take(self, raw: str | bytes) -> Outcome | None:
        key, secret = self._link.key, self._link.secret
        try:
            msg = m.parse(raw)
        except m.MalformedMessage as exc:
            self._count("invalid_messages" if exc.reason == "invalid" else "malformed")
            if exc.not_json:
                log.warning("elevenlabs %s: malformed message ignored: %.80r", key, scrub(str(raw), secret))
            else:
                log.warning("elevenlabs %s: message ignored (%s)", key, scrub(str(exc), secret))
            if exc.message_type == m.SESSION_STARTED and not self.started.is_set():
                self.started.set()  # the session did start: what its config said is not needed
            return None
        mt = msg.type
        if mt == m.SESSION_STARTED:
            self._on_started(msg)
        elif mt in m.PARTIAL_TYPES:
            self._on_partial(msg.text)
        elif mt == m.COMMITTED:
            # send_pos is only written on this (the loop) thread
            self._apply(self.twins.plain(msg.text, self._ledger.send_pos, self._clock.monotonic()))
        elif mt == m.COMMITTED_TIMED:
            if msg.bad_words:
                self._count("invalid_words", msg.bad_words)
                log.warning("elevenlabs %s: %d word items ignored (not the schema)", key, msg.bad_words)
            self._apply(self.twins.timed(msg.text, msg.words, self._ledger.send_pos, msg.language_code))
        elif mt in m.ERROR_TYPES:
            if msg.problem is not None:
                self._count("invalid_messages")
                log.warning("elevenlabs %s: %s not of the schema (%s)", key, mt, msg.problem)
            return self._on_error(mt, msg.error)
        elif mt == "warning":  # [OBS]: e.g. a zero-retention request not honoured
            detail = next(
                (v for v in map(msg.raw.get, ("warning", "message", "error")) if isinstance(v, str)), ""
            )
            log.warning("elevenlabs %s: server warning %.200r", key, scrub(detail, secret))
        elif mt in m.IGNORED_TYPES:
            log.debug("elevenlabs %s: %s ignored", key, mt)
        else:
            self._count("unknown_messages")
            log.warning("elevenlabs %s: unknown message type %.40r ignored", key, mt)
        return None

    def _on_started(self, msg: m.ServerMessage) -> None:
        key, config = self._link.key, msg.config
        if self.started.is_set():
            self._count("repeated_session_started")
            log.warning("elevenlabs %s: a second session_started ignored", key)
            return
        self.started.set()
        log.debug("elevenlabs %s: session %s started", key, str(msg.session_id)[:64])
        if config is None:
            return
        self.language = m.language(config.language_code)
        if config.include_timestamps is not None:
            self.twins.expect_twins = config.include_timestamps
        if (config.sample_rate or SR) != SR or (config.audio_format or "pcm_16000") != "pcm_16000":
            log.warning("elevenlabs %s: session audio is not pcm_16000 (%s)", key, config.audio_format)

    def _on_error(self, kind: str, detail: str | None) -> Outcome | None:
        self._count(f"error_{kind}")
        why = kind if detail is None else f"{kind}: {scrub(detail, self._link.secret)[:200]}"
        if kind in m.FATAL_ERRORS:
            return Outcome("fatal", why)
        if kind in m.SESSION_END_ERRORS:
            if kind == "insufficient_audio_activity" and not self.progressed:
                self._ledger.heard_nothing()
            return Outcome("ended", why)
        if kind in m.NOTICE_ERRORS:  # commit_throttled: that commit was ignored, the session goes on
            log.warning("elevenlabs %s: %s", self._link.key, why)
            self.commits.ignored()
            if self.commit_sent_at is not None and not self.commits.pending:
                if self.end_commits < 3:  # the end commit was ignored: the sender tries once more
                    self.commit_sent_at = None
                    self._wake.set()
                else:
                    self.end_empty_answer = True  # nothing the server would commit is left
            return None
        return Outcome("retry", why)

    def _on_partial(self, text: str) -> None:
        text = text.strip()
        if not text or text == self.last_partial:
            return
        self.last_partial = text
        self._ledger.partial(text, self.commits.open_from)

    def _apply(self, commits: list[Commit]) -> None:
        for c in commits:
            self.progressed = True
            self.last_partial = None
            text = c.text.strip()
            if self.commit_sent_at is not None and not text:
                self.end_empty_answer = True
            span = m.word_span(c.words, self.origin)
            if span is not None and span[1] > c.sent_at + SR // 2:  # words in audio never sent
                self._count("implausible_word_times")
                log.warning("elevenlabs %s: word times past the audio sent; ignored", self._link.key)
                span = None
            floor = self._ledger.commit(
                text,
                span,
                self.commits.bound(span, c.sent_at),
                language=m.language(c.language) or self.language,
                confidence=m.word_confidence(c.words) if span is not None else None,
            )
            self.commits.answered(floor)
            self._count("finals" if text else "empty_commits")
