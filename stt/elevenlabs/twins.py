"""Each server commit comes twice: ``committed_transcript`` and its twin with word times. Pair them.

With ``include_timestamps`` the server sends both, in either order, and either may be missing. Exactly
one commit comes out of a pair: a plain commit waits ``twin_wait_s`` for its timed twin (whose word
times place the final); whichever twin comes first when the other is already accounted for is let
through and the other one, when it comes, dropped. After two twins in a row that never came, plain
commits no longer wait. One pairer per session: the server pairs within a session only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from stt.elevenlabs.messages import COMMITTED, COMMITTED_TIMED, Word


@dataclass(frozen=True, slots=True)
class Commit:
    text: str
    words: tuple[Word, ...] | None  # the server's timed words (validated), None without them
    sent_at: int  # stream samples sent when the (first twin of the) commit arrived
    language: str | None = None  # the timed twin's language_code, as the server sent it


@dataclass(slots=True)
class _Held:
    """A plain committed_transcript waiting for its timestamped twin."""

    text: str
    sent_at: int
    deadline: float


def _norm(text: str) -> str:
    return " ".join(text.casefold().split())


class TwinPairer:
    def __init__(self, *, expect_twins: bool, twin_wait_s: float, count: Callable[[str], None]) -> None:
        self.expect_twins = expect_twins  # session_started's config may say otherwise
        self._wait_s = twin_wait_s
        self._count = count
        self._held: _Held | None = None
        self._drop_once: tuple[str, str] | None = None  # (message_type, normalized text) to drop once
        self._misses = 0  # plain commits in a row whose twin never came

    @property
    def holding(self) -> bool:
        return self._held is not None

    @property
    def deadline(self) -> float | None:
        return self._held.deadline if self._held is not None else None

    def plain(self, text: str, sent: int, now: float) -> list[Commit]:
        if self._drop_once == (COMMITTED, _norm(text)):
            self._drop_once = None  # the plain twin of a timestamped commit that came first
            return []
        self._drop_once = None
        out: list[Commit] = []
        if self._held is not None:
            self._count("twin_missing")
            out += self.release()
        if self.expect_twins and self._misses < 2:
            self._held = _Held(text, sent, now + self._wait_s)
        else:  # no twins expected (any more): a late one is dropped once
            out.append(Commit(text, None, sent))
            self._drop_once = (COMMITTED_TIMED, _norm(text))
        return out

    def timed(
        self, text: str, words: tuple[Word, ...] | None, sent: int, language: str | None = None
    ) -> list[Commit]:
        if self._held is not None:
            held, self._held = self._held, None
            self._misses = 0
            return [Commit(text or held.text, words, held.sent_at, language)]
        if self._drop_once == (COMMITTED_TIMED, _norm(text)):
            self._drop_once = None  # late twin of a plain commit we already emitted
            return []
        self._drop_once = (COMMITTED, _norm(text))
        return [Commit(text, words, sent, language)]

    def expire(self, now: float) -> list[Commit]:
        """A held commit whose twin is overdue comes out without word times."""
        if self._held is None or now < self._held.deadline:
            return []
        self._count("twin_missing")
        self._misses += 1
        return self.release()

    def release(self) -> list[Commit]:
        """The held commit, now, without word times (its twin, if it still comes, is dropped)."""
        held, self._held = self._held, None
        if held is None:
            return []
        self._drop_once = (COMMITTED_TIMED, _norm(held.text))
        return [Commit(held.text, None, held.sent_at)]

    def forget(self) -> bool:
        """Drop a held commit (its session failed: the audio is re-sent and re-committed); True if one was."""
        held, self._held = self._held, None
        return held is not None
