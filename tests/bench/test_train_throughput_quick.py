"""Smoke test of bench/train_throughput.py on generated data (no ../shared needed): the measurement
runs through the worker's learners, the ratios follow from the measured rates, and only the script's
own docs section is written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bench import train_throughput as tt
from bench._common import write_section

OTHER = "<!-- other:begin -->\nsomeone else's results\n<!-- other:end -->\n"


def test_quick_synthetic_run(tmp_path):
    docs, raw = tmp_path / "benchmarks.md", tmp_path / "raw.json"
    docs.write_text("# Benchmarks\n\n" + OTHER)
    threads = torch.get_num_threads()
    # One thread: tiny steps on a busy machine otherwise spend their time waiting for a second thread.
    torch.set_num_threads(1)
    try:
        assert tt.main(["--quick", "--synthetic", "--models", "mlp,tinycnn,fasttext", "--steps", "3",
                        "--seed", "3", "--docs", str(docs), "--json", str(raw)]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    out = json.loads(raw.read_text())
    results = out["results"]
    assert set(results) == {"mlp", "tinycnn", "fasttext"}
    for arch in ("mlp", "tinycnn"):
        r, case = results[arch], tt.QUICK[arch]
        # Both runs (before and after the other model): one first step each, then 3 timed steps.
        assert len(r["first_step_s"]) == 2
        assert len(r["step_s"]) == 2 * 3 and min(r["step_s"]) > 0
        assert r["infer_examples"] == 2 * case.infer
        assert r["params"] > 0 and r["gflops"] > 0
    ft = results["fasttext"]
    assert len(ft["first_step_s"]) == 2 and ft["fit_examples"] == 8000 * 5

    (row,) = [r for r in out["ratios"] if (r["target"], r["proxy"]) == ("tinycnn", "mlp")]
    rate = {a: results[a]["batch_size"] / np.median(results[a]["step_s"]) for a in ("mlp", "tinycnn")}
    assert row["train"] == pytest.approx(rate["mlp"] / rate["tinycnn"])
    assert row["recipe"] == pytest.approx(row["train"])  # both use the same 10-epoch recipe
    assert not [r for r in out["ratios"] if "vdcnn29" in (r["target"], r["proxy"])]

    text = docs.read_text()
    assert text.startswith("# Benchmarks\n\n" + OTHER)
    assert text.count("<!-- train_throughput:begin -->") == 1 and text.count("<!-- train_throughput:end -->") == 1
    assert "| tinycnn ÷ mlp |" in text and "synthetic" in text

    # The report re-rendered from the raw results is the same section.
    again = tmp_path / "again.md"
    assert tt.main(["--render", str(raw), "--docs", str(again)]) == 0
    assert again.read_text().split("<!-- train_throughput:begin -->")[1] == text.split("<!-- train_throughput:begin -->")[1]


def test_section_is_replaced_not_appended(tmp_path):
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\n" + OTHER)
    write_section("mine", "first \\1 version", docs)
    write_section("mine", "second version", docs)
    text = docs.read_text()
    assert text == "# Benchmarks\n\n" + OTHER + "\n<!-- mine:begin -->\nsecond version\n<!-- mine:end -->\n"
