"""Interview analytics cost: the metrics step per transcript, and report generation for a 60-minute session.

Prints: microseconds per final transcript added to SessionMetrics (and per record built), and the time
and size of report.html for a synthetic 60-minute two-speaker session (one utterance every ~5 s), plus,
where Chromium is installed, the time headless Chromium takes to load and draw it.

    python bench/bench_metrics.py
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from connectors.report import render_report
from operators.metrics import SessionMetrics

WORDS = [
    "the",
    "expected",
    "value",
    "of",
    "a",
    "fair",
    "die",
    "is",
    "three",
    "point",
    "five",
    "so",
    "um",
    "the",
    "answer",
    "is",
    "seven",
]


def session(minutes: int, rng: random.Random) -> tuple[list[dict], list[dict]]:
    transcripts, windows, t, n = [], [], 0.0, 0
    while t < minutes * 60:
        who = ("iv-1", "Morgan", "interviewer") if n % 3 == 0 else ("cand-1", "Riley", "candidate")
        length = rng.uniform(1.5, 6.0)
        text = " ".join(rng.choice(WORDS) for _ in range(int(length * 2.5)))
        transcripts.append({"participant": who[0], "name": who[1], "speaker": who[2], "text": text,
                            "start": round(t, 3), "end": round(t + length, 3), "is_final": True})  # fmt: skip
        if n % 4 == 3:
            windows.append({"seq": len(windows), "start": transcripts[-4]["start"], "end": t + length})
        t += length + rng.uniform(0.2, 2.0)
        n += 1
    return transcripts, windows


def main() -> None:
    rng = random.Random(7)
    transcripts, windows = session(60, rng)
    m = SessionMetrics()
    started = time.perf_counter()
    reps = 20
    for _ in range(reps):
        m = SessionMetrics()
        for t in transcripts:
            m.add(t["participant"], t["name"], t["speaker"], t["text"], t["start"], t["end"])
    per_add = (time.perf_counter() - started) / (reps * len(transcripts))
    started = time.perf_counter()
    for _ in range(200):
        record = m.record("mock-42", "S1", final=False, emitted_at="2026-12-01T00:00:00Z")
    per_record = (time.perf_counter() - started) / 200
    print(f"metrics: {per_add * 1e6:.1f} us per final transcript, {per_record * 1e6:.0f} us per record "
          f"({len(transcripts)} finals in 60 min)")  # fmt: skip

    people = [{"identity": "iv-1", "name": "Morgan", "role": "interviewer"},
              {"identity": "cand-1", "name": "Riley", "role": "candidate"}]  # fmt: skip
    started = time.perf_counter()
    html = render_report(room="mock-42", session_id="S1", participants=people, transcripts=transcripts,
                         windows=windows, metrics=record)  # fmt: skip
    render_s = time.perf_counter() - started
    print(f"report: 60-minute session rendered in {render_s * 1000:.1f} ms, {len(html) / 1024:.0f} KiB")
    chromium = shutil.which("chromium")
    if chromium:
        with tempfile.TemporaryDirectory() as tmp:
            page = Path(tmp) / "report.html"
            page.write_text(html)
            started = time.perf_counter()
            subprocess.run(
                [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", f"--user-data-dir={tmp}/p", "--dump-dom", page.as_uri()],
                capture_output=True, timeout=120, check=True,
            )  # fmt: skip
            print(f"report: headless Chromium loads and draws it in {time.perf_counter() - started:.2f} s")


if __name__ == "__main__":
    main()
