"""The edge's figures: half-sent requests held, streams per worker, REST latency with streams at the cap.

Real nginx (deploy/nginx/quantcoach.conf.template, rendered by envsubst) in front of real gunicorn
(`quantcoach web`, 1 worker, WEB_THREADS threads, SSE_MAX_STREAMS default = threads - 4), SQLite store.

    python bench/bench_edge.py [--half-open 500] [--threads 16] [--requests 400]

Prints: how many half-sent requests the edge held open while /health stayed fast (and how long a
/health call took meanwhile), the stream cap that the worker enforced (streams accepted before the
first 503), and REST /health p50/p99 through the edge with every stream slot taken.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from connectors.store import Store
from harness.edge import API_KEY, gunicorn_api, nginx_edge
from quantcoach.records import Participant, SessionEvent, Transcript

ROOM, SESSION = "bench-room", "bench-session"


def seed(url: str) -> None:
    """One session with one transcript, so that the room's event stream exists."""
    who = Participant(ROOM, "iv-1", "Morgan", "interviewer", session_id=SESSION)
    t = Transcript(ROOM, "iv-1", "interviewer", "Morgan", f"{SESSION}:iv-1:0", "Hello.", True, 0.0, 1.0,
                   "whisper", session_id=SESSION)  # fmt: skip
    store = Store(url)
    store.upsert([SessionEvent(ROOM, SESSION, "started", (who,), None).to_record(), t.to_record()])
    store.close()


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--half-open", type=int, default=500)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--requests", type=int, default=400)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "api").mkdir()
        seed(f"sqlite:///{work / 'api' / 'store.db'}")
        with (
            gunicorn_api(work / "api", threads=args.threads) as api,
            nginx_edge(api.upstream, work / "edge") as edge,
        ):
            health = f"{edge.base}/health"
            held = []
            for _ in range(args.half_open):
                s = socket.create_connection(("127.0.0.1", edge.port), timeout=5)
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
                held.append(s)
            times = []
            for _ in range(50):
                began = time.perf_counter()
                requests.get(health, timeout=10).raise_for_status()
                times.append(time.perf_counter() - began)
            mid, top = statistics.median(times) * 1000, max(times) * 1000
            print(f"edge: {len(held)} half-sent requests held; /health p50 {mid:.1f} ms, max {top:.1f} ms")
            for s in held:
                s.close()

            auth = {"Authorization": f"Bearer {API_KEY}"}

            def open_streams(base: str) -> tuple[list[requests.Response], int | None]:
                opened: list[requests.Response] = []
                for _ in range(args.threads + 2):
                    r = requests.get(f"{base}/rooms/{ROOM}/events", headers=auth, stream=True, timeout=10)
                    if r.status_code != 200:
                        return opened, r.status_code
                    opened.append(r)
                return opened, None

            via_edge, edge_code = open_streams(edge.base)
            print(f"streams per client address through the edge: {len(via_edge)}, then {edge_code}")
            for r in via_edge:
                r.close()
            time.sleep(0.5)
            streams, code = open_streams(api.base)  # straight at the worker: its own cap
            print(f"streams per worker ({args.threads} threads): {len(streams)} accepted, then {code}")
            times = []
            for _ in range(args.requests):
                began = time.perf_counter()
                requests.get(health, timeout=10).raise_for_status()
                times.append(time.perf_counter() - began)
            p50, p99 = p(times, 0.5) * 1000, p(times, 0.99) * 1000
            print(
                f"REST /health via the edge, {len(streams)} streams open: p50 {p50:.1f} ms, p99 {p99:.1f} ms"
            )
            for r in streams:
                r.close()


if __name__ == "__main__":
    main()
