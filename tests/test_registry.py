"""Which models are on offer, and each loaded once."""

from __future__ import annotations

from pathlib import Path

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
