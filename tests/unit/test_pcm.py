"""stt.pcm: the sample buffer by stream position and the int16 <-> float conversion."""

from __future__ import annotations

import numpy as np

from stt.pcm import SampleBuffer, as_int16, to_float32, to_int16


def buffer_of(*lengths: int, start: int = 0) -> SampleBuffer:
    buf = SampleBuffer(np.int16, start)
    pos = start
    for n in lengths:
        buf.append(np.arange(pos, pos + n, dtype=np.int16))
        pos += n
    return buf


def test_read_spans_pieces_and_clips_to_what_is_kept() -> None:
    buf = buffer_of(3, 4, 5, start=10)
    assert (buf.start, buf.end, len(buf)) == (10, 22, 12)
    np.testing.assert_array_equal(buf.read(12, 18), np.arange(12, 18))
    np.testing.assert_array_equal(buf.read(0, 100), np.arange(10, 22))
    np.testing.assert_array_equal(buf.read_all(), np.arange(10, 22))
    assert buf.read(30, 40).dtype == np.int16 and len(buf.read(30, 40)) == 0


def test_trim_is_exact_and_drop_pieces_keeps_piece_starts() -> None:
    buf = buffer_of(3, 4, 5)
    buf.trim(5)
    assert buf.start == 5
    np.testing.assert_array_equal(buf.read_all(), np.arange(5, 12))
    buf = buffer_of(3, 4, 5)
    buf.drop_pieces_before(6)  # the piece [3, 7) ends after 6: kept whole
    assert buf.start == 3
    buf.drop_pieces_before(float("inf"))
    assert buf.start == buf.end == 12 and len(buf.read_all()) == 0
    buf.trim(100)
    assert buf.start == buf.end == 12


def test_empty_reads_keep_the_channel_shape() -> None:
    buf = SampleBuffer(np.int16)
    buf.append(np.zeros((4, 2), np.int16))
    buf.trim(4)
    assert buf.read_all().shape == (0, 2)


def test_int16_float_round_trip_and_clipping() -> None:
    pcm = np.array([-32768, -1, 0, 1, 32767], np.int16)
    x = to_float32(pcm)
    assert x.dtype == np.float32 and x[0] == -1.0 and x[-1] < 1.0
    np.testing.assert_array_equal(to_int16(x), pcm)
    np.testing.assert_array_equal(to_int16(np.array([-2.0, 2.0, np.nan])), [-32768, 32767, 0])
    np.testing.assert_array_equal(as_int16(np.array([[70000], [-70000]])), [32767, -32768])
    src = np.array([1, 2], np.int16)
    out = as_int16(src)
    assert out is not src and out.dtype == np.int16
