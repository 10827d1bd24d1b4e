"""The files of a run folder: history and predictions CSVs, status, the resolved recipe, the bundle and its card."""

from __future__ import annotations

import argparse
import csv
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from tumorlib import localise
from tumorlib import metrics as M
from tumorlib.bundle import load_bundle, save_bundle, update_config
from tumorlib.calibration import softmax
from tumorlib.data import Record
from tumorlib.errors import TumorlibError
from tumorlib.fileio import atomic_write_text, load_json, save_json
from tumorlib.inference import check_bf16
from tumorlib.patients import OUT_OF_FOLD, patient_level
from tumorlib.results.names import RUN_CONFIG, STATUS_JSON
from tumorlib.runtime import machine_signature

from .config import architecture_args, data_config

#: The training checkpoint of a run or fold folder (model, optimiser, weight average, RNG, history).
CHECKPOINT = "checkpoint.safetensors"
# The state at the end of the main schedule, kept when fine-tuning follows: both stages can then be scored.
MAIN_CHECKPOINT = "checkpoint-main.safetensors"
HISTORY_COLUMNS = ["epoch", "fold", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]


def write_history(path: Path, rows: list[dict]) -> None:
    """One row per epoch (and fold): losses, accuracies, learning rate, seconds."""
    lines = [",".join(HISTORY_COLUMNS)]
    for r in rows:
        lines.append(",".join("" if r.get(c) is None else str(r[c]) for c in HISTORY_COLUMNS))
    atomic_write_text(path, "\n".join(lines) + "\n")


def read_history(path: Path) -> list[dict]:
    """The rows of a history.csv, as strings."""
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def write_predictions(
    path: Path, records: list[Record], labels: list[str], logits: np.ndarray, probs: np.ndarray, y: np.ndarray
) -> None:
    """One row per image: id, file, patient, true and predicted label, served probabilities, raw logits."""
    header = ["id", "path", "patient", "true_label", "pred_label"]
    header += [f"prob_{c}" for c in labels] + [f"logit_{c}" for c in labels]
    lines = [",".join(header)]
    for rec, z, p, t in zip(records, logits, probs, y, strict=True):
        cells = [rec.id, str(rec.path), rec.group, labels[int(t)], labels[int(np.argmax(p))]]
        cells += [f"{v:.6f}" for v in p] + [f"{v:.6f}" for v in z]
        lines.append(",".join(_csv_cell(c) for c in cells))
    atomic_write_text(path, "\n".join(lines) + "\n")


def _csv_cell(value: str) -> str:
    return f'"{value}"' if any(ch in value for ch in ',"\n') else value


def read_predictions(path: Path, labels: list[str]) -> dict:
    """Ids, paths, patients, true class indices and raw logits of a predictions.csv."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return {
        "ids": [r["id"] for r in rows],
        "paths": [r["path"] for r in rows],
        "groups": [r["patient"] for r in rows],
        "y": np.array([labels.index(r["true_label"]) for r in rows]),
        "logits": np.array([[float(r[f"logit_{c}"]) for c in labels] for r in rows]),
    }


def fold_metrics(
    logits: np.ndarray, y: np.ndarray, groups: list[str], labels: list[str], probs: np.ndarray | None = None
) -> dict:
    """The metrics.json figures of a set of logits (``probs``: calibrated probabilities, if fitted), with the
    answers per patient where the slices carry patient ids (every slice pooled: held-out predictions of
    training carry no verdicts of the not-an-MRI check)."""
    uncal = softmax(logits)
    served = uncal if probs is None else probs
    metrics = M.compute_metrics(y, served, labels, groups, probs_uncalibrated=uncal)
    per_patient = patient_level(y, served, labels, groups, accepted_note=OUT_OF_FOLD)
    if per_patient is not None:
        metrics["patient_level"] = per_patient
    return metrics


def training_machine(accelerator) -> dict:
    """What a fold's training ran on: the CPU (model, cores, vector extensions), the GPU if any, and the
    precision "auto" resolved to there. Speed and numerics depend on all three, so a run whose folds ran
    on different machines says so fold by fold."""
    cuda = accelerator.device.type == "cuda"
    return {
        **machine_signature(),
        "gpu": torch.cuda.get_device_name(accelerator.device) if cuda else None,
        "mixed_precision": accelerator.mixed_precision,
    }


def resolved_config(args: argparse.Namespace) -> dict:
    """Every option of the run as plain values, and the environment it ran in."""
    cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()}
    cfg["_environment"] = {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "threads": torch.get_num_threads(),
        "host_cpu_count": os.cpu_count(),
        "cuda": torch.cuda.is_available(),
        **{k: v for k, v in machine_signature().items() if k != "cores"},  # cores: host_cpu_count
    }
    return cfg


def write_run_config(run_dir: Path, config: dict) -> None:
    """The run's ``config.yaml``: its options in the order the trainer gave them."""
    atomic_write_text(run_dir / RUN_CONFIG, yaml.safe_dump(config, sort_keys=False))


def read_run_config(run: Path) -> dict:
    """The options a run folder was trained with; a folder without them is refused by name."""
    path = Path(run) / RUN_CONFIG
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TumorlibError(f"{path} is missing: {run} is not a run folder of the trainer.") from None
    except yaml.YAMLError as e:
        raise TumorlibError(f"{path} is not readable YAML ({e}).") from None
    if not isinstance(config, dict):
        raise TumorlibError(f"{path} holds no options (a mapping was expected).")
    return config


def export_bundle(
    model: nn.Module,
    out_dir: Path,
    labels: list[str],
    args: argparse.Namespace,
    records: list[Record],
    temperature: float,
    extra: dict,
    mask_head: nn.Module | None = None,
    mask_stage: int | None = None,
) -> None:
    """Save the bundle (with the mask head as its tumour localiser, if trained) and record whether bf16
    inference agrees with fp32 on a few of the run's images."""
    data = data_config(args, model.pretrained_cfg.get("mean"), model.pretrained_cfg.get("std"))
    model = model.float().to(memory_format=torch.contiguous_format).cpu().eval()
    save_bundle(
        model,
        out_dir,
        label_names=labels,
        data=data,
        temperature=temperature,
        extra=extra,
        model_args=architecture_args(args),
    )
    if mask_head is not None:
        localise.export(out_dir, mask_head, mask_stage, model)
    check_images = [r.path for r in records[:: max(1, len(records) // 16)][:16] if r.kind == "file"]
    if check_images:
        update_config(out_dir, inference=check_bf16(load_bundle(out_dir), check_images))


def write_model_card(run_dir: Path, metrics: dict | None, extra: dict) -> None:
    """The run folder's README.md: the bundle's model card."""
    try:
        from tumorlib.modelcard import model_card
    except ImportError:  # the model card module ships with the Hub tooling
        return
    config = load_json(run_dir / "config.json")
    atomic_write_text(run_dir / "README.md", model_card(config, metrics, extra=extra))


def set_status(run_dir: Path, state: str, **info) -> None:
    """status.json: running, complete, partial or failed, with when and why."""
    save_json({"state": state, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **info}, run_dir / STATUS_JSON)
