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
    args = [*DATA, "--val-fraction", "0.5", "--epochs", "1", "--mask-loss", "0.5", "--output", str(out), "--name", "r"]
    assert train_cli([*args, *TINY]) == 0
    return out / "r"


def test_ship_writes_the_model_folder_and_the_results(run, tmp_path):
    to, results = tmp_path / "models" / "tiny", tmp_path / "results" / "tiny"
    code = ship_cli([str(run), str(to), *DATA, "--val-fraction", "0.5", "--results", str(results), "--variant", "fp32",
                     "--no-progress"])  # fmt: skip
    assert code == 0
    assert {p.name for p in to.iterdir()} == {"model.safetensors", "config.json", "gate.safetensors", "metrics.json",
                                              "README.md", "localiser.safetensors"}  # fmt: skip
    metrics = json.loads((to / "metrics.json").read_text())
    held_out = json.loads((run / "eval-heldout.json").read_text())
    # The figures are the held-out evaluation's, on the run's own validation patients.
    assert metrics["accuracy"] == held_out["accuracy"] and metrics["n"] == held_out["n"] < 32
    assert metrics["model"] == str(to) and metrics["variant"] == "fp32"
    # The mask head ships as the tumour localiser and is checked against the held-out masks as served.
    assert (
        metrics["localiser"]["n"] == metrics["cam"]["n"] > 0
        and "Tumour map against tumour masks" in (to / "README.md").read_text()
    )
    for key, least in (("non_mri_test", 20), ("other_medical_test", 10)):
        test = metrics["gate"][key]
        assert (
            test["n"] > least
            and 0 <= test["refused_fraction"] <= 1
            and len(test["accepted"]) == round(test["n"] * (1 - test["refused_fraction"]))
        ), key
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


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cv")
    args = [*DATA, "--folds", "2", "--final", "--epochs", "1", "--output", str(out), "--name", "cv", *TINY]
    assert train_cli(args) == 0
    return out / "cv"


def test_ship_cv_final_carries_the_out_of_fold_figures_and_temperature(cv_run, tmp_path):
    to, results = tmp_path / "models" / "cv", tmp_path / "results" / "cv"
    assert ship_cli([str(cv_run), str(to), "--results", str(results)]) == 0
    metrics = json.loads((to / "metrics.json").read_text())
    pooled = json.loads((cv_run / "metrics.json").read_text())
    # The final model saw every patient: its figures are the folds' pooled out-of-fold ones, said so.
    assert metrics["accuracy"] == pooled["accuracy"] and metrics["n"] == pooled["n"]
    assert metrics["split"].startswith("out of fold") and "all patients" in metrics["split"]
    assert metrics["calibration"]["temperature"] == load_bundle(to).temperature == pooled["temperature"]
    assert len(metrics["calibration"]["fold_temperatures"]) == 2
    assert metrics["gate"]["non_mri_test"]["n"] > 20 and metrics["gate"]["other_medical_test"]["n"] > 10
    card = (to / "README.md").read_text()
    assert f"{metrics['accuracy'] * 100:.1f}%" in card and "out of fold" in card and "--folds 2 --final" in card
    assert {p.name for p in results.iterdir()} >= {"metrics.json", "predictions.csv", "fold0", "fold1"}
    assert {p.name for p in (results / "fold1").iterdir()} == {"metrics.json", "predictions.csv", "history.csv"}
    assert sum(1 for _ in (results / "predictions.csv").open()) == metrics["n"] + 1
    assert not list(results.rglob("*.safetensors"))
    assert abs(sum(Classifier.from_pretrained(to).predict(FIGSHARE / "images" / "2384.jpg").values()) - 1) < 1e-5


def test_ship_cv_results_only_needs_no_final_model(cv_run, tmp_path, capsys):
    no_final = tmp_path / "nofinal"
    (no_final / "fold0").mkdir(parents=True)
    for name in ("metrics.json", "predictions.csv", "config.yaml"):
        (no_final / name).write_bytes((cv_run / name).read_bytes())
    (no_final / "fold0" / "metrics.json").write_bytes((cv_run / "fold0" / "metrics.json").read_bytes())
    results = tmp_path / "results"
    assert ship_cli([str(no_final), "--results", str(results)]) == 0
    assert (
        json.loads((results / "metrics.json").read_text())["accuracy"]
        == json.loads((cv_run / "metrics.json").read_text())["accuracy"]
    )
    assert (results / "fold0" / "metrics.json").is_file()
    # Asked for a model folder, it says why there is none.
    assert ship_cli([str(no_final), str(tmp_path / "m")]) == 2
    assert "without --final" in capsys.readouterr().err and not (tmp_path / "m").exists()


def test_ship_says_what_is_missing(run, tmp_path, capsys):
    assert ship_cli([str(tmp_path), str(tmp_path / "m")]) == 2
    assert "no metrics.json" in capsys.readouterr().err
    assert ship_cli([str(run), "--results", str(tmp_path / "r")]) == 2
    assert "give one after the run folder" in capsys.readouterr().err
    assert ship_cli([str(run), str(tmp_path / "m")]) == 2
    assert "give --data and --val-fraction" in capsys.readouterr().err
    assert not (tmp_path / "m").exists() and not (tmp_path / "r").exists()


def test_ship_cv_fits_prediction_sets_for_a_run_pooled_without_them(cv_run, tmp_path):
    """A run the trainer pooled before it measured prediction sets: shipping measures and fits them."""
    import shutil

    from train.conformal import run_thresholds

    old = tmp_path / "old"
    shutil.copytree(cv_run, old)
    for name in ("config.json", "metrics.json"):
        stored = json.loads((old / name).read_text())
        for key in ("conformal", "conformal_scores"):
            stored.pop(key, None)
            (stored.get("tumorlib") or {}).pop(key, None)
        (old / name).write_text(json.dumps(stored))
    to = tmp_path / "models" / "old"
    assert ship_cli([str(old), str(to)]) == 0
    bundle = load_bundle(to)
    assert bundle.section["conformal"] == run_thresholds(old, bundle.temperature)
    metrics = json.loads((to / "metrics.json").read_text())
    assert {e["thresholds"] for e in metrics["conformal"]} == {"cross-fitted"}
    assert metrics["conformal"] == json.loads((cv_run / "metrics.json").read_text())["conformal"]
    assert "## Prediction sets" in (to / "README.md").read_text()
