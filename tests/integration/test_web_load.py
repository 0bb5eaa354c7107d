"""The REST API under a load generator from a second process for 60 s, under real gunicorn: no errors.

Reuses bench/bench_tokens.py's server start and its Python load generator (so it needs no wrk);
the benchmark itself reports the rates, this test only asserts that nothing fails under load.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOAD_S = int(os.environ.get("QC_WEB_LOAD_S", "60"))


def _bench_tokens():
    # a plain import by name: the load generator's spawned processes import it again the same way
    if str(ROOT / "bench") not in sys.path:
        sys.path.insert(0, str(ROOT / "bench"))
    return importlib.import_module("bench_tokens")


@pytest.mark.slow
def test_tokens_endpoint_under_load_for_a_minute_without_errors(tmp_path: Path) -> None:
    bench = _bench_tokens()
    port = bench.free_port()
    server = bench.start_server(port, workers=2, threads=8, log=tmp_path / "gunicorn.log")
    try:
        result = bench.run_python(port, duration=LOAD_S, connections=8, processes=1)
        assert server.poll() is None, "gunicorn died under load"
    finally:
        server.terminate()
        server.wait(30)
    print(f"{result['requests']:.0f} requests, {result['rps']:.0f}/s, p99 {result['p99_ms']:.1f} ms")
    assert result["non_2xx"] == 0
    assert result["requests"] > LOAD_S * 50  # the load really ran: at least 50 tokens/s sustained
    log = (tmp_path / "gunicorn.log").read_text()
    assert "Traceback" not in log and "bench-secret" not in log
