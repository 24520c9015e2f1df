"""Smoke test of bench/api_load.py on a tiny pool: both loop kinds (one item per call, and pages
through labels/bulk) run against a real uvicorn on PostgreSQL, a baseline checkout is compared
phase by phase, the CPU per label is measured, and only the script's own docs section is written."""

from __future__ import annotations

import json
import sys

import pytest

from bench import api_load
from bench.api_load import PhaseSpec, _phase_spec

OTHER = "<!-- other:begin -->\nsomeone else's results\n<!-- other:end -->\n"

pytestmark = pytest.mark.postgres


def test_phase_specs():
    assert _phase_spec("50:0") == PhaseSpec(50, 0.0, 1)
    assert _phase_spec("50:2") == PhaseSpec(50, 2.0, 1)
    assert _phase_spec("50:0:10") == PhaseSpec(50, 0.0, 10)
    assert _phase_spec("3") == PhaseSpec(3, 0.0, 1)
    for bad in ("0:0", "5:-1", "5:0:0", "5:0:101", "x", "1:2:3:4"):
        with pytest.raises(Exception):
            _phase_spec(bad)


def test_quick_run_with_a_baseline(tmp_path):
    docs, raw = tmp_path / "benchmarks.md", tmp_path / "raw.json"
    docs.write_text("# Benchmarks\n\n" + OTHER)
    # The baseline is this same checkout: the comparison machinery runs, the code is the same.
    assert api_load.main([
        "--items", "4000", "--initial", "0.9", "--phases", "3:0", "3:0:5", "--duration", "1.5", "--warmup", "0.5",
        "--baseline", str(api_load.ROOT), "--docs", str(docs), "--json", str(raw),
    ]) == 0
    result = json.loads(raw.read_text())
    phases = result["phases"]
    assert [(p["server"], p["batch"]) for p in phases] == [
        ("baseline", 1), ("current", 1), ("baseline", 5), ("current", 5)]
    for p in phases:
        assert p["errors"] == 0 and p["labels"] > 0 and p["next_calls"] > 0
        assert p["labels_per_s"] == pytest.approx(p["labels"] / p["duration_s"], rel=0.01)
        if sys.platform.startswith("linux"):
            assert p["api_cpu_ms_per_label"] > 0 and p["db_cpu_ms_per_label"] >= 0
    # Pages of 5: five labels per label call.
    page = phases[3]
    assert page["label_calls"] > 0 and page["labels"] == 5 * page["label_calls"]
    assert result["items_labeled_twice"] == 0
    assert result["labeled_in_db"] >= sum(p["labels"] for p in phases)

    text = docs.read_text()
    assert OTHER in text
    section = text.split("<!-- api-load:begin -->")[1].split("<!-- api-load:end -->")[0]
    assert "| current, 1 proc | 3 annotators, no think time, 5 items per call |" in section
    assert "current ÷ baseline" in section and "Goals with 3 annotators" in section
