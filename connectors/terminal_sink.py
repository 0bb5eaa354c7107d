"""Readable terminal output of a running flow: transcripts, windows and a progress bar.

The flow sends this sink ``Transcript`` (partial and final), ``ProgressMark`` and window records.
All partitions in a process share one ``TerminalView``, which owns the console and the bar.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable
from typing import Any

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from connectors.recording import Session
from quantcoach.records import ProgressMark, Transcript, participant_key
from quantcoach.text import escape_control


class TerminalView:
    """Prints records above a progress bar of audio seconds processed out of the total."""

    def __init__(self, total_audio_s: float, ends: dict[str, float], console: Console | None = None) -> None:
        self.console = console or Console(stderr=False, highlight=False)
        self._ends = ends  # participant key -> media time its track ends
        self._done: dict[str, float] = {}
        self._offsets: dict[str, float] = {}
        self._lock = threading.Lock()
        self.progress = Progress(
            TextColumn("[bold]replay"),
            BarColumn(),
            TextColumn("{task.completed:.1f}/{task.total:.1f} audio s"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self._task = self.progress.add_task("replay", total=max(total_audio_s, 0.001))

    @classmethod
    def for_sessions(cls, sessions: Iterable[Session]) -> TerminalView:
        """A view whose bar runs over every track of ``sessions``."""
        tracks = [t for s in sessions for t in s.tracks]
        view = cls(sum(t.duration for t in tracks), {t.participant.key: t.end for t in tracks})
        view.set_offsets({t.participant.key: t.participant.offset_s for t in tracks})
        return view

    def __enter__(self) -> TerminalView:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def set_offsets(self, offsets: dict[str, float]) -> None:
        self._offsets = offsets

    def show(self, item: Any) -> None:
        with self._lock:
            if isinstance(item, ProgressMark):
                key = participant_key(item.room, item.participant, item.session_id)
                end = self._ends.get(key, 0.0)
                pos = end if math.isinf(item.position) else min(item.position, end)
                self._done[key] = max(self._done.get(key, 0.0), pos - self._offsets.get(key, 0.0))
                self.progress.update(self._task, completed=sum(self._done.values()))
            elif isinstance(item, Transcript):
                if item.is_final:
                    self.console.print(format_transcript(item))
            elif isinstance(item, dict) and "window_id" in item:
                self.console.print(format_window(item))


def format_transcript(t: Transcript) -> str:
    who = (
        f"{t.speaker.capitalize()} ({_escape(t.name)})"
        if t.name and t.name != t.participant
        else t.speaker.capitalize()
    )
    return f"[dim]{t.room} {t.start:7.2f}-{t.end:7.2f}[/dim]  [bold]{who}[/bold]: {_escape(t.text)}"


def format_window(w: dict[str, Any]) -> str:
    head = (
        f"[cyan]── window {w['window_id']}  {w['start']:.2f}-{w['end']:.2f} s  "
        f"({w['reason']}, {len(w['segments'])} segments) ──[/cyan]"
    )
    body = "\n".join(f"   {_escape(_line(s))}" for s in w["segments"])  # one line per segment, always
    return f"{head}\n{body}"


def _line(segment: dict[str, Any]) -> str:
    return f"{segment['speaker'].capitalize()}: {segment['text']}"


def _escape(text: str) -> str:
    # control characters (ANSI escapes in a display name or a transcript) shown, never obeyed; and no
    # rich markup from outside text
    return escape_control(text).replace("[", r"\[")


class TerminalSink(DynamicSink[Any]):
    def __init__(self, view: TerminalView) -> None:
        self.view = view

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _TerminalPartition:
        return _TerminalPartition(self.view)


class _TerminalPartition(StatelessSinkPartition[Any]):
    def __init__(self, view: TerminalView) -> None:
        self._view = view

    def write_batch(self, items: list[Any]) -> None:
        for item in items:
            self._view.show(item)
