"""Real-time factor and word error rate of the local Whisper engine on the sample interview.

RTF = processing wall time / audio duration (lower is better; < 1 keeps up with a live room).
Usage: python bench/bench_whisper.py [SESSION_DIR]  (default samples/interview, which has script.json)
"""

from __future__ import annotations

import json
import re
import resource
import sys
import time
from pathlib import Path

import jiwer
import soxr

from connectors.recording import TrackReader, load_session
from quantcoach.settings import Settings
from stt.engines import engine_for
from stt.pcm import STT_SAMPLE_RATE, to_float32, to_int16


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^a-z0-9' ]", " ", text.lower().replace("-", " "))).strip()


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> int:
    session_dir = (
        Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent.parent / "samples" / "interview"
    )
    settings = Settings.from_env()
    session = load_session(session_dir)
    t0 = time.perf_counter()
    engine = engine_for(settings, "whisper")
    load_s = time.perf_counter() - t0
    print(
        f"# whisper benchmark: {session_dir} ({session.audio_seconds:.1f} audio s), "
        f"model load {load_s:.2f} s, "
        f"threads {settings.whisper_threads}"
    )
    heard: dict[str, list[str]] = {}
    total_audio = total_wall = total_cpu = 0.0
    for track in session.tracks:
        reader = TrackReader(track)
        x = to_float32(reader.read(track.frames)).mean(axis=1)
        pcm = to_int16(soxr.resample(x, track.sample_rate, STT_SAMPLE_RATE))
        w0, c0 = time.perf_counter(), cpu()
        stream = engine.stream(track.participant.key)
        step = STT_SAMPLE_RATE // 5  # 200 ms, as the flow pushes
        for i in range(0, len(pcm), step):
            stream.push_audio(pcm[i : i + step])
        stream.end_input()
        texts = []
        while not stream.done:
            texts.extend(e.text for e in stream.poll())
            time.sleep(0.002)
        texts.extend(e.text for e in stream.poll())
        wall, cpu_s = time.perf_counter() - w0, cpu() - c0
        audio_s = len(pcm) / STT_SAMPLE_RATE
        total_audio, total_wall, total_cpu = total_audio + audio_s, total_wall + wall, total_cpu + cpu_s
        heard.setdefault(track.participant.role, []).extend(texts)
        print(
            f"{track.participant.role:12} audio {audio_s:6.1f} s  wall {wall:5.2f} s  "
            f"RTF {wall / audio_s:.3f}  "
            f"(cpu {cpu_s / audio_s:.3f} cpu-s per audio-s)"
        )
    print(
        f"{'all':12} audio {total_audio:6.1f} s  wall {total_wall:5.2f} s  RTF {total_wall / total_audio:.3f}"
    )
    script_file = session_dir / "script.json"
    if script_file.exists():
        script = json.loads(script_file.read_text())
        for role, texts in heard.items():
            said = " ".join(normalise(t["text"]) for t in script if t["role"] == role)
            print(f"WER {role}: {jiwer.wer(said, normalise(' '.join(texts))):.3f}")
    engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
