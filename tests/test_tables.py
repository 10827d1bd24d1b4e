"""Tests for tumorlib.tables: the DataFrame tables built from stored evaluation results."""

from __future__ import annotations

import copy
import csv
import shutil

import pandas as pd
import pytest

from tumorlib import results, tables

from .results_data import LABELS, make_cv_metrics, make_metrics


@pytest.fixture(scope="module")
def metrics() -> dict:
    return make_metrics()


def _printed() -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """The paper's tables read straight from the CSV files, independently of tumorlib."""
    with (results.PAPER_DIR / "table1.csv").open(encoding="utf-8") as handle:
        table1 = {row.pop("metric"): {k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)}
    with (results.PAPER_DIR / "table2.csv").open(encoding="utf-8") as handle:
        table2 = {row["class"]: float(row["validation_accuracy"]) for row in csv.DictReader(handle)}
    return table1, table2


def test_the_paper_is_read_from_its_printed_tables():
    table1, table2 = _printed()
    assert set(table1) == {"accuracy", "specificity", "precision", "recall", "f1"}
    for metric, columns in table1.items():
        for column, value in columns.items():
            assert results.PAPER["columns"][column][metric] == pytest.approx(value / 100)
        assert results.PAPER["metrics"][metric] == pytest.approx(columns["dnn_with_resnet50"] / 100)
    assert {label: entry["accuracy"] for label, entry in results.PAPER["per_class"].items()} == table2
    assert results.PAPER["missing"] == ""


def test_the_note_says_the_split_is_unstated_and_the_figures_disagree():
    table1, _ = _printed()
    p, r = table1["precision"]["dnn_with_resnet50"], table1["recall"]["dnn_with_resnet50"]
    note = results.PAPER_CAVEAT
    assert "unstated" in note and "by patient" in note and "disagree" in note
    assert f"give F1 {2 * p * r / (p + r):.1f}%, not the printed {table1['f1']['dnn_with_resnet50']:.1f}%" in note


def test_load_paper_reads_a_copy_and_refuses_broken_files(tmp_path):
    for name in ("table1.csv", "table2.csv"):
        shutil.copy(results.PAPER_DIR / name, tmp_path / name)
    assert results.load_paper(tmp_path)["columns"] == results.PAPER["columns"]
    (tmp_path / "table1.csv").write_text("metric,dnn_with_resnet50\naccuracy,ninety\n", encoding="utf-8")
    with pytest.raises(results.ResultsError, match="not a number"):
        results.load_paper(tmp_path)
    (tmp_path / "table2.csv").unlink()
    (tmp_path / "table1.csv").write_text("metric,dnn_with_resnet50\naccuracy,95\n", encoding="utf-8")
    with pytest.raises(results.ResultsError, match="table2.csv"):
        results.load_paper(tmp_path)


def test_without_the_tables_the_paper_cells_read_missing_and_the_note_says_why():
    empty = {"metrics": {}, "missing": "the paper's tables are not installed"}
    note = results.paper_caveat(empty)
    assert "unstated" in note and note.endswith("Here the paper's tables are not installed.")


PAPER_COLUMNS = ["Paper: ResNet-50", "Paper: DNN with autoencoders"]


def test_paper_table1_single_run(metrics):
    table1, _ = _printed()
    table = tables.paper_table1(metrics)
    assert list(table.columns) == ["Metric", "Ours (95% CI)", *PAPER_COLUMNS]
    assert list(table["Metric"]) == [
        "Accuracy",
        "Specificity (macro)",
        "Precision (macro)",
        "Recall (macro)",
        "F1 (macro)",
    ]
    for row, key in zip(table.itertuples(index=False), table1, strict=True):
        assert row[2] == results.format_pct(table1[key]["dnn_with_resnet50"] / 100)
        assert row[3] == results.format_pct(table1[key]["dnn_with_autoencoders"] / 100)
    macro = metrics["macro"]
    assert table.loc[1, "Ours (95% CI)"] == results.format_interval(macro["specificity"], macro["specificity_ci"])
    assert table.loc[0, "Ours (95% CI)"].startswith(results.format_pct(metrics["accuracy"]) + " (")


def test_paper_tables_with_cross_validation():
    table = tables.paper_table1(make_cv_metrics())
    assert list(table.columns) == ["Metric", "Ours (95% CI)", "Ours, mean ± std over folds", *PAPER_COLUMNS]
    assert table.loc[0, "Ours, mean ± std over folds"] == "95.0 ± 1.2%"
    assert table.loc[4, "Ours, mean ± std over folds"] == "90.0 ± 2.0%"
    table2 = tables.paper_table2(make_cv_metrics())
    assert list(table2["Ours, mean ± std over folds"])[: len(LABELS)] == ["96.0 ± 1.0%"] * 3


def test_paper_table2_per_class_accuracy(metrics):
    _, table2 = _printed()
    table = tables.paper_table2(metrics)
    assert list(table.columns) == ["Class", "Ours (95% CI)", "Paper (validation accuracy)"]
    # Our classes first, then those only the paper printed (its no-tumour class), ours missing there.
    assert list(table["Class"]) == [*LABELS, *(label for label in table2 if label not in LABELS)]
    for row in table.itertuples(index=False):
        stats = metrics["per_class"].get(row[0])
        ours = results.format_interval(stats["accuracy"], stats["accuracy_ci"]) if stats else results.MISSING
        assert row[1] == ours
        assert row[2] == results.format_pct(table2[row[0]])


def test_paper_table_puts_both_tables_in_one(metrics):
    both = tables.paper_table(metrics)
    first, second = tables.paper_table1(metrics), tables.paper_table2(metrics)
    assert list(both.columns) == ["Metric", "Ours (95% CI)", "Paper: ResNet-50"]
    assert len(both) == len(first) + len(second)
    assert list(both["Paper: ResNet-50"]) == [*first["Paper: ResNet-50"], *second["Paper (validation accuracy)"]]
    assert both.loc[len(first), "Metric"] == f"Accuracy, {second.loc[0, 'Class']} (one vs rest)"


def test_per_class_table_formatted_and_numeric(metrics):
    table = tables.per_class_table(metrics)
    assert list(table.columns) == [
        "Class",
        "Precision",
        "Precision CI",
        "Recall",
        "Recall CI",
        "Specificity",
        "Specificity CI",
        "F1",
        "F1 CI",
        "AUC",
        "Support",
    ]
    stats = metrics["per_class"]["meningioma"]
    row = table.set_index("Class").loc["meningioma"]
    assert row["Recall"] == results.format_pct(stats["recall"])
    lo, hi = stats["recall_ci"]
    assert row["Recall CI"] == f"{lo * 100:.1f}–{hi * 100:.1f}"
    assert row["AUC"] == f"{metrics['roc']['meningioma']['auc']:.3f}"
    assert row["Support"] == str(stats["support"])

    numeric = tables.per_class_table(metrics, formatted=False)
    assert list(numeric["class"]) == LABELS
    assert numeric["f1"].tolist() == pytest.approx([metrics["per_class"][label]["f1"] for label in LABELS])
    assert numeric["precision_ci_high"].tolist() == pytest.approx(
        [metrics["per_class"][label]["precision_ci"][1] for label in LABELS]
    )
    assert numeric["support"].sum() == metrics["n"]
    assert numeric.sort_values("auc")["auc"].is_monotonic_increasing


def test_fold_table(metrics):
    assert tables.fold_table(metrics) is None
    cv = make_cv_metrics(folds=3)
    table = tables.fold_table(cv)
    assert list(table["Fold"]) == ["1", "2", "3", "Mean ± std"]
    assert list(table.columns) == [
        "Fold",
        "Accuracy",
        "Macro F1",
        "Macro precision",
        "Macro recall",
        "Macro specificity",
        "ECE",
        "n",
    ]
    assert table.loc[1, "Accuracy"] == results.format_pct(cv["folds"][1]["accuracy"])
    assert table.loc[2, "Macro F1"] == results.format_pct(cv["folds"][2]["macro"]["f1"])
    assert table.loc[0, "n"] == "80"
    assert table.loc[3, "Accuracy"] == "95.0 ± 1.2%"
    assert table.loc[3, "ECE"] == "3.1 ± 0.4%"


def test_comparison_table(metrics):
    other = make_metrics(seed=7)
    table = tables.comparison_table({"full": metrics, "no augmentation": other})
    assert list(table["Run"]) == ["full", "no augmentation"]
    assert "Macro F1" in table.columns and "Macro AUC" in table.columns
    assert table.loc[1, "Accuracy"] == results.format_interval(other["accuracy"], other["accuracy_ci"])
    numeric = tables.comparison_table({"full": metrics}, formatted=False)
    assert numeric.loc[0, "Macro F1"] == pytest.approx(metrics["macro"]["f1"])


def test_checks_table_only_with_stored_checks(metrics):
    assert tables.checks_table(metrics) is None
    data = copy.deepcopy(metrics)
    data["cam"] = {"pointing_game": 0.8125, "energy_in_mask": 0.5, "n": 48}
    table = tables.checks_table(data)
    assert list(table["Value"]) == ["81.2%", "50.0%"]
    assert "n = 48" in table.loc[0, "Check"]
    data["cam"]["baseline"] = {"pointing_game": 0.3125, "energy_in_mask": 0.041}
    table = tables.checks_table(data)
    assert list(table["Value"]) == ["81.2%", "50.0%", "31.2%", "4.1%"]
    assert "image centre" in table.loc[2, "Check"] and "uniform" in table.loc[3, "Check"]
    data["cam"]["ceiling"] = {"pointing_game": 0.409, "grid": [4, 4]}
    table = tables.checks_table(data)
    assert table.loc[4, "Value"] == "40.9%" and "4 x 4 feature grid" in table.loc[4, "Check"]
    data["localiser"] = {"pointing_game": 0.6614, "energy_in_mask": 0.152, "soft_dice": 0.091, "peak": 0.4321,
                         "n": 48, "no_tumor": {"peak": 0.0712, "n": 20}}  # fmt: skip
    table = tables.checks_table(data)
    assert list(table["Value"][5:]) == ["66.1%", "15.2%", "9.1%", "0.43 / 0.07"]
    assert table.loc[5, "Check"] == "Tumour map pointing game (n = 48)" and "(n = 20)" in table.loc[8, "Check"]
    data["localiser"]["no_tumor"] = {"peak": None, "n": 0}  # a three-class run has no tumour-free slices
    assert len(tables.checks_table(data)) == 8


def test_worst_misclassifications_by_stored_confidence():
    predictions = pd.DataFrame(
        {
            "id": ["0001", "0002", "0003", "0004"],
            "patient": ["p1", "p1", "p2", "p3"],
            "path": ["a.jpg", "b.jpg", "c.jpg", "d.jpg"],
            "true_label": ["glioma", "glioma", "pituitary", "meningioma"],
            "pred_label": ["meningioma", "glioma", "glioma", "pituitary"],
            "prob_glioma": [0.2, 0.9, 0.95, 0.1],
            "prob_meningioma": [0.7, 0.05, 0.02, 0.3],
            "prob_pituitary": [0.1, 0.05, 0.03, 0.6],
        }
    )
    table = tables.worst_misclassifications(predictions, n=2)
    assert list(table["id"]) == ["0003", "0001"]
    assert list(table["Rank"]) == [1, 2]
    assert list(table["Confidence"]) == ["95.0%", "70.0%"]
    assert table.loc[0, "P(true class)"] == "3.0%" and table.loc[0, "path"] == "c.jpg"
    raw = tables.worst_misclassifications(predictions, n=10, formatted=False)
    assert list(raw["Confidence"]) == pytest.approx([0.95, 0.7, 0.6])
    right = predictions[predictions["true_label"] == predictions["pred_label"]]
    assert tables.worst_misclassifications(right).empty


def test_explanations_index_and_captions(tmp_path):
    path = tmp_path / "index.csv"
    path.write_text(
        "file,id,true_label,pred_label,target,pointing_hit,energy_in_mask\n"
        "0001.png,0001,glioma,glioma,glioma,True,0.634\n"
        "0002.png,0002,pituitary,meningioma,meningioma,0,\n"
    )
    index = results.load_explanations(path)
    assert list(index["id"]) == ["0001", "0002"]
    rows = index.to_dict("records")
    assert tables.explanation_caption(rows[0]) == "glioma ✓ · CAM of glioma · pointing hit · 63.4% energy in mask"
    assert tables.explanation_caption(rows[1]) == "pituitary → meningioma ✗ · CAM of meningioma · pointing miss"
    assert tables.explanation_caption({"file": "x.png"}) == "x.png"
    (tmp_path / "bad.csv").write_text("id\n1\n")
    with pytest.raises(results.ResultsError, match="file"):
        results.load_explanations(tmp_path / "bad.csv")


def test_ablation_table_formats_rates(tmp_path):
    path = tmp_path / "ablations.csv"
    path.write_text(
        "run,recipe,epochs,input_size,init,wall_minutes,accuracy,macro_f1,notes\n"
        "r50,paper,40,224,imagenet,123.456,0.9534,0.9411,\n"
        "r50-scratch,no init,40,224,none,,0.81,0.8,from scratch\n"
    )
    table = tables.ablation_table(results.load_ablations(path))
    assert list(table.columns) == [
        "Run",
        "Recipe",
        "Epochs",
        "Input size",
        "Initialisation",
        "Wall time (min)",
        "Accuracy",
        "Macro F1",
        "Notes",
    ]
    assert list(table["Accuracy"]) == ["95.3%", "81.0%"]
    assert list(table["Wall time (min)"]) == ["123.5", "—"]
    assert list(table["Epochs"]) == ["40", "40"] and table.loc[0, "Notes"] == "—"
    (tmp_path / "bad.csv").write_text("name\nx\n")
    with pytest.raises(results.ResultsError, match="run"):
        results.load_ablations(tmp_path / "bad.csv")


def test_recipe_table_from_trainer_and_bundle_configs():
    trainer = {"model": "resnet50", "input_size": 224, "crop_brain": True, "classes": None, "lr": 0.001, "seed": 0}
    bundle = {"architecture": "x", "tumorlib": {"training": {**trainer, "crop_brain": False, "input_size": 384}}}
    assert tables.recipe_of(bundle)["input_size"] == 384
    assert tables.recipe_of(None) == {}
    table = tables.recipe_table({"a": trainer, "b": bundle, "c": None})
    assert list(table.columns) == ["Setting", "a", "b", "c"]
    row = table.set_index("Setting").loc["Crop to brain"]
    assert list(row) == ["yes", "no", "—"]
    assert table.set_index("Setting").loc["Learning rate", "a"] == "0.001"
    diff = tables.recipe_table({"a": trainer, "b": bundle}, only_differences=True)
    assert list(diff["Setting"]) == ["Input size (px)", "Crop to brain"]
