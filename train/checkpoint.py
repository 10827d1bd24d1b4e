"""Training checkpoints as safetensors: tensors in the file, everything else as JSON in its header.

No pickle anywhere, so a checkpoint from an untrusted source cannot run code; written atomically,
so a run killed mid-save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
from pathlib import Path

import safetensors
import safetensors.torch
import torch
from torch import nn

from tumorlib.bundle import save_tensors
from tumorlib.errors import TumorlibError


class CheckpointError(TumorlibError):
    """A checkpoint is damaged, truncated, or from another recipe."""


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    meta: dict,
) -> None:
    """Model and optimizer state, the torch RNG state and ``meta`` (epoch, step, history, ...)."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    plain_state: dict[str, dict] = {}
    for pid, state in opt["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{key}"] = value
            else:
                plain_state.setdefault(str(pid), {})[key] = value
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    header = {
        "meta": json.dumps(meta),
        "param_groups": json.dumps(opt["param_groups"]),
        "plain_state": json.dumps(plain_state),
    }
    save_tensors(tensors, path, metadata=header)


def load_checkpoint(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Restore model, optimizer and RNG state in place; return the saved ``meta``."""
    path = Path(path)
    try:
        with safetensors.safe_open(path, framework="pt") as f:
            header = f.metadata() or {}
        tensors = safetensors.torch.load_file(path)
        meta = json.loads(header["meta"])
        groups = json.loads(header["param_groups"])
        plain = json.loads(header["plain_state"])
    except (OSError, ValueError, KeyError, safetensors.SafetensorError) as err:
        raise CheckpointError(
            f"{path} is damaged or not a training checkpoint ({err}); delete it to restart."
        ) from None
    model_state = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(model_state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path} does not fit this model (another recipe?): {err}") from None
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for pid, values in plain.items():
        state.setdefault(int(pid), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return meta
