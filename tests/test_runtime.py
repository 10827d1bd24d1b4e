"""Forward-pass variants: one pass gives logits, features and maps; faster variants only if they agree."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tumorlib import DEFAULT_MODEL_DIR, Classifier
from tumorlib import runtime as rt
from tumorlib.explain import cam_tensor, gradcam, linear_head
from tumorlib.gate import SCORE_TOLERANCE, has_gate

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TUMORLIB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_one_pass_matches_the_model(tiny_bundle, sample_paths):
    clf = Classifier.from_pretrained(tiny_bundle, variant="fp32")
    x = torch.stack([clf.preprocess(p) for p in sample_paths[:3]])
    out = clf.forward(x)
    with torch.inference_mode():
        assert torch.allclose(out.logits, clf.model(x), atol=1e-5)
        pooled = clf.model.forward_head(clf.model.forward_features(x), pre_logits=True)
    assert torch.allclose(out.features, pooled, atol=1e-5)
    assert out.maps.shape[:2] == (3, out.features.shape[1]) and out.maps.ndim == 4


def test_onnx_export_is_cached_and_agrees(tiny_bundle, sample_paths, cache):
    clf = Classifier.from_pretrained(tiny_bundle, variant="fp32")
    x = torch.stack([clf.preprocess(p) for p in sample_paths[:5]])
    ref = clf.forward(x)
    clf.use("onnx")
    got = clf.forward(x)
    for a, b in zip(ref, got, strict=True):
        assert torch.allclose(a, b, atol=1e-4)
    exports = list((cache / "onnx").glob("*.onnx"))
    assert len(exports) == 1
    stamp = exports[0].stat().st_mtime_ns
    clf.use("onnx")  # a second start reuses the export
    assert exports[0].stat().st_mtime_ns == stamp and len(list((cache / "onnx").glob("*"))) == 1


def test_export_key_changes_with_the_weights(tiny_bundle):
    clf = Classifier.from_pretrained(tiny_bundle, variant="fp32")
    key = rt._model_key(clf.model, clf.size)
    with torch.no_grad():
        next(clf.model.parameters()).add_(1e-3)
    assert rt._model_key(clf.model, clf.size) != key


def test_optimise_keeps_only_agreeing_variants(tiny_bundle, sample_paths, cache, monkeypatch):
    clf = Classifier.from_pretrained(tiny_bundle, variant="fp32")
    reference = clf.predict_batch(sample_paths)
    sel = clf.optimise(sample_paths[:6], candidates=("fp32", "channels_last", "onnx"), repeats=2)
    assert sel["chosen"] == clf.variant and sel["variants"]["fp32"]["agrees"]
    chosen = sel["variants"][sel["chosen"]]
    assert chosen["agrees"] and all(chosen["ms"] <= v["ms"] for v in sel["variants"].values() if v.get("agrees"))
    for ref, got in zip(reference, clf.predict_batch(sample_paths), strict=True):
        assert max(abs(ref[k] - got[k]) for k in ref) <= rt.TOLERANCE

    # A variant that changes the answers is never chosen, however fast.
    class Wrong(rt.Engine):
        name = "channels_last"

        def __call__(self, batch):
            out = rt.EagerEngine(clf.model, clf.device)(batch)
            return out._replace(logits=-out.logits)

    real = rt.make_engine
    monkeypatch.setattr(
        "tumorlib.inference.make_engine", lambda v, *a, **k: Wrong() if v == "channels_last" else real(v, *a, **k)
    )
    sel = clf.optimise(sample_paths[:6], candidates=("fp32", "channels_last"), repeats=2)
    assert sel["variants"]["channels_last"]["agrees"] is False and sel["chosen"] == "fp32"


def test_optimise_keeps_the_gates_answers_too(sample_paths, monkeypatch):
    """A variant with fp32's probabilities but other gate features is not chosen: the shipped ResNet-50's
    int8 export did that, and the app then refused real slices as not MRI."""
    clf = Classifier.from_pretrained(DEFAULT_MODEL_DIR, variant="fp32")
    assert has_gate(clf)

    class Drifted(rt.Engine):
        name = "channels_last"

        def __call__(self, batch):
            out = rt.EagerEngine(clf.model, clf.device)(batch)
            return out._replace(stages=out.stages * 1.3)

    real = rt.make_engine
    monkeypatch.setattr(
        "tumorlib.inference.make_engine", lambda v, *a, **k: Drifted() if v == "channels_last" else real(v, *a, **k)
    )
    sel = clf.optimise(sample_paths[:6], candidates=("fp32", "channels_last"), repeats=1)
    drifted = sel["variants"]["channels_last"]
    assert drifted["max_abs_diff"] == 0 and drifted["gate_max_abs_diff"] > SCORE_TOLERANCE
    assert drifted["agrees"] is False and sel["chosen"] == "fp32"
    assert sel["variants"]["fp32"]["gate_max_abs_diff"] == 0


def test_a_broken_runtime_falls_back(tiny_bundle, sample_paths, monkeypatch):
    clf = Classifier.from_pretrained(tiny_bundle, variant="fp32")
    real = rt.make_engine

    def broken(variant, *args, **kwargs):
        if variant == "channels_last":
            raise RuntimeError("no such kernel")
        return real(variant, *args, **kwargs)

    monkeypatch.setattr("tumorlib.inference.make_engine", broken)
    sel = clf.optimise(sample_paths[:3], candidates=("fp32", "channels_last"), repeats=1)
    assert "no such kernel" in sel["variants"]["channels_last"]["error"] and sel["chosen"] == "fp32"


def test_unknown_variant_is_refused(tiny_bundle):
    with pytest.raises(ValueError, match="Unknown variant"):
        Classifier.from_pretrained(tiny_bundle, variant="fp8")


def test_closed_form_gradcam_equals_autograd(tiny_bundle, sample_paths):
    clf = Classifier.from_pretrained(tiny_bundle, variant="fp32")
    assert linear_head(clf.model) is not None  # timm ResNet: average pool + fc
    for path in sample_paths[:4]:
        x = clf.preprocess(path)[None]
        for target in range(len(clf.labels)):
            ref, _ = cam_tensor(clf.model, x, target)
            fast = gradcam(clf, path, target=target)
            slow_map = ref / ref.max() if ref.max() > 0 else ref
            cam = fast.heatmap
            assert cam.shape[:2] == clf.transform.to_image_frame(np.zeros(clf.size, np.float32), fast.image).shape
            # Same map before resizing: compare at feature resolution through the closed form.
            maps = clf.forward(x).maps
            w, _ = linear_head(clf.model)
            closed = torch.relu(torch.einsum("k,khw->hw", w[target], maps[0])).numpy()
            closed = closed / closed.max() if closed.max() > 0 else closed
            assert np.allclose(closed, slow_map, atol=1e-4)


def test_a_nonlinear_head_uses_autograd():
    import timm

    model = timm.create_model("test_resnet", num_classes=3)
    model.fc = torch.nn.Sequential(torch.nn.Linear(model.num_features, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    model.get_classifier = lambda: model.fc
    assert linear_head(model.eval()) is None


def test_every_engine_reports_the_early_stages_the_gate_reads(tiny_bundle, sample_paths):
    clf = Classifier.from_pretrained(tiny_bundle, variant="fp32")
    x = torch.stack([clf.preprocess(p) for p in sample_paths[:3]])
    heads = rt.Heads(clf.model)
    reference = clf.forward(x)
    assert reference.stages.shape == (3, sum(heads.stage_widths())) and len(heads.stage_widths()) == rt.EARLY_STAGES
    with torch.inference_mode():
        _, (grid,) = clf.model.forward_intermediates(x, indices=[heads.grid_stage])
    assert heads.grid_stage == rt.default_grid_stage(clf.model)
    assert clf.feature_info[heads.grid_stage]["reduction"] == 16 and torch.allclose(reference.grid, grid, atol=1e-5)
    if rt.onnx_available():
        onnx = rt.make_engine("onnx", clf.model, clf.device, clf.size)(x)
        assert torch.allclose(onnx.stages, reference.stages, atol=1e-4, rtol=1e-3)
        assert torch.allclose(onnx.grid, reference.grid, atol=1e-4, rtol=1e-3)


def test_an_older_export_format_is_not_reused(tiny_bundle, cache, monkeypatch):
    clf = Classifier.from_pretrained(tiny_bundle, variant="fp32")
    key = rt._model_key(clf.model, clf.size)
    monkeypatch.setattr(rt, "EXPORT_FORMAT", rt.EXPORT_FORMAT - 1)
    assert rt._model_key(clf.model, clf.size) != key
