"""Shared fixtures: the real sample slices committed under samples/, and a tiny timm model bundle."""

from __future__ import annotations

import math
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings
from PIL import Image

# Tests never touch the network: huggingface_hub reads these at import.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

# CI draws the same examples on every run (a failure there reproduces); a developer's run explores anew.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("dev")
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
FIGSHARE = SAMPLES / "figshare"
FOLDERS = SAMPLES / "class_folders"
LABELS3 = ["glioma", "meningioma", "pituitary"]
#: The cross-validation behind each bundled model (its figures, temperature and prediction-set thresholds).
SHIPPED_RUNS = {"default": "r50-ema-kd-4c", "mobilenetv2": "mnv2-4c-cv"}


@pytest.fixture(scope="session")
def slice_path() -> Path:
    """A real 512x512 T1-CE glioma slice from the Cheng figshare data."""
    return FIGSHARE / "images" / "2384.jpg"


@pytest.fixture(scope="session")
def slice_u8(slice_path) -> np.ndarray:
    with Image.open(slice_path) as im:
        return np.asarray(im.convert("L"))


@pytest.fixture(scope="session")
def sample_paths() -> list[Path]:
    """Every committed sample image: tumour slices of each class and no-tumour slices."""
    return sorted((FIGSHARE / "images").glob("*.jpg")) + sorted((FOLDERS / "no_tumor").glob("*.jpg"))


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A bundle of timm's 'test_resnet' (random weights, 64 px input): real code paths, fast."""
    import torch

    from tumorlib import DataConfig, create_model, save_bundle

    torch.manual_seed(0)
    data = DataConfig(input_size=(3, 64, 64))
    model = create_model("test_resnet", num_classes=3, data=data)
    # Random BN statistics make logits tiny; a few train-mode passes give them real values.
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 3, 64, 64))
    model.eval()
    return save_bundle(model, tmp_path_factory.mktemp("bundle") / "tiny", label_names=LABELS3, data=data)


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (apt-get install chromium)"
)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def numbers_of(obj) -> list[float]:
    """Every finite number anywhere in a nested dict/list."""
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in numbers_of(v)]
    if isinstance(obj, list):
        return [x for v in obj for x in numbers_of(v)]
    if isinstance(obj, (int, float)) and not isinstance(obj, bool) and math.isfinite(obj):
        return [float(obj)]
    return []
