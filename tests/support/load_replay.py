"""Helper for tests/flow/test_load.py: replay N sessions through ONE flow (no-op STT), report as JSON.

    python -m tests.support.load_replay --workers 2 SESSION_DIR [SESSION_DIR ...]

The replay runs in a child process of this one, and the peak RSS reported is that child's
``getrusage(RUSAGE_CHILDREN).ru_maxrss`` read here after it exits. Why the extra process: on Linux a
process's ``ru_maxrss`` keeps the high-water mark of whatever ran in it before ``exec`` (the forked
parent's memory), so a replay started straight from pytest would report pytest's own peak (146 MB
for both 10 and 50 sessions when measured that way). Started from this small launcher, the floor is
the launcher's ~10 MB. The child also reports its ``VmHWM`` (/proc) as a cross-check. The flow is the
product's ``build_flow`` over a ``ReplaySource`` at max speed; ``FlowSinks.events`` is a
``bytewax.testing.TestingSink`` whose list keeps, per participant stream, only the last progress
mark and whether marks ever went backwards (keyed ``room/session_id/identity``), so the collector itself
holds O(participants) memory and does not blur the measurement. Prints one JSON object on stdout:
``{"participants", "finished", "marks", "backwards", "transcripts", "wall_s", "vm_hwm_kb",
"peak_rss_kb"}``.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bytewax.testing import TestingSink, cluster_main, run_main

from connectors.recording import load_session
from connectors.replay_source import ReplaySource
from flows.interview import FlowSinks, build_flow
from quantcoach.records import ProgressMark, Transcript, participant_key
from quantcoach.settings import Settings
from stt.noop import NoopEngine


class MarkCollector(list):
    """The list a ``TestingSink`` appends to (``ls += items``), folding marks as they arrive."""

    def __init__(self) -> None:
        super().__init__()
        self.last: dict[str, float] = {}  # "room/session_id/identity" -> latest settled
        self.marks = 0
        self.backwards = 0
        self.transcripts = 0

    def __iadd__(self, items: Any) -> MarkCollector:
        for item in items:
            if isinstance(item, ProgressMark):
                key = participant_key(item.room, item.participant, item.session_id)
                prev = self.last.get(key, -math.inf)
                self.backwards += item.settled < prev
                self.last[key] = max(prev, item.settled)
                self.marks += 1
            elif isinstance(item, Transcript):
                self.transcripts += 1
        return self


def vm_hwm_kb() -> int | None:
    """Peak RSS of this process's own address space (Linux), unaffected by what ran before exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser()
    ap.add_argument("sessions", nargs="+")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--child", action="store_true", help="run the replay here (else: launch it)")
    args = ap.parse_args(argv)
    if not args.child:
        return launch(argv)

    sessions = [load_session(d) for d in args.sessions]
    collector = MarkCollector()
    engine = NoopEngine()
    sinks = FlowSinks(events=[TestingSink(collector)])
    flow = build_flow(Settings.from_env({}), ReplaySource(sessions, 200, None), sinks, lambda: engine)
    t0 = time.perf_counter()
    if args.workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=args.workers)
    wall = time.perf_counter() - t0
    report = {
        "participants": sum(len(s.tracks) for s in sessions),
        "finished": sorted(k for k, v in collector.last.items() if math.isinf(v)),
        "marks": collector.marks,
        "backwards": collector.backwards,
        "transcripts": collector.transcripts,
        "wall_s": round(wall, 3),
        "vm_hwm_kb": vm_hwm_kb(),
    }
    print(json.dumps(report))
    return 0


def launch(argv: list[str]) -> int:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.support.load_replay", "--child", *argv],
        stdout=subprocess.PIPE,
        text=True,
    )
    if proc.returncode:
        return proc.returncode
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    report["peak_rss_kb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # Linux: kilobytes
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
