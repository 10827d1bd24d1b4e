"""Which models are on offer, and each loaded once."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tumorlib.errors import NoModelError
from tumorlib.registry import MODEL_ENV, ModelRegistry, ModelSpec, discover_models, specs_from


def _fake_bundle(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}", encoding="utf-8")
    return folder


def test_discovery_lists_bundles_default_first_and_env_model_in_front(tmp_path):
    models = tmp_path / "models"
    _fake_bundle(models / "zeta")
    _fake_bundle(models / "default")
    _fake_bundle(models / "alpha")
    (models / "not-a-bundle").mkdir()
    assert [s.name for s in discover_models(models, env_model="")] == ["default", "alpha", "zeta"]

    # A folder already under models/ moves to the front instead of appearing twice.
    specs = discover_models(models, env_model=str(models / "zeta"))
    assert [s.name for s in specs] == ["zeta", "default", "alpha"]

    # A Hub repo id (or folder elsewhere) becomes the default.
    specs = discover_models(models, env_model="someone/brain-mri-resnet50")
    assert specs[0] == ModelSpec("someone/brain-mri-resnet50", "someone/brain-mri-resnet50")
    assert len(specs) == 4

    other = _fake_bundle(tmp_path / "elsewhere" / "default")
    specs = discover_models(models, env_model=str(other))
    assert specs[0].source == str(other) and specs[0].name == "default (2)"
    assert discover_models(tmp_path / "missing", env_model="") == []


def test_discovery_reads_the_environment_variable(tmp_path, monkeypatch):
    _fake_bundle(tmp_path / "default")
    monkeypatch.setenv(MODEL_ENV, "org/model")
    assert [s.name for s in discover_models(tmp_path)] == ["org/model", "default"]


def test_each_model_loads_once_on_first_use(tiny_bundle):
    registry = ModelRegistry(specs_from([tiny_bundle, tiny_bundle]))
    assert registry.names == ["tiny", "tiny (2)"] and registry.default == "tiny"
    assert registry.loaded("tiny") is None
    name, clf = registry.get()
    assert name == "tiny" and registry.get("tiny")[1] is clf and registry.loaded("tiny") is clf
    with pytest.raises(NoModelError, match="Unknown model 'nope'"):
        registry.get("nope")
    with pytest.raises(NoModelError, match="No model is installed"):
        ModelRegistry([]).get()


def test_a_recorded_forward_pass_is_rechecked_not_remeasured(tiny_bundle, tmp_path, monkeypatch):
    import shutil

    from tumorlib import Classifier, explain, pipeline, registry
    from tumorlib.bundle import update_config
    from tumorlib.runtime import onnx_available

    if not onnx_available():
        pytest.skip("onnxruntime is not installed")
    monkeypatch.setenv("TUMORLIB_CACHE", str(tmp_path / "cache"))
    bundle = tmp_path / "tiny"
    shutil.copytree(tiny_bundle, bundle)
    record = registry.record_forward_pass(Classifier.from_pretrained(bundle, variant="fp32"))
    assert record["chosen"] in record["variants"] and record["variants"][record["chosen"]]["agrees"]
    assert len(record["recheck"]["probabilities"]) == registry.RECHECK_IMAGES
    update_config(bundle, forward_pass={**record, "chosen": "onnx"})  # ONNX keeps fp32's answers on it too

    measured = []
    monkeypatch.setattr(registry, "choose_variant", lambda clf: measured.append(clf))
    _, clf = ModelRegistry(specs_from([bundle]), optimise=True).get()
    assert clf.variant == "onnx" and clf.selection["recorded"] and not measured
    assert clf.bundle.model is None  # ONNX Runtime serves: one copy of the weights
    analysis = pipeline.analyse(clf, registry._ROOT / record["recheck"]["images"][0])
    cam = pipeline.gradcam(clf, analysis.working, analysis.top, analysis.maps)
    assert cam.explanation is not None and clf.bundle.model is None  # closed form: no eager model needed
    plus = explain.gradcam(clf, analysis.working, method="gradcam++")  # gradients: loaded again on demand
    assert plus.heatmap.shape == analysis.working.shape and clf.bundle.model is not None

    # Recorded answers this engine no longer gives (or another machine's record): measured again.
    wrong = [[1.0] + [0.0] * (len(row) - 1) for row in record["recheck"]["probabilities"]]
    update_config(bundle, forward_pass={**record, "recheck": {**record["recheck"], "probabilities": wrong}})
    ModelRegistry(specs_from([bundle]), optimise=True).get()
    update_config(bundle, forward_pass={**record, "machine": {"cpu": "another", "cores": 1, "isa": []}})
    ModelRegistry(specs_from([bundle]), optimise=True).get()
    assert len(measured) == 2


def _recorded_onnx_bundle(tiny_bundle: Path, tmp_path: Path, monkeypatch) -> tuple[Path, dict]:
    """A copy of the tiny bundle with a (random) tumour map on stage 3, whose recorded forward pass is
    ONNX, with its own export cache."""
    import shutil

    import torch

    from tumorlib import Classifier, load_bundle, localise, registry
    from tumorlib.bundle import update_config
    from tumorlib.runtime import onnx_available

    if not onnx_available():
        pytest.skip("onnxruntime is not installed")
    monkeypatch.setenv("TUMORLIB_CACHE", str(tmp_path / "cache"))
    bundle = tmp_path / "tiny"
    shutil.copytree(tiny_bundle, bundle)
    model = load_bundle(bundle).model
    torch.manual_seed(1)
    localise.export(bundle, torch.nn.Conv2d(model.feature_info[3]["num_chs"], 1, 1), 3, model)
    record = registry.record_forward_pass(Classifier.from_pretrained(bundle, variant="fp32"))
    update_config(bundle, forward_pass={**record, "chosen": "onnx"})
    return bundle, record


def test_a_second_start_serves_the_cached_export_without_building_the_model(tiny_bundle, tmp_path, monkeypatch):
    import timm

    from tumorlib import explain, pipeline, registry

    bundle, record = _recorded_onnx_bundle(tiny_bundle, tmp_path, monkeypatch)
    assert registry.serve_recorded(bundle) is None  # nothing exported yet: the usual load
    _, first = ModelRegistry(specs_from([bundle]), optimise=True).get()
    image = registry._ROOT / record["recheck"]["images"][0]
    expected = pipeline.analyse(first, image)

    def no_model(*args, **kwargs):
        raise AssertionError("the second start built the model")

    with monkeypatch.context() as patched:
        patched.setattr(timm, "create_model", no_model)
        _, second = ModelRegistry(specs_from([bundle]), optimise=True).get()
        got = pipeline.analyse(second, image)
    assert second.variant == "onnx" and second.selection["recorded"] and second.bundle.model is None
    assert got.probabilities == expected.probabilities and got.heatmap.kind == expected.heatmap.kind == "map"
    assert np.array_equal(got.heatmap.explanation.heatmap, expected.heatmap.explanation.heatmap)
    cams = [pipeline.gradcam(clf, a.working, a.top, a.maps) for clf, a in ((first, expected), (second, got))]
    assert np.array_equal(cams[0].explanation.heatmap, cams[1].explanation.heatmap)  # the head, from the file
    assert second.feature_info == [{k: f[k] for k in ("num_chs", "reduction", "module")} for f in first.feature_info]
    plus = explain.gradcam(second, got.working, method="gradcam++")  # gradients: the model is built on demand
    assert plus.heatmap.shape == got.working.shape and second.bundle.model is not None


def test_the_cached_export_is_not_served_when_anything_differs(tiny_bundle, tmp_path, monkeypatch):
    from tumorlib import registry
    from tumorlib.bundle import update_config
    from tumorlib.errors import BundleError

    bundle, record = _recorded_onnx_bundle(tiny_bundle, tmp_path, monkeypatch)
    ModelRegistry(specs_from([bundle]), optimise=True).get()
    assert registry.serve_recorded(bundle) is not None
    assert registry.serve_recorded(bundle, device="meta") is None  # the export runs on the CPU only
    notes = list((tmp_path / "cache" / "onnx").glob("bundle-*.json"))
    assert len(notes) == 1
    update_config(bundle, forward_pass={**record, "chosen": "fp32"})
    assert registry.serve_recorded(bundle) is None  # the bundle chose another pass
    update_config(bundle, forward_pass={**record, "machine": {"cpu": "another", "cores": 1, "isa": []}})
    assert registry.serve_recorded(bundle) is None
    update_config(bundle, forward_pass={**record, "chosen": "onnx"})
    export = tmp_path / "cache" / "onnx" / json.loads(notes[0].read_text())["onnx"]
    export.rename(export.with_suffix(".gone"))
    assert registry.serve_recorded(bundle) is None  # the export it names is gone
    export.with_suffix(".gone").rename(export)
    notes[0].write_text("{not json", encoding="utf-8")
    assert registry.serve_recorded(bundle) is None
    ModelRegistry(specs_from([bundle]), optimise=True).get()  # the usual load notes it again
    assert registry.serve_recorded(bundle) is not None
    weights = bundle / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + bytes(8))  # other weights: the export is not theirs
    assert registry.serve_recorded(bundle) is None
    with pytest.raises(BundleError, match="SHA-256"):
        ModelRegistry(specs_from([bundle]), optimise=True).get()


def test_the_app_serves_a_cached_export_without_importing_timm(tiny_bundle, tmp_path, monkeypatch):
    """What keeps the served process small: timm imports torchvision and torch._dynamo (~160 MB)."""
    import os
    import subprocess
    import sys

    bundle, _ = _recorded_onnx_bundle(tiny_bundle, tmp_path, monkeypatch)
    script = (
        "import sys, app\n"
        "from tumorlib.registry import ModelRegistry, specs_from\n"
        f"_, clf = ModelRegistry(specs_from([{str(bundle)!r}]), optimise=True).get()\n"
        "print(clf.variant, clf.bundle.model is None, 'timm' in sys.modules, 'torchvision' in sys.modules)\n"
    )
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "TUMORLIB_CACHE": str(tmp_path / "cache"), "GRADIO_ANALYTICS_ENABLED": "False"}
    runs = [subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True)]
    runs.append(subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True))
    for run in runs:
        assert run.returncode == 0, run.stderr[-2000:]
    assert runs[0].stdout.split()[:2] == ["onnx", "True"]  # the first start built the model, then let it go
    assert runs[1].stdout.split() == ["onnx", "True", "False", "False"]
