"""``--pretrained`` from the Hugging Face Hub: a run starts from exactly the weights served, with a new head.

A local server speaking the Hub's HTTP API (tests/hub_server.py) publishes stand-in ImageNet weights as
``timm/resnet50.tv_in1k`` (what the trainer's tag ``resnet50.tv_in1k`` resolves to through timm's own
pretrained config) and ``timm/resnet50.a1_in1k`` (``hf-hub:`` ids read the repo's config.json first). They
are a real ResNet-50's tensors, every name and shape timm expects and a 1000-class head, with seeded
random values: the code path is the one real weights take; nothing is downloaded. Values are rounded to
float16 so that the float16 bundle holds them exactly.

huggingface_hub reads ``HF_ENDPOINT`` when it is imported, so the runs happen in a subprocess (as in
test_push.py) that calls the trainer's ``main(parse_args([...]))``. ``--epochs 0``: the exported bundle
is the model as the run starts, before any step changes it.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys

import pytest
import safetensors.torch
import timm
import torch

from tumorlib import load_bundle

from .conftest import FIGSHARE, ROOT
from .hub_server import FakeHub

RECIPE = ROOT / "recipes" / "resnet50-imagenet.yaml"
# 64 px and two images a batch keep a ResNet-50 cheap on two cores; --epochs 0 trains nothing.
SMALL = ["--data", str(FIGSHARE), "--epochs", "0", "--val-fraction", "0", "--input-size", "64", "--batch-size", "2",
         "--no-progress", "--threads", "1"]  # fmt: skip
RUN = """
import json, sys
from train.train import main, parse_args
for argv in json.loads(sys.argv[1]):
    assert main(parse_args(argv)) == 0
"""
A1_CONFIG = {
    "architecture": "resnet50",
    "num_classes": 1000,
    "num_features": 2048,
    "pretrained_cfg": {
        "tag": "a1_in1k",
        "custom_load": False,
        "input_size": [3, 224, 224],
        "test_input_size": [3, 288, 288],
        "fixed_input_size": False,
        "interpolation": "bicubic",
        "crop_pct": 0.95,
        "test_crop_pct": 1.0,
        "crop_mode": "center",
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "num_classes": 1000,
        "pool_size": [7, 7],
        "first_conv": "conv1",
        "classifier": "fc",
    },
}


def stand_in(seed: int) -> dict[str, torch.Tensor]:
    """A ResNet-50 state dict as timm names it, 1000 classes, every value seeded and float16-exact."""
    torch.manual_seed(seed)
    state = timm.create_model("resnet50", num_classes=1000).state_dict()
    out = {}
    for name, value in state.items():
        if name.endswith("num_batches_tracked"):
            out[name] = torch.full_like(value, 1000 + seed)
        elif name.endswith("running_var"):
            out[name] = 0.5 + torch.rand_like(value)
        elif not name.startswith("fc.") and (name.endswith(".weight") and value.ndim == 1):  # norm scales
            out[name] = 1.0 + 0.1 * torch.randn_like(value)
        else:  # convolutions keep timm's initialisation; norm shifts, running means, the head drawn anew
            out[name] = value + 0.05 * torch.randn_like(value)
        out[name] = out[name].half().float() if out[name].is_floating_point() else out[name]
    return out


@pytest.fixture(scope="module")
def hub_runs(tmp_path_factory):
    """(runs folder, stand-in weights by repo, the server) after one run from each pretrained source."""
    root = tmp_path_factory.mktemp("pretrained")
    weights = {"timm/resnet50.tv_in1k": stand_in(1), "timm/resnet50.a1_in1k": stand_in(2)}
    with FakeHub(root / "hub", secrets.token_hex(8)) as hub:
        tv = safetensors.torch.save(weights["timm/resnet50.tv_in1k"])
        hub.add_model("timm/resnet50.tv_in1k", {"model.safetensors": tv})
        hub.add_model(
            "timm/resnet50.a1_in1k",
            {
                "config.json": json.dumps(A1_CONFIG).encode(),
                "model.safetensors": safetensors.torch.save(weights["timm/resnet50.a1_in1k"]),
            },
        )
        out = root / "runs"
        runs = [
            ["--config", str(RECIPE), *SMALL, "--output", str(out), "--name", "tv"],
            ["--model", "resnet50", "--pretrained", "hf-hub:timm/resnet50.a1_in1k", *SMALL, "--output", str(out),
             "--name", "a1"],
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
        env.update(HF_ENDPOINT=hub.url, HF_HOME=str(root / "hf-home"), HF_HUB_OFFLINE="0", HF_HUB_DISABLE_XET="1",
                   HF_HUB_DISABLE_TELEMETRY="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))  # fmt: skip
        proc = subprocess.run([sys.executable, "-c", RUN, json.dumps(runs)], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=500, check=False)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert hub.unhandled == []
        yield out, weights, hub


@pytest.mark.parametrize(("run", "repo"), [("tv", "timm/resnet50.tv_in1k"), ("a1", "timm/resnet50.a1_in1k")])
def test_a_run_starts_from_exactly_the_hub_weights_with_a_new_head(hub_runs, run, repo):
    out, weights, hub = hub_runs
    served = weights[repo]
    bundle = load_bundle(out / run)
    labels = bundle.labels
    assert bundle.config["architecture"] == "resnet50" and len(labels) == 3
    state = bundle.model.state_dict()
    assert set(state) == set(served)
    backbone = [k for k in served if not k.startswith("fc.")]
    unequal = [k for k in backbone if not torch.equal(state[k], served[k])]
    assert len(backbone) == 318 and unequal == []  # every tensor of the backbone, buffers included
    # A head for our classes, initialised afresh: not the first rows of the ImageNet one.
    assert state["fc.weight"].shape == (len(labels), 2048)
    assert not torch.allclose(state["fc.weight"], served["fc.weight"][: len(labels)].half().float(), atol=1e-3)
    assert bundle.config["pretrained_cfg"]["input_size"] == [3, 64, 64]  # our size, not the checkpoint's
    assert hub.requests_to(f"/{repo}/resolve/main/model.safetensors", "GET")
    other = "timm/resnet50.a1_in1k" if run == "tv" else "timm/resnet50.tv_in1k"
    assert not any(torch.equal(state[k], weights[other][k]) for k in ("conv1.weight", "layer4.2.conv3.weight"))


def test_the_recipe_is_the_papers_transfer_learning(hub_runs):
    out, _, _ = hub_runs
    training = load_bundle(out / "tv").section["training"]
    assert training["pretrained"] == "resnet50.tv_in1k" and training["model"] == "resnet50"
    assert training["opt"] == "adamw" and training["lr"] <= 1e-3
    assert (training["hflip"], training["rotate"]) == (0.5, 15.0)
    assert training["scale"] == [1.0, 1.0] and training["translate"] == training["contrast"] == 0.0


def test_the_recipe_trains_at_224_px():
    from train.train import parse_args

    args = parse_args(["--config", str(RECIPE), "--data", "x"])
    assert (args.model, args.pretrained, args.input_size) == ("resnet50", "resnet50.tv_in1k", 224)
    assert args.model_ema == 0.0 and args.finetune_epochs == 0
