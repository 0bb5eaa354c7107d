"""Run every bench/bench_*.py and write one report (numbers + the machine they ran on).

Usage: python bench/run_all.py [--only NAME ...]   -> bench/results/report.md (and printed)
Benchmarks are run by hand or by `make bench`, never as timed tests.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*", help="bench names (e.g. pipeline whisper)")
    args = ap.parse_args()
    scripts = sorted(HERE.glob("bench_*.py"))
    if args.only:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in args.only]
    out = [
        f"# QuantCoach benchmarks, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        machine(),
        "",
    ]
    failed = 0
    for script in scripts:
        print(f"== {script.name}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=1800)
        text = proc.stdout.strip() + (
            f"\n[exit {proc.returncode}] {proc.stderr.strip()[-1500:]}" if proc.returncode else ""
        )
        failed += proc.returncode != 0
        print(text, flush=True)
        out += [f"## {script.stem} ({time.perf_counter() - t0:.0f} s)", "", "```", text, "```", ""]
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "report.md").write_text("\n".join(out))
    print(f"report: {HERE / 'results' / 'report.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
