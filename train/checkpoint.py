"""Training checkpoints as safetensors: tensors in the file, everything else as JSON in its header.

No pickle anywhere, so a checkpoint from an untrusted source cannot run code; written atomically,
so a run killed mid-save leaves the previous checkpoint intact. The header carries a SHA-256 of every
tensor and header field, so a damaged file (a flipped bit safetensors itself would load) is refused on resume.
"""

from __future__ import annotations

import hashlib
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


#: The header field holding :func:`checkpoint_digest`.
DIGEST = "sha256"


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    meta: dict,
    ema: nn.Module | None = None,
) -> None:
    """Model and optimizer state, the torch RNG state and ``meta`` (epoch, step, history, ...); with ``ema``,
    the weight average's state too."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
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
    header[DIGEST] = checkpoint_digest(tensors, header)
    save_tensors(tensors, path, metadata=header)


def checkpoint_digest(tensors: dict[str, torch.Tensor], header: dict[str, str]) -> str:
    """SHA-256 over the header fields (but the digest) and every tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256()
    for key in sorted(k for k in header if k != DIGEST):
        h.update(f"{key}={header[key]}|".encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def _read_verified(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """Header and tensors of a checkpoint whose SHA-256 matches; CheckpointError otherwise."""
    try:
        with safetensors.safe_open(path, framework="pt") as f:
            header = f.metadata() or {}
        tensors = safetensors.torch.load_file(path)
    except (OSError, ValueError, safetensors.SafetensorError) as err:
        raise CheckpointError(
            f"{path} is damaged or not a training checkpoint ({err}); delete it to restart."
        ) from None
    expected = header.get(DIGEST)  # absent in checkpoints written before it was recorded
    if expected is not None and checkpoint_digest(tensors, header) != expected:
        raise CheckpointError(
            f"{path} is damaged: its contents do not match the SHA-256 in its header; delete it to restart."
        )
    return header, tensors


def load_model_state(path: str | Path, average: bool = False) -> dict[str, torch.Tensor]:
    """Only the model's weights (training heads included) from a verified checkpoint; with ``average``,
    those of its weight average (``--model-ema``)."""
    _, tensors = _read_verified(Path(path))
    prefix = "ema." if average else "model."
    state = {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
    if average and not state:
        raise CheckpointError(f"{path} holds no weight average (trained without --model-ema?).")
    return state


def load_checkpoint(
    path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, ema: nn.Module | None = None
) -> dict:
    """Restore model, optimizer, weight average (``ema``) and RNG state in place; return the saved ``meta``."""
    path = Path(path)
    header, tensors = _read_verified(path)
    try:
        meta = json.loads(header["meta"])
        groups = json.loads(header["param_groups"])
        plain = json.loads(header["plain_state"])
        rng = tensors["rng.torch"]
    except (ValueError, KeyError) as err:
        raise CheckpointError(
            f"{path} is damaged or not a training checkpoint ({err}); delete it to restart."
        ) from None
    model_state = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    ema_state = {k.removeprefix("ema."): v for k, v in tensors.items() if k.startswith("ema.")}
    if bool(ema_state) != (ema is not None):
        held = "holds a weight average" if ema_state else "holds no weight average"
        raise CheckpointError(f"{path} {held}, unlike this recipe (--model-ema): another recipe?")
    try:
        model.load_state_dict(model_state, strict=True)
        if ema is not None:
            ema.load_state_dict(ema_state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path} does not fit this model (another recipe?): {err}") from None
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for pid, values in plain.items():
        state.setdefault(int(pid), {}).update(values)
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
        torch.set_rng_state(rng)
    except (ValueError, RuntimeError, TypeError) as err:
        raise CheckpointError(f"{path} does not fit this optimizer (another recipe?): {err}") from None
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return meta
