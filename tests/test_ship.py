"""train.ship: a finished single-split run becomes a model folder the apps can serve, with honest figures."""

from __future__ import annotations

import json

import pytest

from train.ship import cli as ship_cli
from train.train import cli as train_cli
from tumorlib import Classifier, load_bundle

from .conftest import FIGSHARE, FOLDERS

TINY = ["--model", "test_resnet", "--input-size", "64", "--batch-size", "8", "--no-progress", "--threads", "1"]
DATA = ["--data", str(FIGSHARE), "--data", str(FOLDERS)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert train_cli([*DATA, "--val-fraction", "0.5", "--epochs", "1", "--output", str(out), "--name", "r", *TINY]) == 0
    return out / "r"


def test_ship_writes_the_model_folder_and_the_results(run, tmp_path):
    to, results = tmp_path / "models" / "tiny", tmp_path / "results" / "tiny"
    code = ship_cli([str(run), str(to), *DATA, "--val-fraction", "0.5", "--results", str(results), "--variant", "fp32",
                     "--no-progress"])  # fmt: skip
    assert code == 0
    assert {p.name for p in to.iterdir()} == {"model.safetensors", "config.json", "gate.safetensors", "metrics.json",
                                              "README.md"}  # fmt: skip
    metrics = json.loads((to / "metrics.json").read_text())
    held_out = json.loads((run / "eval-heldout.json").read_text())
    # The figures are the held-out evaluation's, on the run's own validation patients.
    assert metrics["accuracy"] == held_out["accuracy"] and metrics["n"] == held_out["n"] < 32
    assert metrics["model"] == str(to) and metrics["variant"] == "fp32"
    test = metrics["gate"]["non_mri_test"]
    assert (
        test["n"] > 20
        and 0 <= test["refused_fraction"] <= 1
        and len(test["accepted"]) == round(test["n"] * (1 - test["refused_fraction"]))
    )
    assert metrics["calibration"]["temperature"] == load_bundle(to).temperature
    assert "ece_crossfit_training_run" in metrics["calibration"]
    assert metrics["training_run_validation"]["accuracy"] == json.loads((run / "metrics.json").read_text())["accuracy"]
    card = (to / "README.md").read_text()
    assert f"{metrics['accuracy'] * 100:.1f}%" in card
    assert json.loads((results / "metrics.json").read_text()) == metrics
    assert {"config.yaml", "history.csv", "status.json", "predictions.csv"} <= {p.name for p in results.iterdir()}
    assert sum(1 for _ in (results / "predictions.csv").open()) == metrics["n"] + 1
    # The shipped folder is a bundle like any other.
    probs = Classifier.from_pretrained(to).predict(FIGSHARE / "images" / "2384.jpg")
    assert abs(sum(probs.values()) - 1) < 1e-5


def test_ship_refuses_a_cross_validation_run(tmp_path, capsys):
    (tmp_path / "cv").mkdir()
    (tmp_path / "cv" / "metrics.json").write_text(json.dumps({"cv_summary": {}}))
    assert ship_cli([str(tmp_path / "cv"), str(tmp_path / "m"), *DATA, "--val-fraction", "0.2"]) == 2
    assert "not a finished single-split run" in capsys.readouterr().err and not (tmp_path / "m").exists()
