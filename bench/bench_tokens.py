"""Throughput and latency of ``POST /tokens/generate`` under gunicorn (run by hand or ``make bench``).

Starts ``web.serve.run_gunicorn`` in its own process on 127.0.0.1 (LiveKit credentials set, server not
contacted: minting is local), then drives it from a second process: ``wrk`` when installed (Debian's
``wrk`` package), else a Python load generator (processes x threads, keep-alive connections). Prints
tokens/s and p50/p99 latency.

    .venv/bin/python bench/bench_tokens.py --workers 2 --duration 10 --connections 32
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "bench-api-key"
BODY = json.dumps(
    {
        "room_name": "bench-room",
        "participant_identity": "cand-1",
        "participant_name": "Riley",
        "role": "candidate",
    }
)
PATH = "/tokens/generate"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, workers: int, threads: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "LIVEKIT_URL": f"ws://127.0.0.1:{free_port()}",  # never called: minting is local
        "LIVEKIT_API_KEY": "APIbench",
        "LIVEKIT_API_SECRET": "bench-secret-bench-secret-bench-secret-0123",
        "QUANTCOACH_API_KEYS": API_KEY,
        "WEB_THREADS": str(threads),
    }
    code = (
        "import sys; from quantcoach.settings import Settings; from web.serve import run_gunicorn; "
        f"sys.exit(run_gunicorn(Settings.from_env(), '127.0.0.1:{port}', {workers}))"
    )
    out = log.open("wb")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=out, stderr=out)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1):
                return proc
        except (urllib.error.URLError, OSError):
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    proc.kill()
    sys.exit(f"gunicorn did not start; see {log}")


# --- wrk ------------------------------------------------------------------------------------------
_LUA = """wrk.method = "POST"
wrk.body = [[{body}]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
"""


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def _find(pattern: str, text: str) -> str:
    m = re.search(pattern, text)
    if m is None:
        sys.exit(f"unexpected wrk output:\n{text}")
    return m.group(1)


def run_wrk(url: str, duration: int, connections: int, threads: int) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(_LUA.format(body=BODY, key=API_KEY))
        script = f.name
    try:
        cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "-s", script, url]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(script)
    pct = {m[0]: _ms(m[1], m[2]) for m in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {
        "rps": float(_find(r"Requests/sec:\s+([\d.]+)", out)),
        "p50_ms": pct["50"],
        "p99_ms": pct["99"],
        "requests": float(_find(r"(\d+) requests in", out)),
        "non_2xx": float(non2xx.group(1)) if non2xx else 0.0,
        "socket_errors": errors.group(0) if errors else "none",
    }


# --- Python fallback: a load generator process per core, keep-alive connections on threads ------------
def _load_process(port: int, duration: float, connections: int) -> tuple[int, int, list[float]]:
    latencies: list[float] = []
    failures = 0
    lock = threading.Lock()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"}
    stop_at = time.perf_counter() + duration

    def worker() -> None:
        nonlocal failures
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        mine: list[float] = []
        bad = 0
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            try:
                conn.request("POST", PATH, body=BODY, headers=headers)
                resp = conn.getresponse()
                resp.read()
                ok = resp.status == 200
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                ok = False
            if ok:
                mine.append(time.perf_counter() - t0)
            else:
                bad += 1
        with lock:
            latencies.extend(mine)
            failures += bad

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(latencies), failures, latencies


def run_python(port: int, duration: int, connections: int, processes: int) -> dict[str, Any]:
    per = max(1, connections // processes)
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        t0 = time.perf_counter()
        results = pool.starmap(_load_process, [(port, duration, per)] * processes)
        elapsed = time.perf_counter() - t0
    lat = sorted(x for _, _, ls in results for x in ls)
    q = statistics.quantiles(lat, n=100) if len(lat) > 1 else [lat[0] if lat else 0.0] * 99
    return {
        "rps": len(lat) / elapsed,
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
        "requests": float(len(lat)),
        "non_2xx": float(sum(f for _, f, _ in results)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    ap.add_argument("--threads", type=int, default=16, help="gthread threads per worker")
    ap.add_argument("--duration", type=int, default=10, help="seconds of load")
    ap.add_argument("--connections", type=int, default=32, help="concurrent keep-alive connections")
    ap.add_argument("--load-threads", type=int, default=2, help="wrk threads / Python load processes")
    ap.add_argument("--python", action="store_true", help="use the Python load generator even if wrk exists")
    args = ap.parse_args()

    port = free_port()
    log = Path(tempfile.gettempdir()) / f"bench_tokens_gunicorn_{port}.log"
    server = start_server(port, args.workers, args.threads, log)
    url = f"http://127.0.0.1:{port}{PATH}"
    use_wrk = shutil.which("wrk") is not None and not args.python
    try:
        # Warm-up: imports, first JWT signing, keep-alive connections.
        if use_wrk:
            run_wrk(url, 2, args.connections, args.load_threads)
            res = run_wrk(url, args.duration, args.connections, args.load_threads)
        else:
            run_python(port, 2, args.connections, args.load_threads)
            res = run_python(port, args.duration, args.connections, args.load_threads)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)

    tool = "wrk" if use_wrk else "python load generator"
    print(
        f"POST {PATH} under gunicorn (gthread, {args.workers} workers x {args.threads} threads, "
        f"{os.cpu_count()} CPUs), {tool}: {args.connections} connections, {args.duration} s"
    )
    print(f"  tokens/s     {res['rps']:10.1f}")
    print(f"  p50 latency  {res['p50_ms']:10.2f} ms")
    print(f"  p99 latency  {res['p99_ms']:10.2f} ms")
    print(f"  requests     {int(res['requests']):10d}   non-2xx {int(res['non_2xx'])}")
    if res.get("socket_errors", "none") != "none":
        print(f"  {res['socket_errors']}")


if __name__ == "__main__":
    main()
