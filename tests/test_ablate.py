"""Paired ablations: a recipe change on some CV folds against the baseline's same folds."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from train.ablate import BLOCK, COLUMNS, RUNS_BLOCK, cli, runs_table, summarise, table, update

from .conftest import ROOT

BASE_CONFIG = {"config": "recipes/resnet50-scratch.yaml", "model": "resnet50", "pretrained": "none", "input_size": 128}


def _fold(folder: Path, accuracy: float, recall: float, seconds: list[float]) -> None:
    folder.mkdir(parents=True)
    metrics = {
        "n": 620,
        "accuracy": accuracy,
        "macro": {"f1": accuracy - 0.01},
        "per_class": {"meningioma": {"recall": recall}, "glioma": {"recall": 0.9}},
    }
    (folder / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    (folder / "predictions.csv").write_text("id,true_label\n", encoding="utf-8")
    lines = ["epoch,fold,train_loss,train_acc,val_loss,val_acc,lr,seconds"]
    lines += [f"{i + 1},{folder.name},1,0.5,1,0.5,0.001,{s}" for i, s in enumerate(seconds)]
    (folder / "history.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture
def runs(tmp_path, monkeypatch) -> tuple[Path, Path]:
    monkeypatch.chdir(ROOT)  # a recorded recipe path is relative to the repository, where the trainer ran
    base, run = tmp_path / "results" / "r50-4c-cv", tmp_path / "runs" / "abl-crop"
    for k, acc, rec in ((0, 0.944, 0.88), (1, 0.95, 0.9), (3, 0.908, 0.77)):
        _fold(base / f"fold{k}", acc, rec, [50.0] * 3)
    _fold(run / "fold0", 0.952, 0.91, [50.0, 300.0, 52.0])  # one epoch stretched by a pause
    _fold(run / "fold3", 0.917, 0.80, [51.0, 49.0, 50.0])
    (base / "config.yaml").write_text(yaml.safe_dump(BASE_CONFIG), encoding="utf-8")
    (run / "config.yaml").write_text(yaml.safe_dump({**BASE_CONFIG, "crop_brain": True, "fold": 3}), encoding="utf-8")
    return run, base


def test_each_fold_stands_beside_the_baseline_on_the_same_fold(runs):
    run, base = runs
    summary = summarise(run, base)
    assert [f["fold"] for f in summary["folds"]] == [0, 3]
    assert [f["baseline"]["accuracy"] for f in summary["folds"]] == [0.944, 0.908]
    assert summary["mean"]["accuracy"] == pytest.approx((0.952 + 0.917) / 2)
    assert summary["baseline_mean"]["meningioma_recall"] == pytest.approx((0.88 + 0.77) / 2)
    # Wall time as recorded, and what the epochs cost alone (epochs x the median epoch).
    assert summary["wall_minutes"] == pytest.approx((402 + 150) / 60)
    assert summary["uncontended_minutes"] == pytest.approx((3 * 52 + 3 * 50) / 60)


def test_the_notes_say_where_each_fold_trained_when_the_machines_differ(runs, tmp_path):
    run, base = runs
    fast = {"cpu": "CPU A", "cores": 2, "isa": ["avx512_bf16"], "gpu": None, "mixed_precision": "bf16"}
    slow = {**fast, "cpu": "CPU B", "isa": ["avx2"], "mixed_precision": "no"}
    for k, machine in ((0, fast), (3, slow)):
        path = run / f"fold{k}" / "metrics.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "trained_on": machine}), encoding="utf-8")
    table = tmp_path / "ablations.csv"
    assert cli([str(run), "--baseline", str(base), "--out", str(tmp_path / "o"), "--csv", str(table)]) == 0
    with table.open(newline="") as f:
        notes = next(csv.DictReader(f))["notes"]
    assert notes.endswith("; trained on fold 0 CPU A (bf16), fold 3 CPU B (fp32)")
    assert [f["trained_on"]["cpu"] for f in json.loads((tmp_path / "o" / "summary.json").read_text())["folds"]] == [
        "CPU A",
        "CPU B",
    ]
    path = run / "fold0" / "metrics.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "trained_on": slow}), encoding="utf-8")
    assert cli([str(run), "--baseline", str(base), "--out", str(tmp_path / "o"), "--csv", str(table)]) == 0
    with table.open(newline="") as f:
        assert next(csv.DictReader(f))["notes"].endswith("uncontended; trained on CPU B (fp32)")  # one machine: once


def test_the_row_and_the_fold_files_are_recorded(runs, tmp_path):
    run, base = runs
    table = tmp_path / "ablations.csv"
    table.write_text(
        ",".join(COLUMNS) + "\nr50-4c-cv,recipes/resnet50-scratch.yaml,32,128,random,273.5,0.927,0.922,x\n"
    )
    out = tmp_path / "results" / "ablations" / "crop-brain"
    args = [str(run), "--baseline", str(base), "--out", str(out), "--csv", str(table)]
    assert cli(args) == 0
    assert cli(args) == 0  # again: the row is replaced, not repeated
    rows = list(csv.DictReader(table.open(newline="")))
    assert [r["run"] for r in rows] == ["r50-4c-cv", "ablations/crop-brain"]
    row = rows[1]
    assert row["recipe"] == "recipes/resnet50-scratch.yaml --crop-brain"
    assert float(row["accuracy"]) == pytest.approx((0.952 + 0.917) / 2, abs=1e-4)
    assert "accuracy 95.2/91.7% (baseline 94.4/90.8%)" in row["notes"]
    assert "meningioma recall 91.0/80.0% (baseline 88.0/77.0%)" in row["notes"]
    assert sorted(p.name for p in (out / "fold0").iterdir()) == ["history.csv", "metrics.json", "predictions.csv"]
    assert json.loads((out / "summary.json").read_text())["mean"]["accuracy"] == pytest.approx(0.9345)
    # The recorded options name the row's folds, not the fold the trainer ran last (3).
    recorded = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
    assert recorded == {**BASE_CONFIG, "crop_brain": True, "fold": [0, 3]}


def test_a_fold_the_baseline_lacks_is_a_clear_error(runs, tmp_path, capsys):
    run, base = runs
    _fold(run / "fold2", 0.9, 0.8, [50.0])
    assert cli([str(run), "--baseline", str(base), "--out", str(tmp_path / "o"), "--csv", str(tmp_path / "a.csv")]) == 2
    assert "has no fold 2" in capsys.readouterr().err


def test_the_docs_table_is_generated_from_the_summaries(runs, tmp_path, monkeypatch):
    run, base = runs
    out = tmp_path / "results" / "ablations" / "crop-brain"
    assert cli([str(run), "--baseline", str(base), "--out", str(out), "--csv", str(tmp_path / "a.csv")]) == 0
    text = table(out.parent)
    assert "| `crop-brain` | `--crop-brain` | 0/3 | 95.2% (94.4%) / 91.7% (90.8%) | 93.5% (92.6%) |" in text
    assert "91.0% (88.0%) / 80.0% (77.0%)" in text
    page = "# Results\n\n<!-- python -m train.ablate --table -->\n| old |\n<!-- end ablations -->\nafter\n"
    assert update(page, out.parent) == page.replace("| old |\n", text)


def test_the_table_of_every_run_is_the_csv_row_by_row(runs, tmp_path):
    run, base = runs
    ablations = tmp_path / "a.csv"
    study = {"run": "studies/ens", "recipe": "a + b", "wall_minutes": "0", "accuracy": "0.9454", "macro_f1": "0.9412"}
    cli_args = [str(run), "--baseline", str(base), "--out", str(tmp_path / "results" / "ablations" / "crop-brain")]
    assert cli([*cli_args, "--csv", str(ablations)]) == 0
    with ablations.open(newline="") as f:
        row = next(csv.DictReader(f))
    with ablations.open("a", newline="") as f:
        csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n").writerow({k: study.get(k, "") for k in COLUMNS})
    lines = runs_table(ablations).splitlines()
    assert lines[0].startswith("| run | recipe |") and len(lines) == 4
    assert lines[2] == (
        f"| `ablations/crop-brain` | `{row['recipe']}` | {row['epochs']} | {row['input_size']} | random | "
        f"{row['wall_minutes']} | {100 * float(row['accuracy']):.2f}% | {100 * float(row['macro_f1']):.2f}% |"
    )
    assert lines[3] == "| `studies/ens` | a + b | — | — | — | no training | 94.54% | 94.12% |"  # no training: no time
    page = "<!-- python -m train.ablate --runs -->\n| old |\n<!-- end runs -->\n"
    assert update(page, tmp_path / "none", ablations) == page.replace("| old |\n", runs_table(ablations))


def test_the_committed_docs_table_equals_the_recorded_ablations(monkeypatch):
    monkeypatch.chdir(ROOT)
    page = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    assert BLOCK.search(page), "docs/results.md needs its <!-- python -m train.ablate --table --> block"
    assert RUNS_BLOCK.search(page), "docs/results.md needs its <!-- python -m train.ablate --runs --> block"
    assert update(page) == page, "regenerate with: python -m train.ablate --update docs/results.md"


def test_the_change_names_each_teacher_of_an_ensemble_and_list_options_as_flags():
    from train.ablate import recipe_change

    config = {**BASE_CONFIG, "teacher": ["runs/a/fold{fold}/bundle", "runs/b/fold{fold}/bundle"], "scale": [0.9, 1.1]}
    assert recipe_change(config, {**BASE_CONFIG, "scale": [0.8, 1.2]}) == (
        "--teacher runs/a/fold{fold}/bundle --teacher runs/b/fold{fold}/bundle --scale 0.9 1.1"
    )


def test_the_recipe_column_is_the_command_on_top_of_the_recipe_file(runs, tmp_path):
    run, base = runs
    for folder in (run, base):  # both average their weights: the baseline shares the flag, the recipe lacks it
        config = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))
        extra = {"model_ema": 0.998, "epochs": 32, "scale": [0.85, 1.15], "threads": 2}  # recipe, default, machine
        (folder / "config.yaml").write_text(yaml.safe_dump({**config, **extra}), encoding="utf-8")
    rows = tmp_path / "ablations.csv"
    out = tmp_path / "ablations" / "crop-brain"
    assert cli([str(run), "--baseline", str(base), "--out", str(out), "--csv", str(rows)]) == 0
    with rows.open(newline="") as f:
        assert next(csv.DictReader(f))["recipe"] == "recipes/resnet50-scratch.yaml --crop-brain --model-ema 0.998"
    assert "| `crop-brain` | `--crop-brain` |" in table(out.parent)  # the docs' change: against the baseline


def test_a_run_whose_recipe_file_is_gone_is_refused_with_its_path(runs, tmp_path, capsys):
    run, base = runs
    config = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    (run / "config.yaml").write_text(yaml.safe_dump({**config, "config": "recipes/gone.yaml"}), encoding="utf-8")
    assert cli([str(run), "--baseline", str(base), "--out", str(tmp_path / "o"), "--csv", str(tmp_path / "a.csv")]) == 2
    assert "cannot read recipes/gone.yaml" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "config.yaml is missing"), ("a: [1,\n", "is not readable YAML"), ("- 1\n", "holds no options")],
)
def test_a_run_without_readable_options_is_refused_by_name(runs, tmp_path, capsys, content, message):
    run, base = runs
    if content is None:
        (run / "config.yaml").unlink()
    else:
        (run / "config.yaml").write_text(content, encoding="utf-8")
    assert cli([str(run), "--baseline", str(base), "--out", str(tmp_path / "o"), "--csv", str(tmp_path / "a.csv")]) == 2
    err = capsys.readouterr().err
    assert message in err and str(run) in err
    assert not (tmp_path / "o").exists()  # nothing half-written
