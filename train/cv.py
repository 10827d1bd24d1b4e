"""Patient-grouped k-fold cross-validation: each fold's run and scores, its checks against the tumour masks,
and the pooled out-of-fold figures; finished folds are rescored or rechecked when the recipe asks for more."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from tumorlib import localise
from tumorlib import metrics as M
from tumorlib.bundle import create_model, load_bundle, save_bundle
from tumorlib.calibration import crossfit_probabilities, fit_temperature, softmax
from tumorlib.data import Record
from tumorlib.errors import TumorlibError
from tumorlib.fileio import load_json, save_json
from tumorlib.inference import Classifier
from tumorlib.patients import fold_summary
from tumorlib.results.names import HISTORY_CSV, METRICS_JSON, PREDICTIONS_CSV
from tumorlib.splits import make_folds
from tumorlib.torchdata import SliceDataset
from tumorlib.transforms import create_transform

from .checkpoint import CheckpointError, load_model_state
from .config import architecture_args, data_config
from .conformal import conformal_metrics, run_thresholds
from .engine import evaluate, fit, recalibrate_bn
from .evaluate import cam_report, localiser_report, tumour_free
from .gate import fit_bundle_gate
from .model import TrainModel, teacher_sources
from .runfiles import (
    CHECKPOINT,
    export_bundle,
    fold_metrics,
    read_history,
    read_predictions,
    training_machine,
    write_history,
    write_model_card,
    write_predictions,
)


def run_cross_validation(records, labels, args, run_dir: Path, accelerator, recipe) -> str:
    """Train and score each fold not yet complete, pool the out-of-fold figures, and with ``--final`` train and
    export the all-data model; returns the run's state ("complete" or "partial: ...")."""
    folds = make_folds(records, args.folds, args.seed)
    todo = [args.fold] if args.fold is not None else list(range(args.folds))
    for k in todo:
        fold_dir = run_dir / f"fold{k}"
        if (fold_dir / METRICS_JSON).exists():
            accelerator.print(f"[fold {k}] already complete")
            test_r = [r for r, f in zip(records, folds, strict=True) if f == k]
            train_r = [r for r, f in zip(records, folds, strict=True) if f != k]
            if accelerator.is_main_process:
                rescore_fold(args, fold_dir, test_r, labels, accelerator, train_r)
            if accelerator.is_main_process and not args.no_cam:
                add_fold_checks(args, fold_dir, test_r, labels, train_r)
            continue
        fold_dir.mkdir(parents=True, exist_ok=True)
        train_r = [r for r, f in zip(records, folds, strict=True) if f != k]
        test_r = [r for r, f in zip(records, folds, strict=True) if f == k]
        out = fit(train_r, test_r, labels, fold_args(args, k, test_r), fold_dir, accelerator, f"fold{k}")
        if accelerator.is_main_process:
            ordered = [test_r[i] for i in out["index"]]
            write_predictions(
                fold_dir / PREDICTIONS_CSV, ordered, labels, out["logits"], softmax(out["logits"]), out["labels"]
            )
            m = fold_metrics(out["logits"], out["labels"], [r.group for r in ordered], labels)
            m.update(
                fold=k,
                precision="fp32",
                bn_recalibrated=bool(args.recalibrate_bn),
                trained_on=training_machine(accelerator),
            )
            if not args.no_cam:
                m.update(fold_checks(out["model"], out["mask_head"], out["mask_stage"], args, fold_dir, test_r, labels))
            save_json(m, fold_dir / METRICS_JSON)  # written last: its presence marks the fold complete
        accelerator.wait_for_everyone()
    done = [k for k in range(args.folds) if (run_dir / f"fold{k}" / METRICS_JSON).exists()]
    if len(done) < args.folds:
        return f"partial: folds {done} of {args.folds} complete"
    if not accelerator.is_main_process:
        return "complete"
    temperature, metrics = aggregate_folds(run_dir, labels, args.folds)
    extra = {"training": recipe, "split": f"{args.folds}-fold cross-validation grouped by patient (seed {args.seed})"}
    if args.final:
        out = fit(records, [], labels, final_args(args), run_dir / "final", accelerator, "final")
        # The prediction sets' thresholds come from the same out-of-fold slices as the temperature.
        shipped = {**extra, "conformal": run_thresholds(run_dir, temperature)}
        export_bundle(
            out["model"], run_dir, labels, args, records, temperature, shipped, out["mask_head"], out["mask_stage"]
        )
        fit_bundle_gate(run_dir, records, None)
        write_model_card(run_dir, metrics, extra)
    return "complete"


def fold_args(args, k: int, test_records: list[Record]):
    """The recipe for fold ``k``: a ``--teacher`` naming ``{fold}`` becomes that fold's teacher.

    A teacher that trained on the fold's held-out patients would hand the student their answers and make
    its score meaningless, so a per-fold teacher must come from a cross-validation with the same folds:
    its ``predictions.csv`` (beside the bundle, as the trainer writes fold folders) must list exactly
    this fold's patients. A single teacher for every fold gets a warning: it is only fair if it never saw
    any of the data. Each teacher of an ensemble is checked alike."""
    teachers = teacher_sources(getattr(args, "teacher", None))
    if not teachers:
        return args
    ours = {r.group for r in test_records}
    chosen = [_fold_teacher(t, k, ours) for t in teachers]
    return argparse.Namespace(**{**vars(args), "teacher": chosen[0] if len(chosen) == 1 else chosen})


def _fold_teacher(teacher: str, k: int, patients: set[str]) -> str:
    if "{fold}" not in teacher:
        print(
            f"warning: one teacher for every fold ({teacher}): unless it was trained on none of these patients, "
            "the folds' scores are not those of unseen patients; use a per-fold teacher (PATH/fold{fold}/bundle)",
            file=sys.stderr,
        )
        return teacher
    path = Path(teacher.format(fold=k))
    held_out = path.parent / PREDICTIONS_CSV
    if not held_out.is_file():
        raise TumorlibError(
            f"The fold {k} teacher {path} has no {held_out.name} beside it: whom it held out is unknown."
        )
    with held_out.open(newline="", encoding="utf-8") as f:
        theirs = {row["patient"] for row in csv.DictReader(f)}
    if theirs != patients:
        raise TumorlibError(
            f"The fold {k} teacher {path} held out other patients than this fold ({len(theirs ^ patients)} differ): "
            "it must come from a cross-validation with the same data, --folds and --seed."
        )
    return str(path)


def final_args(args):
    """The recipe for the all-patient fit: a per-fold teacher ``RUN/fold{fold}/bundle`` becomes ``RUN``, the
    teacher's own ``--final`` model, so the student that sees every patient learns from the teacher that did."""
    teachers = teacher_sources(getattr(args, "teacher", None))
    if not any("{fold}" in t for t in teachers):
        return args
    chosen = [_final_teacher(t) for t in teachers]
    return argparse.Namespace(**{**vars(args), "teacher": chosen[0] if len(chosen) == 1 else chosen})


def _final_teacher(teacher: str) -> str:
    if "{fold}" not in teacher:
        return teacher
    path = Path(teacher)
    if path.name != "bundle" or path.parent.name != "fold{fold}":
        raise TumorlibError(
            f"--final cannot tell the teacher trained on every patient from {teacher}: "
            "a per-fold teacher is RUN/fold{fold}/bundle, and its all-patient model RUN."
        )
    run = path.parent.parent
    if not (run / "config.json").is_file():
        raise TumorlibError(
            f"The teacher's cross-validation {run} has no all-patient model: train it with --final first."
        )
    return str(run)


def fold_model(
    args,
    fold_dir: Path,
    labels: list[str],
    train_records: list[Record] | None = None,
    checkpoint: Path | None = None,
    average: bool | None = None,
) -> TrainModel:
    """The fold's model as scored (with its training heads; the weight average with ``--model-ema``) from
    its verified checkpoint (``checkpoint``, the fold's last by default; ``average`` overrides the recipe's
    choice of weights), float32, eval mode, with its BatchNorm statistics recalibrated on ``train_records``
    when the recipe asks for it (as fit does)."""
    net = create_model(args.model, len(labels), None, **architecture_args(args))
    model = TrainModel(net, mask_head=args.mask_loss > 0)
    average = bool(args.model_ema) if average is None else average
    own = load_model_state(checkpoint or fold_dir / CHECKPOINT, average=average)
    model.load_state_dict({k: v for k, v in own.items() if not k.startswith("hint.")}, strict=False)
    model = model.float().eval()
    if args.recalibrate_bn and train_records:
        data = data_config(args, net.pretrained_cfg.get("mean"), net.pretrained_cfg.get("std"))
        recalibrate_bn(model.model, train_records, labels, data, args.batch_size * 2, args.workers)
    return model


def rescore_fold(
    args, fold_dir: Path, test_records: list[Record], labels: list[str], accelerator, train_records=None
) -> None:
    """For a fold scored before its scores were float32 (bf16 autocast leaked into the final evaluation),
    or with other BatchNorm statistics than the recipe now asks for (``--recalibrate-bn``): score its
    held-out patients again from the fold checkpoint in float32, as served. A change of statistics also
    drops the fold's mask checks, so that they are redone on the model that is scored."""
    path = fold_dir / METRICS_JSON
    metrics = load_json(path)
    recalibrate = bool(args.recalibrate_bn)
    same_bn = bool(metrics.get("bn_recalibrated")) == recalibrate
    if (metrics.get("precision") == "fp32" and same_bn) or not (fold_dir / CHECKPOINT).exists():
        return
    try:
        model = fold_model(args, fold_dir, labels, train_records).model
    except CheckpointError as err:
        print(f"warning: {fold_dir.name} keeps its bf16 scores: {err}", file=sys.stderr)
        return
    rescored = score_fold_model(model, args, fold_dir, test_records, labels, accelerator)
    keys = ("fold", "trained_on", "cam", "localiser") if same_bn else ("fold", "trained_on")
    kept = {key: metrics[key] for key in keys if key in metrics}
    save_json({**rescored, **kept, "precision": "fp32", "bn_recalibrated": recalibrate}, path)
    print(
        f"[{fold_dir.name}] rescored in float32{' with recalibrated BatchNorm' if recalibrate else ''}: "
        f"accuracy {metrics['accuracy']:.4f} -> {rescored['accuracy']:.4f}",
        file=sys.stderr,
    )


def score_fold_model(
    model: nn.Module, args, fold_dir: Path, test_records: list[Record], labels: list[str], accelerator
) -> dict:
    """Score ``model`` on the fold's held-out patients in float32, as served; writes the fold's
    ``predictions.csv`` and returns its metrics (without the mask checks)."""
    data = data_config(args, model.pretrained_cfg.get("mean"), model.pretrained_cfg.get("std"))
    ds = SliceDataset(test_records, labels, create_transform(data), cache=False)
    ev = evaluate(
        model, DataLoader(ds, batch_size=args.batch_size * 2, num_workers=args.workers), accelerator, fp32=True
    )
    ordered = [test_records[i] for i in ev["index"]]
    write_predictions(fold_dir / PREDICTIONS_CSV, ordered, labels, ev["logits"], softmax(ev["logits"]), ev["labels"])
    return fold_metrics(ev["logits"], ev["labels"], [r.group for r in ordered], labels)


def fold_checks(
    model: nn.Module,
    mask_head: nn.Module | None,
    mask_stage: int | None,
    args,
    fold_dir: Path,
    test_records: list[Record],
    labels: list[str],
    want: tuple[str, ...] = ("cam", "localiser"),
) -> dict:
    """The fold's model on its held-out patients against their tumour masks: Grad-CAM (``cam``) and, when
    the recipe trains a mask head, the tumour localiser (``localiser``); only the keys in ``want``."""
    masked = [i for i, r in enumerate(test_records) if r.mask_path is not None or r.kind == "mat"]
    if not masked:
        return {}
    data = data_config(args, model.pretrained_cfg.get("mean"), model.pretrained_cfg.get("std"))
    model = model.float().to(memory_format=torch.contiguous_format).cpu().eval()
    bundle_dir = fold_dir / "bundle"
    save_bundle(
        model, bundle_dir, label_names=labels, data=data, dtype=torch.float32, model_args=architecture_args(args)
    )
    if mask_head is not None:
        localise.export(bundle_dir, mask_head, mask_stage, model)
    clf = Classifier(load_bundle(bundle_dir), device="cpu", variant="fp32")
    checks = {}
    if "cam" in want:
        preds = np.zeros(len(test_records), dtype=int)  # only used to caption exported overlays, none here
        checks["cam"] = cam_report(clf, test_records, masked, preds, "gradcam", None, 0, False)
    if "localiser" in want and mask_head is not None:
        checks["localiser"] = localiser_report(clf, test_records, masked, tumour_free(test_records))
    return checks


def add_fold_checks(
    args, fold_dir: Path, test_records: list[Record], labels: list[str], train_records: list[Record] | None = None
) -> None:
    """For a fold finished before the trainer made a check (Grad-CAM, the localiser): that check, from the
    fold checkpoint."""
    path = fold_dir / METRICS_JSON
    metrics = load_json(path)
    want = tuple(k for k in ("cam", "localiser") if k not in metrics and (k == "cam" or args.mask_loss > 0))
    if not want or not (fold_dir / CHECKPOINT).exists():
        return
    try:
        model = fold_model(args, fold_dir, labels, train_records)
    except CheckpointError as err:
        # The fold's predictions and metrics stand; only its checks against the masks are missing.
        print(f"warning: no mask checks for {fold_dir.name}: {err}", file=sys.stderr)
        return
    checks = fold_checks(model.model, model.mask_head, model.mask_index, args, fold_dir, test_records, labels, want)
    if checks:
        metrics.update(checks)
        save_json(metrics, path)


def aggregate_folds(run_dir: Path, labels: list[str], k: int) -> tuple[float, dict]:
    """Pool out-of-fold predictions: pooled metrics, per-fold metrics, mean ± std, the temperature, and the
    conformal prediction sets' cross-fitted coverage (each fold's sets from thresholds fitted on the others)."""
    preds = [read_predictions(run_dir / f"fold{f}" / PREDICTIONS_CSV, labels) for f in range(k)]
    logits = np.concatenate([p["logits"] for p in preds])
    y = np.concatenate([p["y"] for p in preds])
    groups = [g for p in preds for g in p["groups"]]
    ids = [i for p in preds for i in p["ids"]]
    paths = [i for p in preds for i in p["paths"]]
    fold_of = np.concatenate([np.full(len(p["y"]), f) for f, p in enumerate(preds)])
    probs, fold_temps = crossfit_probabilities(logits, y, fold_of)
    temperature = fit_temperature(logits, y)
    pooled = fold_metrics(logits, y, groups, labels, probs)
    folds = [load_json(run_dir / f"fold{f}" / METRICS_JSON) for f in range(k)]
    pooled["folds"] = folds
    pooled["cv_summary"] = M.summarize_folds(folds)
    per_patient = fold_summary(folds)
    if per_patient is not None:
        pooled["cv_summary"]["patient_level"] = per_patient
    if all(f.get("precision") == "fp32" for f in folds):
        pooled["precision"] = "fp32"
    cams = [f["cam"] for f in folds if f.get("cam") and f["cam"].get("n")]
    if cams:
        n = sum(c["n"] for c in cams)
        pooled["cam"] = {
            "pointing_game": sum(c["pointing_game"] * c["n"] for c in cams) / n,
            "energy_in_mask": sum(c["energy_in_mask"] * c["n"] for c in cams) / n,
            "n": n,
            "method": cams[0]["method"],
            "target": "true class, each fold's model on its held-out patients",
        }
        base = [c["baseline"] for c in cams if isinstance(c.get("baseline"), dict)]
        if len(base) == len(cams):
            pooled["cam"]["baseline"] = {
                key: sum(b[key] * c["n"] for b, c in zip(base, cams, strict=True)) / n
                for key in ("pointing_game", "energy_in_mask")
            } | {"how": base[0].get("how", "")}
        ceil = [
            c["ceiling"]
            for c in cams
            if isinstance(c.get("ceiling"), dict) and c["ceiling"].get("pointing_game") is not None
        ]
        if len(ceil) == len(cams):
            pooled["cam"]["ceiling"] = {
                "pointing_game": sum(e["pointing_game"] * c["n"] for e, c in zip(ceil, cams, strict=True)) / n,
                "grid": ceil[0].get("grid"),
            }
    locs = [f["localiser"] for f in folds if f.get("localiser") and f["localiser"].get("n")]
    if locs:
        pooled["localiser"] = pool_localiser(locs)
    pooled["temperature"] = temperature
    pooled["calibration"] = {
        "method": "temperature scaling, cross-fitted across folds",
        "fold_temperatures": fold_temps,
    }
    pooled.update(conformal_metrics(logits, y, fold_of, labels))
    save_json(pooled, run_dir / METRICS_JSON)
    recs = [
        Record(id=i, label=labels[t], group=g, path=Path(p)) for i, p, t, g in zip(ids, paths, y, groups, strict=True)
    ]
    write_predictions(run_dir / PREDICTIONS_CSV, recs, labels, logits, probs, y)
    rows = [r for f in range(k) for r in read_history(run_dir / f"fold{f}" / HISTORY_CSV)]
    write_history(run_dir / HISTORY_CSV, rows)
    return temperature, pooled


def pool_localiser(folds: list[dict]) -> dict:
    """The folds' localiser checks pooled over slices (each fold's model on its own held-out patients)."""
    n = sum(f["n"] for f in folds)
    keys = ("pointing_game", "energy_in_mask", "soft_dice", "peak")
    pooled = {key: sum(f[key] * f["n"] for f in folds) / n for key in keys}
    pooled.update(n=n, target="each fold's model on its held-out patients")
    pooled["baseline"] = {
        "pointing_game": sum(f["baseline"]["pointing_game"] * f["n"] for f in folds) / n,
        "how": folds[0]["baseline"]["how"],
    }
    neg = [f["no_tumor"] for f in folds if f["no_tumor"]["n"]]
    n_neg = sum(f["n"] for f in neg)
    pooled["no_tumor"] = {"peak": sum(f["peak"] * f["n"] for f in neg) / n_neg if n_neg else None, "n": n_neg}
    return pooled
