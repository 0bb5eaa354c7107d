"""TrackResampler / ResampleLogic against known signals, with soxr's one-shot resample as the reference.

The stream must give the same samples as resampling the whole track at once (no clicks at chunk
boundaries), keep the tone's frequency, and carry contiguous media time that starts at the input's.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import soxr
from bytewax.operators import StatefulLogic

from operators.resample import MAX_FILLED_GAP_S, ResampleLogic, TrackResampler, to_mono_float
from quantcoach.records import AudioChunk, Participant, ParticipantAnnounce, TrackEnd
from stt.pcm import STT_SAMPLE_RATE

ROOM, WHO = "room-1", "cand-3"
INT16_LSB = 1.0 / 32768.0


def tone(rate: int, seconds: float, freq: float = 1000.0, channels: int = 1, amp: float = 0.5) -> np.ndarray:
    """An int16 (frames, channels) sine, the same on every channel."""
    t = np.arange(round(rate * seconds)) / rate
    x = amp * np.sin(2 * np.pi * freq * t)
    return np.repeat((x * 32767).round().astype(np.int16)[:, None], channels, axis=1)


def feed(
    r: TrackResampler, pcm: np.ndarray, rate: int, chunk_frames: int, start: float = 0.0
) -> list[AudioChunk]:
    out: list[AudioChunk] = []
    for i in range(0, len(pcm), chunk_frames):
        out.extend(r.push(AudioChunk(ROOM, WHO, pcm[i : i + chunk_frames], rate, start + i / rate)))
    return out


def joined(chunks: list[AudioChunk]) -> np.ndarray:
    """Concatenated output as float in [-1, 1]."""
    return np.concatenate([c.samples for c in chunks]).astype(np.float64) / 32768.0


def reference(pcm: np.ndarray, rate: int) -> np.ndarray:
    """One-shot soxr over the whole (down-mixed) signal, rounded to int16 as the stream's output is."""
    y = soxr.resample(to_mono_float(pcm), rate, STT_SAMPLE_RATE)
    return (np.clip(y, -1.0, 32767 / 32768) * 32768.0).round() / 32768.0


def peak_hz(y: np.ndarray, rate: int = STT_SAMPLE_RATE) -> float:
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return float(np.fft.rfftfreq(len(y), 1 / rate)[int(np.argmax(spectrum))])


def assert_contiguous(chunks: list[AudioChunk], start: float) -> None:
    assert chunks, "no output"
    assert chunks[0].start == pytest.approx(start, abs=1e-9)
    for a, b in itertools.pairwise(chunks):
        assert b.sample_rate == STT_SAMPLE_RATE
        assert abs(b.start - a.end) <= 1 / STT_SAMPLE_RATE, (a.start, a.end, b.start)


# --- accuracy --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rate", [48_000, 44_100, 8_000, 96_000, 22_050])
@pytest.mark.parametrize("channels", [1, 2, 6])
def test_stream_matches_whole_file_and_keeps_the_tone(rate: int, channels: int) -> None:
    seconds, start = 2.0, 3.25
    pcm = tone(rate, seconds, 1000.0, channels)
    r = TrackResampler(ROOM, WHO)
    chunks = feed(r, pcm, rate, rate // 5, start)  # ~200 ms chunks
    chunks += r.flush()

    assert all(c.room == ROOM and c.participant == WHO for c in chunks)
    assert all(c.sample_rate == STT_SAMPLE_RATE and c.samples.dtype == np.int16 for c in chunks)
    assert all(c.samples.ndim == 1 or c.samples.shape[1] == 1 for c in chunks), "output must be mono"
    y, ref = joined(chunks), reference(pcm, rate)
    assert abs(len(y) - seconds * STT_SAMPLE_RATE) <= 1
    assert len(y) == len(ref)
    # stream == whole file: at most one LSB of int16 rounding apart, so no click at any boundary
    assert np.max(np.abs(y - ref)) <= 1.5 * INT16_LSB
    assert peak_hz(y) == pytest.approx(1000.0, abs=1.0)
    # the amplitude survives (0.5 peak -> RMS 0.354), away from the filter's edges
    mid = y[len(y) // 4 : 3 * len(y) // 4]
    assert np.sqrt(np.mean(mid**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)
    assert_contiguous(chunks, start)
    assert chunks[-1].end == pytest.approx(start + seconds, abs=1 / STT_SAMPLE_RATE)


@pytest.mark.parametrize(
    ("rate", "chunk_frames"), [(48_000, 1), (48_000, 997), (44_100, 4_411), (8_000, 333)]
)
def test_odd_chunk_sizes_match_whole_file(rate: int, chunk_frames: int) -> None:
    seconds = 0.3 if chunk_frames == 1 else 1.5
    pcm = tone(rate, seconds, 440.0, 2)
    r = TrackResampler(ROOM, WHO)
    chunks = feed(r, pcm, rate, chunk_frames, 0.0) + r.flush()
    y, ref = joined(chunks), reference(pcm, rate)
    assert len(y) == len(ref)
    assert np.max(np.abs(y - ref)) <= 1.5 * INT16_LSB
    assert_contiguous(chunks, 0.0)


def test_channels_are_averaged() -> None:
    rate = 48_000
    left = tone(rate, 1.0, 1000.0, 1, amp=0.8)[:, 0]
    opposite = np.stack([left, -left], axis=1)  # cancels out in a mean down-mix
    r = TrackResampler(ROOM, WHO)
    silent = joined(feed(r, opposite, rate, 9600) + r.flush())
    assert np.max(np.abs(silent)) <= 2 * INT16_LSB

    one_side = np.stack([left, np.zeros_like(left)], axis=1)
    r = TrackResampler(ROOM, WHO)
    y = joined(feed(r, one_side, rate, 9600) + r.flush())
    mid = y[4000:12000]
    assert np.max(np.abs(mid)) == pytest.approx(0.4, abs=0.01)  # half of 0.8


def test_anti_aliasing_removes_tones_above_8khz() -> None:
    rate = 48_000
    r = TrackResampler(ROOM, WHO)
    y = joined(feed(r, tone(rate, 1.0, 11_000.0, 1, amp=0.8), rate, 9600) + r.flush())
    assert np.sqrt(np.mean(y**2)) < 0.01  # would alias to 5 kHz at full level without the filter
    r = TrackResampler(ROOM, WHO)
    y = joined(feed(r, tone(rate, 1.0, 6_000.0, 1, amp=0.8), rate, 9600) + r.flush())
    assert peak_hz(y) == pytest.approx(6_000.0, abs=2.0)


# --- media time, gaps, rate changes ----------------------------------------------------------------------
def test_small_jitter_is_not_a_gap() -> None:
    rate = 48_000
    pcm = tone(rate, 1.0)
    r = TrackResampler(ROOM, WHO)
    chunks = feed(r, pcm[:24_000], rate, 9600, 0.0)
    chunks += r.push(AudioChunk(ROOM, WHO, pcm[24_000:], rate, 0.5 + 0.005))  # 5 ms late: jitter
    chunks += r.flush()
    y = joined(chunks)
    assert len(y) == len(reference(pcm, rate))  # nothing inserted
    assert_contiguous(chunks, 0.0)


def test_gap_under_30s_is_filled_with_silence() -> None:
    rate, gap = 48_000, 5.0
    a, b = tone(rate, 1.0, 1000.0, 2), tone(rate, 1.0, 500.0, 2)
    r = TrackResampler(ROOM, WHO)
    chunks = feed(r, a, rate, 9600, 10.0)
    chunks += feed(r, b, rate, 9600, 11.0 + gap)
    chunks += r.flush()

    assert_contiguous(chunks, 10.0)
    assert chunks[-1].end == pytest.approx(12.0 + gap, abs=1 / STT_SAMPLE_RATE)
    whole = np.concatenate([a, np.zeros((round(gap * rate), 2), np.int16), b])
    y, ref = joined(chunks), reference(whole, rate)
    assert len(y) == len(ref)
    assert np.max(np.abs(y - ref)) <= 1.5 * INT16_LSB
    # the gap is silence and the second tone sits at its own media time
    assert np.max(np.abs(y[int(1.1 * STT_SAMPLE_RATE) : int((1 + gap - 0.1) * STT_SAMPLE_RATE)])) <= INT16_LSB
    assert peak_hz(y[int((1 + gap) * STT_SAMPLE_RATE) :]) == pytest.approx(500.0, abs=2.0)


def test_gap_over_30s_restarts_the_stream_at_the_new_time() -> None:
    rate = 44_100
    a, b = tone(rate, 1.0, 1000.0), tone(rate, 1.0, 300.0)
    later = 1.0 + MAX_FILLED_GAP_S + 12.0
    r = TrackResampler(ROOM, WHO)
    first = feed(r, a, rate, 8820, 0.0)
    second = feed(r, b, rate, 8820, later)
    second += r.flush()

    # the push that crosses the gap first flushes the old stream's tail, ending at the old track's end
    tail = [c for c in second if c.start < later]
    resumed = [c for c in second if c.start >= later]
    assert tail, "the old stream's tail must be flushed when the stream restarts"
    assert_contiguous(first + tail, 0.0)
    assert tail[-1].end == pytest.approx(1.0, abs=1 / STT_SAMPLE_RATE)
    np.testing.assert_allclose(joined(first + tail), reference(a, rate), atol=1.5 * INT16_LSB)
    # the new stream starts exactly at the new chunk's time: no 42 s of silence
    assert_contiguous(resumed, later)
    y = joined(resumed)
    np.testing.assert_allclose(y, reference(b, rate), atol=1.5 * INT16_LSB)
    assert peak_hz(y) == pytest.approx(300.0, abs=2.0)


def test_sample_rate_change_mid_track() -> None:
    a, b = tone(48_000, 1.0, 1000.0, 2), tone(8_000, 1.0, 700.0, 1)
    r = TrackResampler(ROOM, WHO)
    first = feed(r, a, 48_000, 9600, 0.0)
    second = feed(r, b, 8_000, 1600, 1.0)
    second += r.flush()

    out = first + second
    assert_contiguous(out, 0.0)  # the new rate starts where the old one ended
    assert out[-1].end == pytest.approx(2.0, abs=1 / STT_SAMPLE_RATE)
    y = joined(out)
    assert len(y) == 2 * STT_SAMPLE_RATE
    np.testing.assert_allclose(y[:STT_SAMPLE_RATE], reference(a, 48_000), atol=1.5 * INT16_LSB)
    np.testing.assert_allclose(y[STT_SAMPLE_RATE:], reference(b, 8_000), atol=1.5 * INT16_LSB)
    assert peak_hz(y[:STT_SAMPLE_RATE]) == pytest.approx(1000.0, abs=2.0)
    assert peak_hz(y[STT_SAMPLE_RATE:]) == pytest.approx(700.0, abs=2.0)


def test_flush_returns_the_tail_and_resets() -> None:
    rate = 48_000
    pcm = tone(rate, 1.0)
    r = TrackResampler(ROOM, WHO)
    pushed = feed(r, pcm, rate, 9600, 0.0)
    got = sum(c.frames for c in pushed)
    assert got < STT_SAMPLE_RATE, "soxr holds back a filter delay until the end"
    tail = r.flush()
    assert sum(c.frames for c in tail) == STT_SAMPLE_RATE - got
    assert_contiguous(pushed + tail, 0.0)
    assert r.flush() == []  # nothing left
    # a later push opens a fresh stream at its own time
    again = feed(r, pcm, rate, 9600, 100.0) + r.flush()
    assert_contiguous(again, 100.0)
    np.testing.assert_allclose(joined(again), reference(pcm, rate), atol=1.5 * INT16_LSB)


def test_flush_before_any_audio_is_empty() -> None:
    assert TrackResampler(ROOM, WHO).flush() == []


# --- levels ----------------------------------------------------------------------------------------------
def test_clipped_square_wave_does_not_wrap_around() -> None:
    rate = 48_000
    t = np.arange(rate) / rate
    square = np.where(np.sin(2 * np.pi * 250 * t) >= 0, 32767, -32768).astype(np.int16)[:, None]
    r = TrackResampler(ROOM, WHO)
    y = np.concatenate([c.samples for c in feed(r, square, rate, 9600) + r.flush()])
    assert y.dtype == np.int16
    ref = soxr.resample(to_mono_float(square), rate, STT_SAMPLE_RATE)
    assert ref.max() > 1.0, "the reference overshoots full scale (Gibbs), which the stream must clip"
    assert np.all(y[ref >= 1.0] == 32767)
    assert np.all(y[ref <= -1.0] == -32768)
    assert np.all(y[ref > 0.5] > 0) and np.all(y[ref < -0.5] < 0)  # no int16 wrap-around
    np.testing.assert_allclose(y / 32768.0, np.clip(ref, -1.0, 32767 / 32768), atol=1.5 * INT16_LSB)


def test_dc_offset_input_saturates_instead_of_overflowing() -> None:
    rate = 44_100
    t = np.arange(rate * 2) / rate
    x = np.clip(0.85 + 0.3 * np.sin(2 * np.pi * 200 * t), -1, 32767 / 32768)
    pcm = (x * 32768).round().astype(np.int16)[:, None]
    r = TrackResampler(ROOM, WHO)
    y = np.concatenate([c.samples for c in feed(r, pcm, rate, 8820) + r.flush()])
    assert y.dtype == np.int16
    steady = y[STT_SAMPLE_RATE // 10 : -STT_SAMPLE_RATE // 10]
    assert steady.min() > 16_000, "a DC-offset tone near full scale must not wrap to negative values"
    assert steady.max() == 32767
    np.testing.assert_allclose(y / 32768.0, reference(pcm, rate), atol=1.5 * INT16_LSB)


# --- the Bytewax logic around it -------------------------------------------------------------------------
def test_resample_logic_passes_events_and_flushes_at_track_end() -> None:
    rate = 22_050
    pcm = tone(rate, 1.0, 1000.0, 2)
    who = Participant(ROOM, WHO, "Riley", "candidate")
    logic = ResampleLogic()

    out, keep = logic.on_item(ParticipantAnnounce(who, (who,)))
    assert out == [ParticipantAnnounce(who, (who,))] and keep is StatefulLogic.RETAIN
    chunks: list[AudioChunk] = []
    for i in range(0, len(pcm), 4410):
        got, keep = logic.on_item(AudioChunk(ROOM, WHO, pcm[i : i + 4410], rate, 2.0 + i / rate))
        assert keep is StatefulLogic.RETAIN
        chunks.extend(got)
    end = TrackEnd(ROOM, WHO, 3.0)
    out, _ = logic.on_item(end)
    assert out[-1] == end, "TrackEnd comes after the flushed tail"
    chunks.extend(c for c in out[:-1])
    assert all(isinstance(c, AudioChunk) for c in chunks)
    assert_contiguous(chunks, 2.0)
    assert chunks[-1].end == pytest.approx(3.0, abs=1 / STT_SAMPLE_RATE)
    np.testing.assert_allclose(joined(chunks), reference(pcm, rate), atol=1.5 * INT16_LSB)

    assert logic.on_item("not a record") == ([], StatefulLogic.RETAIN)
    assert logic.on_eof() == ([], StatefulLogic.DISCARD)  # already flushed
