"""The trainer end to end on real sample slices with timm's tiny 'test_resnet': outputs, resume, configs."""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch
import yaml

from train import evaluate as evaluate_cli
from train.cv import final_args, fold_args
from train.engine import time_left
from train.model import lr_factor
from train.train import cli as train_cli
from train.train import parse_args
from tumorlib import Classifier, decode_image, load_bundle
from tumorlib.data import Record, class_names, read_datasets
from tumorlib.errors import TumorlibError

from .conftest import FIGSHARE, FOLDERS, ROOT

TINY = ["--model", "test_resnet", "--input-size", "64", "--batch-size", "8", "--no-progress", "--threads", "1"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    code = train_cli(
        ["--data", str(FIGSHARE), "--data", str(FOLDERS), "--folds", "2", "--epochs", "1", "--final",
         "--mask-loss", "0.5", "--precision", "bf16", "--output", str(out), "--name", "cv", *TINY]
    )  # fmt: skip
    assert code == 0
    return out / "cv"


def test_cv_run_writes_every_output(cv_run):
    for name in ("config.yaml", "config.json", "model.safetensors", "metrics.json", "history.csv", "predictions.csv"):
        assert (cv_run / name).is_file(), name
    assert (cv_run / "README.md").is_file()
    assert json.loads((cv_run / "status.json").read_text())["state"] == "complete"
    metrics = json.loads((cv_run / "metrics.json").read_text())
    assert metrics["n"] == 32 and metrics["labels"] == ["glioma", "meningioma", "pituitary", "no_tumor"]
    assert len(metrics["folds"]) == 2 and sum(f["n"] for f in metrics["folds"]) == 32
    assert set(metrics["cv_summary"]["accuracy"]) == {"mean", "std"}
    assert metrics["temperature"] > 0 and "ece_uncalibrated" in metrics
    with (cv_run / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 32 and len({r["id"] for r in rows}) == 32
    assert {"id", "patient", "true_label", "pred_label", "prob_no_tumor"} <= set(rows[0])
    # out-of-fold: every patient's slices were predicted by the fold that never trained on them
    folds = {}
    for k in (0, 1):
        with (cv_run / f"fold{k}" / "predictions.csv").open() as f:
            for r in csv.DictReader(f):
                assert folds.setdefault(r["patient"], k) == k
    with (cv_run / "history.csv").open() as f:
        assert [r["fold"] for r in csv.DictReader(f)] == ["fold0", "fold1"]
    config = yaml.safe_load((cv_run / "config.yaml").read_text())
    assert config["folds"] == 2 and config["model"] == "test_resnet"
    # Each fold records the machine and the precision it trained at ("auto" resolves per machine).
    from tumorlib.runtime import machine_signature

    for fold in metrics["folds"]:
        machine = {k: v for k, v in fold["trained_on"].items() if k != "gpu"}
        assert machine == {**machine_signature(), "mixed_precision": "bf16"}
    assert config["_environment"]["cpu"] == machine_signature()["cpu"]
    # Grad-CAM checked against the masks by each fold's model on its held-out patients, then pooled
    fold_cams = [json.loads((cv_run / f"fold{k}" / "metrics.json").read_text())["cam"] for k in (0, 1)]
    assert metrics["cam"]["n"] == sum(c["n"] for c in fold_cams) == 24
    assert 0 <= metrics["cam"]["pointing_game"] <= 1 and 0 <= metrics["cam"]["energy_in_mask"] <= 1
    # The chance levels pool like the scores: weighted by each fold's number of masked slices.
    pooled = sum(c["baseline"]["pointing_game"] * c["n"] for c in fold_cams) / 24
    assert metrics["cam"]["baseline"]["pointing_game"] == pytest.approx(pooled)
    assert metrics["cam"]["ceiling"]["grid"] == fold_cams[0]["ceiling"]["grid"]
    # The mask head, shipped as the tumour localiser: checked the same way, plus the no-tumour slices
    fold_locs = [json.loads((cv_run / f"fold{k}" / "metrics.json").read_text())["localiser"] for k in (0, 1)]
    loc = metrics["localiser"]
    assert loc["n"] == sum(f["n"] for f in fold_locs) == 24
    assert loc["no_tumor"]["n"] == sum(f["no_tumor"]["n"] for f in fold_locs) == 8
    assert 0 <= loc["no_tumor"]["peak"] <= 1
    for key in ("pointing_game", "energy_in_mask", "soft_dice", "peak"):
        assert loc[key] == pytest.approx(sum(f[key] * f["n"] for f in fold_locs) / 24)
    assert loc["baseline"]["pointing_game"] == pytest.approx(metrics["cam"]["baseline"]["pointing_game"])
    assert (cv_run / "localiser.safetensors").is_file() and (
        cv_run / "fold0" / "bundle" / "localiser.safetensors"
    ).is_file()


@pytest.mark.parametrize("missing", [("cam",), ("localiser",), ("cam", "localiser")])
def test_mask_checks_added_to_folds_finished_without_them(cv_run, tmp_path, missing):
    from train.cv import add_fold_checks
    from tumorlib.splits import make_folds

    fold = tmp_path / "fold0"
    shutil.copytree(cv_run / "fold0", fold)
    m = json.loads((fold / "metrics.json").read_text())
    expected = {key: m.pop(key) for key in missing}
    kept = {key: m[key] for key in ("cam", "localiser") if key not in missing}
    (fold / "metrics.json").write_text(json.dumps(m))
    records = read_datasets([FIGSHARE, FOLDERS])
    folds = make_folds(records, 2, 0)
    args = parse_args(["--data", "x", *TINY, "--folds", "2", "--mask-loss", "0.5"])
    add_fold_checks(args, fold, [r for r, f in zip(records, folds, strict=True) if f == 0], class_names(records))
    got = json.loads((fold / "metrics.json").read_text())
    for key, value in expected.items():
        assert got[key]["n"] == value["n"] and got[key]["pointing_game"] == pytest.approx(value["pointing_game"])
    assert {key: got[key] for key in kept} == kept  # what was there is not recomputed
    if "localiser" in missing:
        assert got["localiser"]["soft_dice"] == pytest.approx(expected["localiser"]["soft_dice"])


def _fold_logits_as_served(fold: Path, records) -> tuple[list[str], torch.Tensor]:
    """(ids, float32 logits) of the fold's held-out slices from its exported model, through the Classifier."""
    with (fold / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    by_id = {r.id: r for r in records}
    clf = Classifier(load_bundle(fold / "bundle"), variant="fp32")
    batch = torch.stack([clf.preprocess(by_id[r["id"]].path) for r in rows])
    return [r["id"] for r in rows], clf.logits(batch)


def _recorded_logits(fold: Path) -> torch.Tensor:
    with (fold / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    labels = ["glioma", "meningioma", "pituitary", "no_tumor"]
    return torch.tensor([[float(r[f"logit_{c}"]) for c in labels] for r in rows])


def test_fold_scores_are_the_served_float32_models_even_when_training_in_bf16(cv_run):
    records = read_datasets([FIGSHARE, FOLDERS])
    for k in (0, 1):
        fold = cv_run / f"fold{k}"
        _, served = _fold_logits_as_served(fold, records)
        # bf16 autocast moves these logits by ~1e-3; the CSV keeps 6 decimals
        assert torch.allclose(_recorded_logits(fold), served, atol=2e-5), k
        assert json.loads((fold / "metrics.json").read_text())["precision"] == "fp32"
    assert json.loads((cv_run / "metrics.json").read_text())["precision"] == "fp32"


def test_folds_scored_in_bf16_are_rescored_in_float32_on_resume(cv_run, tmp_path):
    from accelerate import Accelerator

    from train.cv import rescore_fold
    from tumorlib.splits import make_folds

    fold = tmp_path / "fold0"
    shutil.copytree(cv_run / "fold0", fold)
    m = json.loads((fold / "metrics.json").read_text())
    del m["precision"]  # as a fold scored before the fix records it
    m["accuracy"] = -1.0
    (fold / "metrics.json").write_text(json.dumps(m))
    text = (fold / "predictions.csv").read_text()
    (fold / "predictions.csv").write_text(text.replace(",0.", ",0.9", 5))  # scores that are not the model's
    records = read_datasets([FIGSHARE, FOLDERS])
    folds = make_folds(records, 2, 0)
    args = parse_args(["--data", "x", *TINY, "--folds", "2", "--mask-loss", "0.5"])
    held_out = [r for r, f in zip(records, folds, strict=True) if f == 0]
    rescore_fold(args, fold, held_out, class_names(records), Accelerator(cpu=True))
    got = json.loads((fold / "metrics.json").read_text())
    assert got["precision"] == "fp32" and got["accuracy"] == pytest.approx(json.loads(
        (cv_run / "fold0" / "metrics.json").read_text())["accuracy"])  # fmt: skip
    assert got["cam"] == m["cam"] and got["localiser"] == m["localiser"] and got["fold"] == 0  # kept, not redone
    assert (fold / "predictions.csv").read_text() == (cv_run / "fold0" / "predictions.csv").read_text()
    before = (fold / "metrics.json").read_text()
    rescore_fold(args, fold, held_out, class_names(records), Accelerator(cpu=True))  # already float32: untouched
    assert (fold / "metrics.json").read_text() == before


def test_a_damaged_fold_checkpoint_only_skips_that_folds_cam(cv_run, tmp_path, capsys):
    from train.cv import add_fold_checks

    fold = tmp_path / "fold0"
    shutil.copytree(cv_run / "fold0", fold)
    m = json.loads((fold / "metrics.json").read_text())
    del m["cam"]
    (fold / "metrics.json").write_text(json.dumps(m))
    data = bytearray((fold / "checkpoint.safetensors").read_bytes())
    data[-100] ^= 0xFF  # one flipped byte inside the tensors
    (fold / "checkpoint.safetensors").write_bytes(bytes(data))
    records = read_datasets([FIGSHARE, FOLDERS])
    add_fold_checks(parse_args(["--data", "x", *TINY, "--folds", "2"]), fold, records[:4], class_names(records))
    err = capsys.readouterr().err
    assert "no mask checks for fold0" in err and "SHA-256" in err
    assert json.loads((fold / "metrics.json").read_text()) == m


def test_exported_bundle_is_the_plain_timm_model(cv_run):
    bundle = load_bundle(cv_run)
    assert bundle.labels == ["glioma", "meningioma", "pituitary", "no_tumor"]
    metrics = json.loads((cv_run / "metrics.json").read_text())
    assert bundle.temperature == pytest.approx(metrics["temperature"])
    check = bundle.section["inference"]
    assert check["n_images"] > 0 and isinstance(check["bf16_agrees"], bool)
    probs = Classifier(bundle).predict(FIGSHARE / "images" / "2384.jpg")
    assert abs(sum(probs.values()) - 1) < 1e-5


def test_evaluate_returns_the_schema(cv_run, tmp_path):
    out, preds = tmp_path / "m.json", tmp_path / "p.csv"
    code = evaluate_cli.cli(
        ["--model", str(cv_run), "--data", str(FIGSHARE), "--data", str(FOLDERS), "--out", str(out),
         "--predictions", str(preds), "--no-progress", "--bootstrap", "200"]
    )  # fmt: skip
    assert code == 0
    m = json.loads(out.read_text())
    assert m["n"] == 32 and m["labels"] == ["glioma", "meningioma", "pituitary", "no_tumor"]
    assert sum(map(sum, m["confusion_matrix"])) == 32
    assert set(m["per_class"]) == set(m["labels"]) and {"precision", "recall", "specificity", "f1"} <= set(m["macro"])
    assert m["accuracy_ci"][0] <= m["accuracy"] <= m["accuracy_ci"][1]
    assert set(m["roc"]) == set(m["labels"]) and "ece" in m and "ece_uncalibrated" in m and m["reliability"]
    with preds.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 32 and rows[0]["path"].endswith(".jpg")
    # the bundle ships the trained mask head, so the evaluation checks it too
    assert m["localiser"]["n"] == m["cam"]["n"] == 24 and m["localiser"]["no_tumor"]["n"] == 8


def test_the_trainer_and_evaluate_answer_per_patient(cv_run, tmp_path):
    from tumorlib.patients import CHECKED, OUT_OF_FOLD

    patients = {r.group for r in read_datasets([FIGSHARE])}
    pooled = json.loads((cv_run / "metrics.json").read_text())
    # Out of fold: no verdicts of the check (it is fitted on the final model), every slice pooled.
    section = pooled["patient_level"]
    assert section["accepted"] == OUT_OF_FOLD and section["n"] == len(patients) and section["n_slices"] == 24
    assert section["without_patient_id"]["n"] == 8 and sum(map(sum, section["confusion_matrix"])) == len(patients)
    fold_accuracy = [f["patient_level"]["accuracy"] for f in pooled["folds"]]
    assert sum(f["patient_level"]["n"] for f in pooled["folds"]) == len(patients)
    assert pooled["cv_summary"]["patient_level"]["accuracy"]["mean"] == pytest.approx(sum(fold_accuracy) / 2)
    # Evaluated as served: the bundle's check decides which slices each patient's answer pools.
    out = tmp_path / "m.json"
    assert evaluate_cli.cli(["--model", str(cv_run), "--data", str(FIGSHARE), "--data", str(FOLDERS), "--out",
                             str(out), "--no-cam", "--no-progress", "--bootstrap", "100"]) == 0  # fmt: skip
    m = json.loads(out.read_text())
    served = m["patient_level"]
    assert served["accepted"] == CHECKED and served["n_slices"] == 24
    assert served["n"] + served["unanswered"] == len(patients)
    assert served["refused_slices"] <= round(m["gate"]["refused_fraction"] * m["gate"]["n"])


def test_cam_report_states_the_chance_levels(tiny_bundle):
    """Beside the pointing game: what a heatmap peaked at the image centre and a flat one would score."""
    import cv2
    import numpy as np

    records = [r for r in read_datasets([FIGSHARE]) if r.mask_path is not None]
    clf = Classifier.from_pretrained(tiny_bundle, variant="fp32")
    cam = evaluate_cli.cam_report(clf, records, list(range(len(records))), np.zeros(len(records), int),
                                  "gradcam", None, 0, False)  # fmt: skip
    hits, areas = [], []
    for r in records:
        mask = r.load_mask()
        # Independent of mask_scores: distance from the centre pixel to the mask against the tolerance.
        distance = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5)
        radius = max(1, round(15 * max(mask.shape) / 512))
        hits.append(distance[mask.shape[0] // 2, mask.shape[1] // 2] <= radius)
        areas.append(mask.sum() / mask.size)
    assert cam["n"] == len(records) == 24 and 0 < np.mean(hits) < 1
    assert cam["baseline"]["pointing_game"] == pytest.approx(np.mean(hits))
    assert cam["baseline"]["energy_in_mask"] == pytest.approx(np.mean(areas))
    # test_resnet at 64 px: a 2 x 2 grid, whose four cell centres few tumours cover
    assert cam["ceiling"]["grid"] == [2, 2] and 0 <= cam["ceiling"]["pointing_game"] < 1
    assert cam["pointing_game"] <= cam["ceiling"]["pointing_game"]


def test_evaluate_refuses_unknown_classes(tmp_path, tiny_bundle):
    code = evaluate_cli.cli(["--model", str(tiny_bundle), "--data", str(FOLDERS), "--out", str(tmp_path / "m.json")])
    assert code == 2 and not (tmp_path / "m.json").exists()


def _run(args: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "train", *args], cwd=ROOT, env=ENV, **kw)


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    common = ["--data", str(FIGSHARE), "--epochs", "3", "--val-fraction", "0.3", "--output", str(tmp_path),
              "--model", "test_resnet", "--input-size", "96", "--batch-size", "2", "--no-progress",
              "--threads", "1"]  # fmt: skip
    assert _run([*common, "--name", "straight"]).wait(timeout=300) == 0

    proc = _run([*common, "--name", "killed"], stderr=subprocess.DEVNULL)
    history = tmp_path / "killed" / "history.csv"
    deadline = time.time() + 240
    while time.time() < deadline and not (history.exists() and len(history.read_text().splitlines()) >= 2):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # mid-epoch 2: epoch 1's checkpoint is on disk
    proc.wait()
    status = json.loads((tmp_path / "killed" / "status.json").read_text())
    assert status["state"] == "running"  # a killed run never claims success
    assert not (tmp_path / "killed" / "model.safetensors").exists()
    assert not list((tmp_path / "killed").glob(".*.tmp"))  # no half-written file left visible
    assert _run([*common, "--name", "killed", "--resume"]).wait(timeout=300) == 0

    a = safetensors.torch.load_file(tmp_path / "straight" / "model.safetensors")
    b = safetensors.torch.load_file(tmp_path / "killed" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6), k
    ma = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    mb = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    assert ma["accuracy"] == mb["accuracy"] and ma["confusion_matrix"] == mb["confusion_matrix"]
    assert ma["ece"] == pytest.approx(mb["ece"], abs=1e-6)


def test_failed_run_says_so(tmp_path):
    broken = tmp_path / "data"
    shutil.copytree(FIGSHARE, broken)
    (broken / "images" / "2384.jpg").write_bytes(b"not a jpeg at all")
    code = train_cli(["--data", str(broken), "--epochs", "1", "--output", str(tmp_path), "--name", "bad", *TINY])
    assert code == 2
    status = json.loads((tmp_path / "bad" / "status.json").read_text())
    assert status["state"] == "failed" and "2384.jpg" in status["error"]
    assert not (tmp_path / "bad" / "metrics.json").exists()


def test_mask_loss_and_distillation_ship_only_the_classifier(tmp_path, tiny_bundle):
    code = train_cli(
        ["--data", str(FIGSHARE), "--epochs", "1", "--val-fraction", "0", "--mask-loss", "0.5",
         "--teacher", str(tiny_bundle), "--hint-loss", "0.1", "--output", str(tmp_path), "--name", "aux", *TINY]
    )  # fmt: skip
    assert code == 0
    keys = safetensors.torch.load_file(tmp_path / "aux" / "model.safetensors").keys()
    assert not [k for k in keys if "mask_head" in k or "hint" in k]
    load_bundle(tmp_path / "aux")  # strict load: exactly the timm architecture


def test_an_ensemble_teacher_is_the_mean_of_its_members_softened_probabilities(tiny_bundle, tmp_path):
    from train.model import Teacher, Teachers
    from tumorlib import DataConfig, create_model, save_bundle

    torch.manual_seed(1)
    data = DataConfig(input_size=(3, 64, 64))
    other = create_model("test_resnet", num_classes=3, data=data).eval()
    labels = load_bundle(tiny_bundle).labels
    other = save_bundle(other, tmp_path / "other", label_names=labels[::-1], data=data)  # another class order
    x = torch.randn(4, 3, 64, 64)
    one = Teacher(str(tiny_bundle), labels, data, torch.device("cpu"))
    two = Teacher(str(other), labels, data, torch.device("cpu"))
    probs, features = Teachers([str(tiny_bundle), str(other)], labels, data, torch.device("cpu"))(x, 4.0)
    expected = (torch.softmax(one(x)[0] / 4.0, 1) + torch.softmax(two(x)[0] / 4.0, 1)) / 2
    assert torch.allclose(probs, expected, atol=1e-6) and features is None
    assert not torch.allclose(torch.softmax(one(x)[0] / 4.0, 1), torch.softmax(two(x)[0] / 4.0, 1))
    single, hint = Teachers([str(tiny_bundle)], labels, data, torch.device("cpu"))(x, 4.0)
    assert torch.equal(single, torch.softmax(one(x)[0] / 4.0, 1)) and hint.shape[1] == one.channels


def test_teacher_flags_replace_the_recipes_and_an_ensemble_has_no_hint_loss(tmp_path, capsys):
    recipe = tmp_path / "kd.yaml"
    recipe.write_text("data: [d]\nteacher: runs/a/fold{fold}/bundle\n")
    assert parse_args(["--config", str(recipe)]).teacher == "runs/a/fold{fold}/bundle"
    assert parse_args(["--config", str(recipe), "--teacher", "b"]).teacher == "b"
    assert parse_args(["--config", str(recipe), "--teacher", "b", "--teacher", "c"]).teacher == ["b", "c"]
    recipe.write_text("data: [d]\nteacher: [a, b]\n")
    assert parse_args(["--config", str(recipe)]).teacher == ["a", "b"]
    assert parse_args(["--data", "d"]).teacher is None
    with pytest.raises(SystemExit):
        parse_args(["--data", "d", "--teacher", "a", "--teacher", "b", "--hint-loss", "0.1"])
    assert "single --teacher" in capsys.readouterr().err


def test_output_stride_16_doubles_the_grad_cam_grid_and_travels_with_the_bundle(tmp_path):
    code = train_cli(
        ["--data", str(FIGSHARE), "--epochs", "1", "--val-fraction", "0", "--output-stride", "16", "--mask-loss", "0.5",
         "--output", str(tmp_path), "--name", "os16", *TINY]
    )  # fmt: skip
    assert code == 0
    bundle = load_bundle(tmp_path / "os16")
    assert bundle.config["model_args"] == {"output_stride": 16}
    clf = Classifier(bundle, variant="fp32")
    x = clf.transform(decode_image(FIGSHARE / "images" / "2384.jpg"))[None]
    assert tuple(clf.forward(x).maps.shape[-2:]) == (4, 4)  # 64 px / 16; stride 32 gives 2 x 2
    assert yaml.safe_load((tmp_path / "os16" / "config.yaml").read_text())["output_stride"] == 16


def test_yaml_config_and_flag_override(tmp_path):
    cfg = tmp_path / "recipe.yaml"
    cfg.write_text("data: [samples/figshare]\nepochs: 7\nlr: 0.01\nopt: sgd\n")
    args = parse_args(["--config", str(cfg), "--lr", "0.003"])
    assert args.epochs == 7 and args.opt == "sgd" and args.lr == 0.003 and args.data == ["samples/figshare"]
    cfg.write_text("data: [x]\nnot_an_option: 1\n")
    with pytest.raises(SystemExit):
        parse_args(["--config", str(cfg)])


@pytest.mark.parametrize("recipe", sorted((ROOT / "recipes").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_recipe_parses_and_names_weights_it_can_start_from(recipe):
    import timm

    from tumorlib.weights import OFFLINE_SOURCES

    args = parse_args(["--config", str(recipe), "--data", str(FIGSHARE)])
    assert args.model in timm.list_models() and args.epochs > 0 and args.input_size > 0
    if args.pretrained == "imagenet-offline":  # only these architectures have weights that install offline
        assert args.model in OFFLINE_SOURCES


def test_hub_weights_offline_fail_fast(tmp_path):
    start = time.time()
    code = train_cli(["--data", str(FIGSHARE), "--pretrained", "resnet50.tv_in1k", "--output", str(tmp_path), *TINY])
    assert code == 2 and time.time() - start < 30


def test_schedules():
    total, warm = 100, 10
    for sched in ("cosine", "onecycle", "constant"):
        values = [lr_factor(s, total, warm, sched, 0.01) for s in range(total)]
        assert max(values) <= 1.0 + 1e-9 and min(values) > 0
    cos = [lr_factor(s, total, warm, "cosine", 0.01) for s in range(total)]
    assert cos[9] == pytest.approx(1.0) and cos[-1] < 0.02


def test_time_left_is_the_remaining_epochs_at_the_median_epoch():
    history = [{"seconds": s} for s in (900.0, 600.0, 610.0, 3000.0)]  # a slow first epoch and a paused one
    assert time_left(history, 10) == ", ~1 h 16 min left"  # 6 epochs at the median 755 s
    assert time_left(history[:1], 2) == ", ~15 min left"
    assert time_left(history, 4) == "" and time_left([], 4) == ""


@pytest.mark.timeout(300)
def test_accelerate_two_cpu_processes(tmp_path):
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "train", "--data", str(FIGSHARE), "--epochs", "1",
           "--output", str(tmp_path), "--name", "ddp", *TINY]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "ddp" / "status.json").read_text())["state"] == "complete"
    m = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    with (tmp_path / "ddp" / "predictions.csv").open() as f:
        assert m["n"] == len(list(csv.DictReader(f))) > 0  # gathered from both processes, no duplicates
    load_bundle(tmp_path / "ddp")


def test_recalibrate_bn_is_the_float32_average_over_the_unaugmented_images():
    from train.engine import recalibrate_bn
    from tumorlib import DataConfig, create_model
    from tumorlib.torchdata import SliceDataset
    from tumorlib.transforms import create_transform

    records = read_datasets([FIGSHARE])[:8]
    labels = class_names(records)
    data = DataConfig(input_size=(3, 64, 64))
    model = create_model("test_resnet", num_classes=len(labels), data=data).eval()
    model.bn1.running_mean.fill_(5.0)  # statistics that have nothing to do with these images
    momentum = model.bn1.momentum
    assert recalibrate_bn(model, records, labels, data, batch_size=8) == sum(
        isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()
    )
    x = torch.stack([item["image"] for item in SliceDataset(records, labels, create_transform(data), cache=False)])
    with torch.no_grad():
        first = model.conv1(x)
    assert torch.allclose(model.bn1.running_mean, first.mean(dim=(0, 2, 3)), atol=5e-4)
    assert torch.allclose(model.bn1.running_var, first.var(dim=(0, 2, 3), unbiased=True), rtol=1e-3, atol=1e-4)
    assert not model.training and model.bn1.momentum == momentum


def test_a_single_run_with_recalibrate_bn_exports_and_scores_the_recalibrated_model(tmp_path):
    code = train_cli(["--data", str(FIGSHARE), "--data", str(FOLDERS), "--val-fraction", "0.5", "--epochs", "1",
                      "--recalibrate-bn", "--output", str(tmp_path), "--name", "r", *TINY])  # fmt: skip
    assert code == 0
    run = tmp_path / "r"
    from train.checkpoint import load_model_state

    trained = {k.removeprefix("model."): v for k, v in load_model_state(run / "checkpoint.safetensors").items()}
    exported = load_bundle(run).model.state_dict()
    assert not torch.allclose(trained["bn1.running_mean"], exported["bn1.running_mean"], atol=1e-3)
    assert torch.equal(trained["fc.weight"].half().float(), exported["fc.weight"])  # weights untouched
    records = read_datasets([FIGSHARE, FOLDERS])
    with (run / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    by_id = {r.id: r for r in records}
    clf = Classifier(load_bundle(run), variant="fp32")
    served = clf.logits(torch.stack([clf.preprocess(by_id[r["id"]].path) for r in rows]))
    recorded = torch.tensor([[float(r[f"logit_{c}"]) for c in clf.labels] for r in rows])
    assert torch.allclose(recorded, served, atol=0.02)  # the float16 export rounds the weights


def test_a_finished_fold_is_rescored_and_rechecked_when_the_recipe_recalibrates(cv_run, tmp_path):
    from accelerate import Accelerator

    from train.cv import add_fold_checks, rescore_fold
    from tumorlib.splits import make_folds

    fold = tmp_path / "fold0"
    shutil.copytree(cv_run / "fold0", fold)
    records = read_datasets([FIGSHARE, FOLDERS])
    folds = make_folds(records, 2, 0)
    test_r = [r for r, f in zip(records, folds, strict=True) if f == 0]
    train_r = [r for r, f in zip(records, folds, strict=True) if f != 0]
    args = parse_args(["--data", "x", *TINY, "--folds", "2", "--mask-loss", "0.5", "--recalibrate-bn"])
    rescore_fold(args, fold, test_r, class_names(records), Accelerator(cpu=True), train_r)
    m = json.loads((fold / "metrics.json").read_text())
    assert m["bn_recalibrated"] is True and m["precision"] == "fp32"
    assert "cam" not in m and "localiser" not in m  # checked on another model: redone below
    assert m["trained_on"] == json.loads((cv_run / "fold0" / "metrics.json").read_text())["trained_on"]  # kept
    add_fold_checks(args, fold, test_r, class_names(records), train_r)
    m = json.loads((fold / "metrics.json").read_text())
    assert m["cam"]["n"] == m["localiser"]["n"] > 0
    # the fold bundle the checks wrote is the recalibrated model that was scored
    _, served = _fold_logits_as_served(fold, records)
    assert torch.allclose(_recorded_logits(fold), served, atol=2e-5)
    assert not torch.allclose(_recorded_logits(cv_run / "fold0"), served, atol=1e-3)


# --- the weight average (--model-ema) and fine-tuning at another size (--finetune-size) ---------------------


def test_model_ema_is_updated_after_every_optimiser_step():
    from accelerate import Accelerator
    from timm.utils import ModelEmaV3
    from torch.utils.data import DataLoader

    from train.config import augment_config, data_config
    from train.engine import train_one_epoch
    from train.model import TrainModel, build_optimizer, make_ema
    from tumorlib import create_model
    from tumorlib.torchdata import SliceDataset
    from tumorlib.transforms import create_transform

    args = parse_args(["--data", "x", *TINY, "--max-steps-per-epoch", "3", "--model-ema", "0.9"])
    records = read_datasets([FIGSHARE])
    labels = class_names(records)
    torch.manual_seed(0)
    model = TrainModel(create_model("test_resnet", num_classes=len(labels)))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = build_optimizer(model, args)
    assert make_ema(model, 0.0) is None  # 0: off
    copy, average = ModelEmaV3(model, decay=0.0), make_ema(model, args.model_ema)
    steps = []

    class Both:  # one update call per optimiser step, passed on to both averages
        def update(self, net, step):
            steps.append(step)
            copy.update(net, step=step)
            average.update(net, step=step)

    ds = SliceDataset(records, labels, create_transform(data_config(args), augment_config(args)))
    loader = DataLoader(ds, batch_size=args.batch_size)
    _, step = train_one_epoch(model, loader, optimizer, Accelerator(cpu=True), 0, args, step=0, total_steps=3,
                              warmup_steps=0, progress=False, ema=Both())  # fmt: skip
    assert step == 3 and steps == [1, 2, 3]
    state = model.state_dict()
    assert all(torch.equal(copy.module.state_dict()[k], v) for k, v in state.items())  # decay 0: the model itself
    avg = average.module.state_dict()
    assert not torch.allclose(avg["model.conv1.0.weight"], state["model.conv1.0.weight"])
    assert not torch.allclose(avg["model.conv1.0.weight"], start["model.conv1.0.weight"])
    assert not torch.allclose(avg["model.bn1.running_mean"], state["model.bn1.running_mean"])  # buffers too


def test_one_process_can_train_at_one_precision_then_another():
    """accelerate's state is per process: a second run (train.stages, the tests) may want another precision."""
    from train.engine import make_accelerator

    for precision, mixed in [("fp32", "no"), ("bf16", "bf16"), ("fp32", "no")]:
        accelerator = make_accelerator(argparse.Namespace(precision=precision))
        assert accelerator.mixed_precision == mixed and accelerator.device.type in {"cpu", "cuda"}


@pytest.fixture(scope="module")
def ema_fold(tmp_path_factory) -> Path:
    """Fold 0 of a CV run trained in bf16 at 64 px, fine-tuned at 96 px, scored as its weight average."""
    out = tmp_path_factory.mktemp("runs")
    code = train_cli(
        ["--data", str(FIGSHARE), "--data", str(FOLDERS), "--folds", "2", "--fold", "0", "--epochs", "1",
         "--finetune-size", "96", "--finetune-epochs", "1", "--model-ema", "0.5", "--mask-loss", "0.5",
         "--precision", "bf16", "--max-steps-per-epoch", "2", "--output", str(out), "--name", "ft", *TINY]
    )  # fmt: skip
    assert code == 0
    return out / "ft" / "fold0"


def test_a_fold_fine_tuned_at_another_size_is_scored_and_exported_at_it(ema_fold):
    from train.checkpoint import load_model_state

    bundle = load_bundle(ema_fold / "bundle")
    assert bundle.config["pretrained_cfg"]["input_size"] == [3, 96, 96]
    assert bundle.data_config.input_size == (3, 96, 96)
    # The recorded scores are those of the exported fold model, served at 96 px in float32.
    records = read_datasets([FIGSHARE, FOLDERS])
    _, served = _fold_logits_as_served(ema_fold, records)
    assert torch.allclose(_recorded_logits(ema_fold), served, atol=2e-5)
    with (ema_fold / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert float(rows[1]["lr"]) == pytest.approx(1e-3 * 0.01)  # the schedule's floor: lr x min-lr-ratio
    # ... and they are the weight average's, not the raw model's
    average = load_model_state(ema_fold / "checkpoint.safetensors", average=True)
    raw = load_model_state(ema_fold / "checkpoint.safetensors")
    exported = bundle.model.state_dict()
    assert all(torch.equal(exported[k], average[f"model.{k}"]) for k in exported)
    assert not torch.allclose(exported["conv1.0.weight"], raw["model.conv1.0.weight"])


def test_a_resumed_run_restores_the_weight_average(tmp_path, monkeypatch):
    import train.engine

    common = ["--data", str(FIGSHARE), "--data", str(FOLDERS), "--val-fraction", "0.5", "--epochs", "1",
              "--finetune-size", "96", "--finetune-epochs", "1", "--model-ema", "0.9", "--max-steps-per-epoch", "2",
              "--output", str(tmp_path), *TINY]  # fmt: skip
    assert train_cli([*common, "--name", "straight"]) == 0

    real = train.engine.train_one_epoch

    def dies_in_the_second_epoch(*args, **kwargs):
        if args[4] == 1:  # the fine-tuning epoch: epoch 1's checkpoint is on disk
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train.engine, "train_one_epoch", dies_in_the_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_cli([*common, "--name", "killed"])
    monkeypatch.setattr(train.engine, "train_one_epoch", real)
    # A recipe without the average does not fit the checkpoint: refused, not silently restarted.
    no_ema = [a for a in common if a not in ("--model-ema", "0.9")]
    assert train_cli([*no_ema, "--name", "killed", "--resume"]) == 2
    assert train_cli([*common, "--name", "killed", "--resume"]) == 0

    a = safetensors.torch.load_file(tmp_path / "straight" / "model.safetensors")
    b = safetensors.torch.load_file(tmp_path / "killed" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ca = safetensors.torch.load_file(tmp_path / "straight" / "checkpoint.safetensors")
    cb = safetensors.torch.load_file(tmp_path / "killed" / "checkpoint.safetensors")
    ema = [k for k in ca if k.startswith("ema.")]
    assert ema and all(torch.allclose(ca[k].float(), cb[k].float(), atol=1e-6) for k in ema)
    assert load_bundle(tmp_path / "killed").config["pretrained_cfg"]["input_size"] == [3, 96, 96]
    pa = (tmp_path / "straight" / "predictions.csv").read_text()
    assert pa == (tmp_path / "killed" / "predictions.csv").read_text()


def test_fine_tuning_flags_are_checked():
    for bad in (["--finetune-size", "96"], ["--finetune-epochs", "2"], ["--model-ema", "1.0"]):
        with pytest.raises(SystemExit):
            parse_args(["--data", "x", *bad])


def test_cv_pools_cross_fitted_prediction_sets_and_ships_their_thresholds(cv_run):
    from train.conformal import conformal_metrics, read_run
    from tumorlib import conformal
    from tumorlib.calibration import softmax

    metrics = json.loads((cv_run / "metrics.json").read_text())
    labels, logits, y, folds = read_run(cv_run)
    fresh = json.loads(json.dumps(conformal_metrics(logits, y, folds, labels)))
    assert metrics["conformal"] == fresh["conformal"] and metrics["conformal_scores"] == fresh["conformal_scores"]
    assert {e["thresholds"] for e in metrics["conformal"]} == {"cross-fitted"}
    # The --final bundle carries thresholds fitted on the same out-of-fold slices as its temperature.
    bundle = load_bundle(cv_run)
    stored = bundle.section["conformal"]
    expected = conformal.fit(softmax(logits, bundle.temperature), y, labels)
    assert {k: v for k, v in stored.items() if k not in ("fitted_on", "temperature")} == expected
    prediction = Classifier(bundle, device="cpu", variant="fp32").predict(FIGSHARE / "images" / "2384.jpg", check=False)
    assert set(prediction.sets) == set(conformal.LEVELS) and prediction.label in prediction.sets[0.9]
    assert "## Prediction sets" in (cv_run / "README.md").read_text()


def test_each_fold_learns_from_the_teacher_that_held_out_its_patients(cv_run, tmp_path, capsys):
    assert (cv_run / "fold0" / "bundle" / "config.json").is_file()
    common = ["--data", str(FIGSHARE), "--data", str(FOLDERS), "--folds", "2", "--fold", "0", "--epochs", "1",
              "--max-steps-per-epoch", "1", "--no-cam", "--output", str(tmp_path), *TINY]  # fmt: skip
    per_fold = str(cv_run / "fold{fold}" / "bundle")
    assert train_cli([*common, "--teacher", per_fold, "--name", "kd"]) == 0
    # another split's teacher (here: another seed's folds) would have seen this fold's patients
    assert train_cli([*common, "--seed", "1", "--teacher", per_fold, "--name", "leak"]) == 2
    assert "held out other patients" in capsys.readouterr().err
    assert train_cli([*common, "--teacher", str(cv_run), "--name", "one"]) == 0
    assert "one teacher for every fold" in capsys.readouterr().err
    # The all-patient student learns from the all-patient teacher (cv_run itself, its --final model).
    everyone = [a for a in common if a not in ("--fold", "0")]
    assert train_cli([*everyone, "--teacher", per_fold, "--name", "kd", "--final", "--resume"]) == 0
    assert load_bundle(tmp_path / "kd").config["label_names"] == load_bundle(cv_run).config["label_names"]
    # An ensemble: every per-fold teacher is checked and mapped, the fixed one kept (with its warning).
    both = [*common, "--teacher", per_fold, "--teacher", str(cv_run), "--name", "ens"]
    assert train_cli(both) == 0 and "one teacher for every fold" in capsys.readouterr().err
    assert yaml.safe_load((tmp_path / "ens" / "config.yaml").read_text())["teacher"] == [per_fold, str(cv_run)]
    with (cv_run / "fold1" / "predictions.csv").open(newline="") as f:
        fold1 = [Record(r["id"], r["true_label"], r["patient"], Path("x")) for r in csv.DictReader(f)]
    assert fold_args(argparse.Namespace(teacher=[per_fold, str(cv_run)]), 1, fold1).teacher == [
        str(cv_run / "fold1" / "bundle"),
        str(cv_run),
    ]
    assert final_args(argparse.Namespace(teacher=[per_fold, "hub/id"])).teacher == [str(cv_run), "hub/id"]
    with pytest.raises(TumorlibError, match="cannot tell the teacher"):
        final_args(argparse.Namespace(teacher=str(cv_run / "fold{fold}")))
    with pytest.raises(TumorlibError, match="train it with --final first"):
        final_args(argparse.Namespace(teacher=str(tmp_path / "folds-only" / "fold{fold}" / "bundle")))
