"""The model card: Hub metadata that parses, figures only from the inputs, caveats always there."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import yaml

from tumorlib.metrics import compute_metrics, summarize_folds
from tumorlib.modelcard import (
    DATASET_DOI,
    TAGS,
    has_front_matter,
    is_generated,
    model_card,
    split_front_matter,
)

from .conftest import LABELS3

LABELS4 = ["glioma", "meningioma", "pituitary", "no_tumor"]


def fake_metrics(labels: list[str], seed: int = 0, n: int = 120, n_bootstrap: int = 50) -> dict:
    """A real compute_metrics report on made-up predictions (patients of 3 slices each)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(labels), n)
    probs = rng.dirichlet(np.ones(len(labels)), n)
    probs[np.arange(n), y] += rng.uniform(0, 1.5, n)  # better than chance, not perfect
    probs /= probs.sum(axis=1, keepdims=True)
    groups = [f"patient{i // 3}" for i in range(n)]
    return compute_metrics(y, probs, labels, groups, probs_uncalibrated=probs**0.5, n_bootstrap=n_bootstrap)


@pytest.fixture(scope="module")
def config(tiny_bundle) -> dict:
    return json.loads((tiny_bundle / "config.json").read_text())


@pytest.fixture(scope="module")
def config4(config) -> dict:
    """The tiny bundle's config with a no-tumour class, calibrated, with a recipe."""
    out = json.loads(json.dumps(config))
    out.update(num_classes=4, label_names=LABELS4)
    out["tumorlib"].update(temperature=1.37, training={"epochs": 2, "lr": 0.0003})
    return out


def front(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n", 2)[1])


def test_front_matter_is_hub_metadata(config):
    meta = front(model_card(config, fake_metrics(["glioma", "meningioma", "pituitary"]), repo_id="me/m"))
    assert meta["library_name"] == "timm"
    assert meta["pipeline_tag"] == "image-classification"
    assert meta["license"] == "apache-2.0"
    assert meta["tags"] == TAGS
    assert "datasets" not in meta  # the figshare data has no Hub id: named in the body instead
    assert meta["metrics"] == ["accuracy", "f1", "precision", "recall"]


def test_model_index_values_are_the_metrics(config4):
    metrics = fake_metrics(LABELS4)
    card = model_card(config4, metrics, repo_id="me/brain-mri")
    (entry,) = front(card)["model-index"]
    assert entry["name"] == "brain-mri"
    (result,) = entry["results"]
    assert result["task"]["type"] == "image-classification"
    values = {m["type"]: m["value"] for m in result["metrics"]}
    assert values == {
        "accuracy": metrics["accuracy"],
        "f1": metrics["macro"]["f1"],
        "precision": metrics["macro"]["precision"],
        "recall": metrics["macro"]["recall"],
    }
    # huggingface_hub reads it back the same way the Hub does.
    from huggingface_hub import ModelCard

    parsed = {r.metric_type: r.metric_value for r in ModelCard(card).data.eval_results}
    assert parsed == values


def test_every_figure_comes_from_the_metrics(config4):
    metrics = fake_metrics(LABELS4, seed=3)
    card = model_card(config4, metrics, repo_id="me/m")
    body = card.split("---\n", 2)[2]
    percents = re.findall(r"(\d+\.\d)(?:%| ±|–)", body)
    assert len(percents) > 30  # the tables are there
    # Every percentage, in the order the card prints it, is one named field of the metrics.
    macro, expected = metrics["macro"], []
    overall = [("accuracy", metrics), ("balanced_accuracy", metrics)]
    overall += [(key, macro) for key in ("precision", "recall", "specificity", "f1")]
    for key, where in overall:
        expected += [where[key], *where[f"{key}_ci"]]
    for label in LABELS4:
        stats = metrics["per_class"][label]
        for key in ("precision", "recall", "specificity", "f1"):
            expected += [stats[key], *stats[f"{key}_ci"]]
    expected += [metrics["ece"], metrics["ece_uncalibrated"]]
    assert percents == [f"{100 * v:.1f}" for v in expected]
    # And every AUC (3 decimals) of the results: the macro one, then one per class.
    results = body.split("## Evaluation", 1)[1].split("## Calibration", 1)[0]
    aucs = [metrics["macro_auc"], *(metrics["roc"][label]["auc"] for label in LABELS4)]
    assert re.findall(r"\b(\d\.\d{3})\b", results) == [f"{v:.3f}" for v in aucs]
    # four classes: the no-tumour images carry no patient ids, so the groups are not all patients
    assert f"Evaluated on {metrics['n']} slices from {metrics['n_groups']} patient groups (a tumour patient" in body
    three = model_card(config4, fake_metrics(LABELS3, seed=3))
    assert re.search(r"Evaluated on \d+ slices from \d+ patients\.", three)
    assert "95% CI" in body and "percentile bootstrap (50 resamples, resampling whole patients)" in body
    for label in LABELS4:
        assert f"| `{label}` | {metrics['per_class'][label]['precision'] * 100:.1f}%" in body
    cm_row = " | ".join(str(v) for v in metrics["confusion_matrix"][0])
    assert f"| `glioma` | {cm_row} |" in body


def test_no_metrics_means_no_figures(config):
    card = model_card(config, None, repo_id="me/m")
    assert "model-index" not in card and "metrics" not in front(card)
    assert "has not been evaluated" in card
    assert "%" not in card
    assert "| Accuracy |" not in card and "Confusion matrix" not in card
    assert model_card(config, {}, repo_id="me/m") == card


def test_missing_values_are_left_out_not_invented(config):
    metrics = fake_metrics(["glioma", "meningioma", "pituitary"])
    metrics["accuracy"] = None
    metrics["macro"]["f1"] = float("nan")
    metrics["accuracy_ci"] = [None, None]
    card = model_card(config, metrics)
    types = [m["type"] for m in front(card)["model-index"][0]["results"][0]["metrics"]]
    assert types == ["precision", "recall"]
    assert "| Accuracy |" not in card and "| Macro F1 |" not in card


def test_caveats_are_always_there(config, config4):
    for card in (model_card(config, None), model_card(config4, fake_metrics(LABELS4), repo_id="me/m")):
        lower = card.lower()
        assert "not a medical device" in lower
        assert "must not be used for diagnosis" in lower
        assert "research and education" in lower
        assert "233 patients" in card and "Nanfang Hospital" in card
        assert "T1-weighted contrast-enhanced" in card
        assert "single 2-d slices, not volumes" in lower
        assert "no external validation" in lower
        assert DATASET_DOI in card and "CC BY 4.0" in card


def test_no_tumour_caveat_only_with_a_no_tumour_class(config, config4):
    without = model_card(config, None)
    assert "Br35H" not in without and "overstate" not in without
    card = model_card(config4, None)
    assert "`no_tumor` class comes from other collections" in card
    assert "Br35H" in card and "SARTAJ" in card and "**overstate**" in card


def test_model_and_preprocessing_come_from_the_config(config, config4):
    card = model_card(config4, None)
    assert f"`{config['architecture']}` (timm)" in card
    c, h, w = config["pretrained_cfg"]["input_size"]
    assert f"{c} × {h} × {w}" in card and f"resize to {h} × {w}" in card
    assert "| 3 | `no_tumor` |" in card
    assert config["tumorlib"]["files"]["model.safetensors"]["sha256"] in card
    assert json.dumps(config["tumorlib"]["preprocess"], indent=2) in card
    assert "T = 1.37" in card
    assert "CLAHE" not in card and "sharpen:" not in card  # steps that are off are not described

    filtered = json.loads(json.dumps(config))
    filtered["tumorlib"]["preprocess"].update(equalize="clahe", sharpen=0.5, crop_brain=True)
    card = model_card(filtered, None)
    assert "CLAHE (clip limit 2.0, 8 × 8 grid)" in card and "sharpen: add 0.5" in card
    assert "crop to the head's bounding box" in card


def test_usage_names_the_repo(config):
    card = model_card(config, None, repo_id="someone/brain-mri")
    assert 'timm.create_model("hf-hub:someone/brain-mri", pretrained=True)' in card
    assert 'Classifier.from_pretrained("someone/brain-mri")' in card
    local = model_card(config, None)
    assert 'timm.create_model("local-dir:path/to/this/folder", pretrained=True)' in local


def test_extra_renders_the_recipe_and_the_split(config4):
    metrics = fake_metrics(LABELS4)
    recipe = {"epochs": 2, "lr": 0.0003, "model": "resnet50", "augment": {"hflip": 0.5}}
    card = model_card(config4, metrics, extra={"training": recipe, "split": "patient-grouped validation 15%"})
    assert "## Training recipe" in card
    block = card.split("## Training recipe\n\n```yaml\n", 1)[1].split("```", 1)[0]
    assert yaml.safe_load(block) == recipe
    assert "Split: patient-grouped validation 15%." in card
    assert "## Split" not in card


def test_calibration_and_cross_validation(config4):
    folds = [fake_metrics(LABELS4, seed=s, n_bootstrap=0) for s in range(3)]
    metrics = fake_metrics(LABELS4)
    metrics["cv_summary"] = summarize_folds(folds)
    metrics["calibration"] = {"method": "temperature scaling, cross-fitted across folds"}
    card = model_card(config4, metrics)
    ece, before = 100 * metrics["ece"], 100 * metrics["ece_uncalibrated"]
    assert f"(top label, 15 equal-width bins) on the evaluation set: {ece:.1f}%; before temperature" in card
    assert f"before temperature scaling: {before:.1f}%." in card
    assert "Calibration method: temperature scaling, cross-fitted across folds." in card
    acc = metrics["cv_summary"]["accuracy"]
    assert "Across the 3 cross-validation folds" in card
    assert f"| Accuracy | {100 * acc['mean']:.1f} ± {100 * acc['std']:.1f}% |" in card


def test_grad_cam_scores_come_with_their_chance_levels(config4):
    metrics = fake_metrics(LABELS4, seed=3)
    metrics["cam"] = {"pointing_game": 0.0375, "energy_in_mask": 0.019, "n": 479}
    card = model_card(config4, metrics)
    assert "on 3.8% of slices (pointing game)" in card and "Chance levels" not in card
    metrics["cam"]["baseline"] = {"pointing_game": 0.3, "energy_in_mask": 0.052}
    card = model_card(config4, metrics)
    assert "always peaks at the image centre scores 30.0%" in card and "puts 5.2% of its energy" in card
    metrics["cam"]["ceiling"] = {"pointing_game": 0.409, "grid": [4, 4]}
    assert (
        "from a 4 x 4 feature grid, so no heatmap of this model could point inside the tumour on more than 40.9%"
        in (model_card(config4, metrics))
    )


def test_tumour_map_figures_when_the_bundle_ships_a_localiser(config4):
    metrics = fake_metrics(LABELS4, seed=3)
    assert "Tumour map" not in model_card(config4, metrics)
    metrics["localiser"] = {"pointing_game": 0.6614, "energy_in_mask": 0.152, "soft_dice": 0.091, "peak": 0.4321,
                            "n": 2393,
                            "baseline": {"pointing_game": 0.2645}, "no_tumor": {"peak": 0.0712, "n": 703}}  # fmt: skip
    card = model_card(config4, metrics)
    assert "**Tumour map against tumour masks** (2393 tumour slices)" in card
    assert "inside the tumour on 66.1% of slices; 15.2% of the map" in card and "soft Dice 9.1%" in card
    assert "image centre scores 26.5%" in card and "Mean peak 0.43 on tumour slices, 0.07 on 703 no-tumour" in card
    assert "not why a class was chosen" in card


def test_gate_figures_each_with_what_they_were_measured_on(config4):
    metrics = fake_metrics(LABELS4, seed=4)
    card = model_card(config4, metrics)
    assert "Not-an-MRI gate" not in card
    metrics["gate"] = {
        "refused_fraction": 0.027, "n": 620, "checks": "cross-fitted: thresholds set on one half",
        "non_mri_test": {"refused_fraction": 1.0, "n": 33},
        "other_medical_test": {"refused_fraction": 11 / 13, "n": 13},
    }  # fmt: skip
    card = model_card(config4, metrics)
    assert "refuses 2.7% of 620 evaluation slices (cross-fitted" in card
    assert "refuses 100.0% of 33 non-MRI images" in card
    assert "other medical images**: refuses 84.6% of 13 (CT of the head" in card


def test_front_matter_helpers(config):
    card = model_card(config, None)
    data, body = split_front_matter(card)
    assert data["library_name"] == "timm" and body.lstrip().startswith("<!--")
    assert has_front_matter(card) and is_generated(card)
    assert not has_front_matter("# title\n") and not has_front_matter("---\n---\nempty metadata\n")
    assert not is_generated("---\nlicense: mit\n---\n# hand-written\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        split_front_matter("---\nkey: [unclosed\n---\n")
    with pytest.raises(ValueError, match="mapping"):
        split_front_matter("---\n- a list\n---\n")


def test_reproduce_section_follows_the_recorded_run(config4):
    assert "How to reproduce" not in model_card(config4, None)  # no training record, no command
    training = {"model": "resnet50", "pretrained": "none", "epochs": 32, "lr": 0.001, "mask_loss": 0.5,
                "data": ["d/figshare", "d/no"], "val_fraction": 0.2, "seed": 3, "folds": 0}  # fmt: skip
    cfg = {**config4, "tumorlib": {**config4.get("tumorlib", {}), "training": training}}
    card = model_card(cfg, None)
    section = card[card.index("## How to reproduce") :].split("\n## ")[0]
    assert "--model resnet50 --pretrained none --epochs 32 --lr 0.001 --mask-loss 0.5" in section
    assert "--data d/figshare --data d/no --val-fraction 0.2 --seed 3" in section
    assert "resnet50.tv_in1k" in section
    cv = model_card({**cfg, "tumorlib": {"training": {**training, "folds": 5, "final": True}}}, None)
    assert "--folds 5 --final" in cv and "--val-fraction" not in cv
    assert "--output-stride" not in section
    dilated = model_card({**cfg, "tumorlib": {"training": {**training, "output_stride": 16}}}, None)
    assert "--mask-loss 0.5 --output-stride 16 --data d/figshare" in dilated
    assert "--model-ema" not in section and "--finetune" not in section and "--crop-brain" not in section
    levers = {"model_ema": 0.998, "finetune_size": 192, "finetune_epochs": 4, "finetune_lr": 1e-4, "crop_brain": True}
    averaged = model_card({**cfg, "tumorlib": {"training": {**training, **levers}}}, None)
    flags = "--model-ema 0.998 --finetune-size 192 --finetune-epochs 4 --finetune-lr 0.0001 --crop-brain --data"
    assert f"--mask-loss 0.5 {flags} d/figshare" in averaged
    recipe = {**training, **levers, "config": "recipes/resnet50-scratch.yaml"}
    from_recipe = model_card({**cfg, "tumorlib": {"training": recipe}}, None)
    assert f"python -m train --config recipes/resnet50-scratch.yaml {flags} d/figshare" in from_recipe
    assert "--teacher" not in from_recipe and "--distill" not in from_recipe
    # A distilled model: its teacher and soft-target weights are part of the command, and the teacher is named.
    kd = {**recipe, "folds": 5, "final": True, "teacher": "runs/t/fold{fold}/bundle", "distill_alpha": 0.5,
          "distill_temperature": 4.0, "hint_loss": 0.0}  # fmt: skip
    distilled = model_card({**cfg, "tumorlib": {"training": kd}}, None)
    assert (
        "--crop-brain --teacher 'runs/t/fold{fold}/bundle' --distill-alpha 0.5 --distill-temperature 4.0 --data"
        in distilled
    )
    assert "--hint-loss" not in distilled and "teacher `runs/t/fold{fold}/bundle`, which is trained first" in distilled
    # An ensemble teacher: one flag per teacher, both named.
    two = {**kd, "teacher": ["runs/t/fold{fold}/bundle", "runs/u/fold{fold}/bundle"]}
    ensembled = model_card({**cfg, "tumorlib": {"training": two}}, None)
    assert "--teacher 'runs/t/fold{fold}/bundle' --teacher 'runs/u/fold{fold}/bundle' --distill-alpha" in ensembled
    assert "mean of the teachers `runs/t/fold{fold}/bundle` and `runs/u/fold{fold}/bundle`" in ensembled


def test_prediction_sets_section_explains_the_sets_with_their_measured_coverage(config4):
    from .conftest import ROOT

    shipped = json.loads((ROOT / "models" / "default" / "metrics.json").read_text())
    stored = json.loads((ROOT / "models" / "default" / "config.json").read_text())["tumorlib"]["conformal"]
    metrics = {**fake_metrics(LABELS4), "conformal": shipped["conformal"]}
    with_sets = json.loads(json.dumps(config4))
    with_sets["tumorlib"]["conformal"] = stored
    card = model_card(with_sets, metrics)
    section = card.split("## Prediction sets\n", 1)[1].split("\n## ", 1)[0]
    assert "(90%, 95%, 99%)" in section and "never empty" in section and "cross-fitted" in section
    assert stored["fitted_on"] in section
    entry = shipped["conformal"][1]
    row = f"| 95% | per class (as returned) | {entry['mondrian']['coverage'] * 100:.1f}% | " + " | ".join(
        f"{entry['mondrian']['per_class_coverage'][c] * 100:.1f}%" for c in LABELS4
    )
    assert row in section and f"| 95% | one for all classes | {entry['coverage'] * 100:.1f}% |" in section
    # Figures without thresholds: the card says no sets are returned; neither: no section at all.
    assert "carries no conformal thresholds" in model_card(config4, metrics)
    assert "## Prediction sets" not in model_card(config4, fake_metrics(LABELS4))


def test_the_per_patient_paragraph_and_its_fold_spread(config4):
    from tumorlib.patients import fold_summary, patient_level

    from .conftest import numbers_of

    rng = np.random.default_rng(5)
    n = 120
    y = rng.integers(0, 4, n)
    probs = rng.dirichlet(np.ones(4), n)
    probs[np.arange(n), y] += rng.uniform(0, 1.5, n)
    probs /= probs.sum(axis=1, keepdims=True)
    # Tumour slices in patients of 4 slices; the no-tumour images without a patient id.
    groups = [f"nt/dup:{i}.jpg" if y[i] == 3 else f"figshare/{i // 4}" for i in range(n)]
    metrics = compute_metrics(y, probs, LABELS4, groups, n_bootstrap=50)
    section = patient_level(y, probs, LABELS4, groups, n_bootstrap=50)
    metrics["patient_level"] = section
    folds = [{**fake_metrics(LABELS4, seed=s, n_bootstrap=0), "patient_level": {"accuracy": a}} for s, a in
             enumerate((0.9, 0.8, 0.85))]  # fmt: skip
    metrics["cv_summary"] = {**summarize_folds(folds), "patient_level": fold_summary(folds)}
    card = model_card(config4, metrics)
    body = card.split("---\n", 2)[2]
    paragraph = body.split("**Per patient.** ", 1)[1].split("\n\n", 1)[0]
    assert paragraph.startswith("One answer per patient") and f"of {section['n']} patients" in paragraph
    assert f"{section['accuracy'] * 100:.1f}% of" in paragraph
    assert f"{section['vote']['accuracy'] * 100:.1f}%" in paragraph
    for label in LABELS3:
        stats = section["per_class"][label]
        if stats["support"]:
            assert f"| `{label}` | {stats['recall'] * 100:.1f}% | {stats['support']} |" in body
    assert "| `no_tumor` | " not in body.split("Recall per patient", 1)[1]  # no patients: no row
    spread = metrics["cv_summary"]["patient_level"]["accuracy"]
    assert f"| Accuracy per patient | {spread['mean'] * 100:.1f} ± {spread['std'] * 100:.1f}% |" in body
    allowed = {f"{100 * v:.1f}" for v in numbers_of(metrics)}
    assert not [p for p in re.findall(r"(\d+\.\d)(?:%| ±|–)", body) if p not in allowed]
    # Without the section the card has no paragraph per patient.
    del metrics["patient_level"]
    assert "**Per patient.**" not in model_card(config4, metrics)
