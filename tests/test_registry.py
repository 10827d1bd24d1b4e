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
