"""What every benchmark shares: timing, the machine line and appending to bench/RESULTS.md."""
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
RESULTS_HEADER = """# Benchmark results

Each section is appended by a script under `bench/` (machine, date, command, figures).
Timings on shared machines vary; each section says what else was running when known.
"""


class Timing(list):
    """Wall times of the runs, plus the process CPU time of the fastest (all threads: on a
    shared machine, CPU/wall near the thread count means the cores really were ours)."""
    cpu_of_best = 0.0


def timed(fn, repeat):
    times, result = Timing(), None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if not times or wall < min(times):
            times.cpu_of_best = cpu
        times.append(wall)
    return result, times


def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def machine_line(extra=""):
    import numpy as np

    import lora_native
    info = lora_native.build_info()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return "%s, %d cores (lscpu); %s; Python %s, NumPy %s%s; lora-native %s, simd %s; load average %.2f at start" % (
        cpu_model(), os.cpu_count(), platform.platform(), platform.python_version(), np.__version__, extra,
        info["version"], info["simd"], load)


def append_section(title, script, machine, table, notes):
    """Append a dated section (title, machine, the command that was run, table, notes)."""
    cmd = "python bench/%s" % script + "".join(" " + a for a in sys.argv[1:])
    section = ["", "## %s: %s (bench/%s)" % (datetime.date.today().isoformat(), title, script), "",
               "- machine: " + machine, "- command: `%s`" % cmd, ""] + table + [""] + notes + [""]
    if not RESULTS.exists():
        RESULTS.write_text(RESULTS_HEADER)
    with RESULTS.open("a") as f:
        f.write("\n".join(section))
    print("appended to %s" % RESULTS.relative_to(ROOT))
