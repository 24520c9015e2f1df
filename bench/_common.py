"""Helpers shared by the benchmarks: a description of the machine, and rewriting one benchmark's
own section of docs/benchmarks.md.

Each benchmark owns the text between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``; a rewrite
replaces exactly that span (or appends the section when the markers are missing), so benchmarks
never touch each other's results.
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except OSError:  # not available on every platform
        return None


def machine() -> dict[str, str]:
    """nproc, CPU model, Python version and the 1/5/15-minute load averages, as strings."""
    load = load_average()
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "loadavg": "unknown" if load is None else "%.1f / %.1f / %.1f" % load,
    }


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def write_section(name: str, body: str, path: Path = DOCS) -> None:
    """Put ``body`` between the ``name`` markers of ``path`` (created, or the section appended,
    when missing); the rest of the file is left as it is."""
    begin, end = markers(name)
    section = f"{begin}\n{body.strip(chr(10))}\n{end}"
    current = path.read_text() if path.exists() else "# Benchmarks\n"
    if begin in current and end in current:
        # A function replacement: the body may hold backslashes that re.sub would interpret.
        current = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: section, current, flags=re.S)
    else:
        current = current.rstrip("\n") + "\n\n" + section + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(current)
