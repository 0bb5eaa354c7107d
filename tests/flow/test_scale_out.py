"""Scale-out with Bytewax's own cluster: several sessions replayed across two processes give the same
windows as one process (the flow's keyed state and media-order windowing make them independent of
where each participant's partition runs). Every process appends to ``<out>/<room>/<session_id>/``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from connectors.recording import load_session
from harness.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "interview"


def make_sessions(tmp: Path, n: int) -> list[Path]:
    dirs = []
    for i in range(n):
        d = tmp / f"s{i}"
        shutil.copytree(SAMPLE, d)
        session = json.loads((d / "session.json").read_text())
        session["room"] = f"room-{i}"
        session["participants"][1]["offset_s"] = 0.5 * i  # different timings per room
        (d / "session.json").write_text(json.dumps(session))
        dirs.append(d)
    return dirs


def windows_by_session(out: Path) -> dict[tuple[str, str], list[str]]:
    result = {}
    for f in sorted(out.glob("*/*/windows.jsonl")):
        lines = [json.loads(line) for line in f.read_text().splitlines()]
        assert all((w["room"], w["session_id"]) == (f.parent.parent.name, f.parent.name) for w in lines)
        result[f.parent.parent.name, f.parent.name] = sorted(
            json.dumps({k: v for k, v in w.items() if k != "emitted_at"}, sort_keys=True) for w in lines
        )
    return result


def bytewax_run(flow: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bytewax.run", flow, *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "LOG_LEVEL": "WARNING"},
    )


def test_two_processes_give_the_same_windows_as_one(tmp_path: Path) -> None:
    sessions = [str(d) for d in make_sessions(tmp_path, 3)]
    one, two = tmp_path / "one", tmp_path / "two"

    single = bytewax_run(f"flows.interview:replay_flow({sessions!r}, {str(one)!r})")
    _, err = single.communicate(timeout=300)
    assert single.returncode == 0, err[-2000:]

    addresses = f"127.0.0.1:{free_port()};127.0.0.1:{free_port()}"
    flow = f"flows.interview:replay_flow({sessions!r}, {str(two)!r})"
    procs = [bytewax_run(flow, "-i", str(i), "-a", addresses) for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]

    expected = windows_by_session(one)
    assert set(expected) == {(f"room-{i}", load_session(d).session_id) for i, d in enumerate(sessions)}
    assert all(expected.values())
    assert windows_by_session(two) == expected
