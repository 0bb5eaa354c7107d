"""Live captions: every participant's transcripts as LiveKit transcription text streams.

What LiveKit's ``useTranscriptions()`` hook shows: text streams on topic ``lk.transcription``, sent with
``sender_identity`` = the transcribed participant, attributes ``lk.segment_id`` (stable for one
utterance: our ``utterance_id``), ``lk.transcribed_track_id`` (the audio track's sid) and
``lk.transcription_final``. Each interim resends the utterance's whole text so far and the final closes
the segment, as LiveKit Agents do for user transcripts.

``CaptionPublisher`` decides what to send (at most ``MAX_INTERIMS_PER_S`` interims per participant, by
media time so that a replay gives the same captions as the room would have had; a final always goes)
and hands each message to a transport: ``RoomTextStreams`` (the live room's local participant, on the
SDK's loop, never waited for; a room this process has not joined goes through a publish-only connection
of its own, ``connectors.livekit.caption_rooms``) or ``JsonlCaptions`` (``captions.jsonl`` for ``replay
--captions``). A transport failure is logged and counted and never stops the flow.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

TOPIC = "lk.transcription"
ATTR_SEGMENT_ID = "lk.segment_id"
ATTR_TRACK_ID = "lk.transcribed_track_id"
ATTR_FINAL = "lk.transcription_final"
MAX_INTERIMS_PER_S = 4.0
CLOSED_KEPT = 10_000  # finals remembered, so that a late interim cannot reopen their segment


@dataclass(frozen=True, slots=True)
class Caption:
    topic: str
    sender_identity: str
    attributes: dict[str, str]
    text: str
    media_s: float

    def to_record(self) -> dict[str, Any]:
        return {**asdict(self), "media_s": round(self.media_s, 3)}


class CaptionTransport(Protocol):
    def send(self, room: str, session_id: str, caption: Caption) -> None:
        """Hand the caption over without blocking; raise nothing the flow must handle."""


class CaptionPublisher:
    """Turns transcripts (partial and final) into caption messages for one transport."""

    def __init__(self, transport: CaptionTransport, max_interims_per_s: float = MAX_INTERIMS_PER_S) -> None:
        self.transport = transport
        self.min_gap_s = 1.0 / max_interims_per_s if max_interims_per_s > 0 else float("inf")
        self._last_interim: dict[tuple[str, str, str], float] = {}  # (room, session, identity) -> media s
        self._closed: OrderedDict[str, None] = OrderedDict()  # utterance ids whose final went out (recent)
        self.sent = 0
        self.skipped = 0
        self.failed = 0

    def publish(self, transcript: Any, track_sid: str = "") -> Caption | None:
        """Send the caption for ``transcript`` (a ``Transcript``) if the rate allows; returns it."""
        who = (transcript.room, transcript.session_id, transcript.participant)
        if transcript.utterance_id in self._closed:
            return None  # an interim after its final (reordered) must not reopen the segment
        if not transcript.is_final:
            last = self._last_interim.get(who)
            if not transcript.text or (last is not None and transcript.end - last < self.min_gap_s):
                self.skipped += 1
                return None
            self._last_interim[who] = transcript.end
        else:
            self._closed[transcript.utterance_id] = None
            while len(self._closed) > CLOSED_KEPT:  # a long live flow: keep only the recent ones
                self._closed.popitem(last=False)
            self._last_interim.pop(who, None)
        caption = Caption(
            topic=TOPIC,
            sender_identity=transcript.participant,
            attributes={
                ATTR_SEGMENT_ID: transcript.utterance_id,
                ATTR_TRACK_ID: track_sid,
                ATTR_FINAL: "true" if transcript.is_final else "false",
            },
            text=transcript.text,
            media_s=transcript.end,
        )
        try:
            self.transport.send(transcript.room, transcript.session_id, caption)
            self.sent += 1
        except Exception as exc:  # a caption is never worth a dead flow
            self.failed += 1
            log.warning("caption for %s not sent (%d failed so far): %s", who, self.failed, exc)
        return caption


class JsonlCaptions:
    """``captions.jsonl`` per session: one message per line, exactly what the room would have been sent."""

    def __init__(self, path_for: Callable[[str, str], Path]) -> None:
        self._path_for = path_for
        self._files: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def send(self, room: str, session_id: str, caption: Caption) -> None:
        with self._lock:
            f = self._files.get((room, session_id))
            if f is None:
                path = self._path_for(room, session_id)
                path.parent.mkdir(parents=True, exist_ok=True)
                f = self._files[(room, session_id)] = path.open("a", encoding="utf-8")
            f.write(json.dumps(caption.to_record(), ensure_ascii=False, separators=(",", ":")) + "\n")
            f.flush()

    def close(self) -> None:
        with self._lock:
            for f in self._files.values():
                f.close()
            self._files.clear()


async def stream_caption(room: Any, caption: Caption) -> None:
    """One caption as one finished text stream from ``room``'s local participant (raises on failure)."""
    writer = await room.local_participant.stream_text(
        topic=caption.topic, attributes=caption.attributes, sender_identity=caption.sender_identity
    )
    await writer.write(caption.text)
    await writer.aclose()


class RemoteCaptions(Protocol):
    """Rooms this process has not joined (``CaptionRooms``): shared by the transports of a process."""

    def send(self, room: str, session_id: str, caption: Caption) -> None: ...
    def acquire(self) -> None: ...
    def release(self) -> None: ...


class RoomTextStreams:
    """Sends captions into live rooms as text streams, each on its room's own asyncio loop.

    ``find(name)`` gives the joined room as ``(rtc.Room, loop)``, or None when this process is not in
    it; such a caption goes to ``remote`` (when given), else it fails. Sending is scheduled and never
    waited for; failures are counted and logged where they happen.
    """

    def __init__(
        self,
        find: Callable[[str], tuple[Any, asyncio.AbstractEventLoop] | None],
        remote: RemoteCaptions | None = None,
    ) -> None:
        self._find = find
        self._remote = remote
        if remote is not None:
            remote.acquire()  # the shared connections close when the last transport does
        self.failed = 0
        self.sent = 0

    def send(self, room: str, session_id: str, caption: Caption) -> None:
        found = self._find(room)
        if found is not None:
            target, loop = found
            asyncio.run_coroutine_threadsafe(self._send(target, caption), loop)
        elif self._remote is not None:
            self._remote.send(room, session_id, caption)
        else:
            raise LookupError(f"not in room {room!r}")

    def close(self) -> None:
        remote, self._remote = self._remote, None
        if remote is not None:
            remote.release()

    async def _send(self, room: Any, caption: Caption) -> None:
        try:
            await stream_caption(room, caption)
            self.sent += 1
        except Exception as exc:
            self.failed += 1
            who = caption.sender_identity
            log.warning("caption stream for %s failed (%d so far): %s", who, self.failed, exc)
