"""train.stages: the weights a run holds besides its final ones score as the recipes they amount to."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml

from train.ablate import recipe_change
from train.stages import cli as stages_cli
from train.stages import variants
from train.train import cli as train_cli

from .conftest import FIGSHARE, FOLDERS

TINY = ["--model", "test_resnet", "--input-size", "64", "--batch-size", "8", "--no-progress", "--threads", "1"]
COMMON = ["--data", str(FIGSHARE), "--data", str(FOLDERS), "--folds", "2", "--fold", "0", "--epochs", "2",
          "--max-steps-per-epoch", "2", "--no-cam", *TINY]  # fmt: skip
FINETUNE = ["--finetune-size", "96", "--finetune-epochs", "1"]
EMA = ["--model-ema", "0.5"]


def _logits(fold: Path) -> list[float]:
    with (fold / "predictions.csv").open() as f:
        return [float(v) for r in csv.DictReader(f) for k, v in r.items() if k.startswith("logit_")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """One run with both levers, and the three recipes its other weights amount to, trained apart."""
    out = tmp_path_factory.mktemp("runs")
    for name, extra in {"both": FINETUNE + EMA, "plain": [], "ema": EMA, "fine": FINETUNE}.items():
        assert train_cli([*COMMON, *extra, "--output", str(out), "--name", name]) == 0
    return out


def test_each_variant_scores_as_the_recipe_trained_alone(runs):
    assert (runs / "both" / "fold0" / "checkpoint-main.safetensors").is_file()
    assert not (runs / "ema" / "fold0" / "checkpoint-main.safetensors").exists()  # nothing follows its schedule
    assert stages_cli([str(runs / "both")]) == 0
    for variant, alone in {"main": "plain", "main-ema": "ema", "raw": "fine"}.items():
        ours, theirs = runs / f"both@{variant}" / "fold0", runs / alone / "fold0"
        assert _logits(ours) == pytest.approx(_logits(theirs), abs=1e-4), variant
        base = yaml.safe_load((runs / alone / "config.yaml").read_text())
        config = yaml.safe_load((runs / f"both@{variant}" / "config.yaml").read_text())
        assert recipe_change(config, base) == "(none)"  # the row names the levers these weights had
    with (runs / "both@main" / "fold0" / "history.csv").open() as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1", "2"]  # the fine-tuning epoch is not its cost
    # the variants differ from one another: the levers changed the weights
    assert _logits(runs / "both@main" / "fold0") != pytest.approx(_logits(runs / "both@raw" / "fold0"), abs=1e-4)


def test_a_run_with_neither_lever_has_no_variant(runs, capsys):
    assert variants({"model_ema": 0.0, "finetune_size": None, "finetune_epochs": 0}) == []
    assert stages_cli([str(runs / "plain")]) == 2
    assert "neither" in capsys.readouterr().err


def test_the_main_schedule_scores_before_the_fold_finishes(runs, tmp_path):
    import shutil

    killed = tmp_path / "killed"
    shutil.copytree(runs / "both", killed)
    (killed / "fold0" / "metrics.json").unlink()  # killed while fine-tuning
    assert stages_cli([str(killed)]) == 0
    assert (tmp_path / "killed@main-ema" / "fold0" / "metrics.json").is_file()
    assert not (tmp_path / "killed@raw").exists()  # its last weights are not final yet
