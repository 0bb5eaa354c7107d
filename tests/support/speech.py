"""How the suite judges transcripts: word error rate against the script, never exact tiny-model words.

tiny.en's int8 kernels differ between CPUs (AVX2, AVX-512, AMD, Intel), so the same audio may give
other words at an utterance's edges. Tests bound the WER against what was said (the sample's
script.json), or compare with the same engine on the same samples on this machine.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import jiwer

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "interview"
#: Whisper tiny.en on the espeak-ng voices measured 0.19 (interviewer) and 0.28 (candidate) here;
#: 0.4 leaves room for int8 kernels that differ between CPUs.
WER_LIMIT = 0.4


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^a-z0-9' ]", " ", text.lower().replace("-", " "))).strip()


def wer(said: str, heard: str) -> float:
    return float(jiwer.wer(normalise(said), normalise(heard) or "<nothing>"))


@cache
def script() -> tuple[dict[str, Any], ...]:
    """The sample's turns: role, text, start, end (media seconds)."""
    return tuple(json.loads((SAMPLE / "script.json").read_text()))


def said_between(role: str, start: float, end: float) -> str:
    """What ``role`` said in turns that lie wholly inside [start, end] of the sample."""
    return " ".join(
        t["text"] for t in script() if t["role"] == role and t["start"] >= start and t["end"] <= end
    )
