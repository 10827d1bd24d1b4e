"""The analysis pipeline: any input to the full answer, the refusal decided in one place."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tumorlib import Classifier, ImageError, NotBrainMRIError, gate, pipeline
from tumorlib.batch import BatchItem, result_row

from .conftest import LABELS3


@pytest.fixture(scope="module")
def clf(tiny_bundle) -> Classifier:
    return Classifier.from_pretrained(tiny_bundle, variant="fp32")


def _refusing(monkeypatch) -> None:
    """A stand-in gate that refuses every image, on a model that has no gate of its own."""
    verdict = SimpleNamespace(is_mri=False, score=2.0, threshold=1.0, reason="it is a test pattern.")
    monkeypatch.setattr(gate, "has_gate", lambda classifier: True)
    monkeypatch.setattr(gate, "check", lambda classifier, image, outputs=None: verdict)


def test_analyse_gives_the_whole_answer_from_one_pass(clf, slice_path):
    analysis = pipeline.analyse(clf, slice_path)
    x = clf.preprocess(slice_path)[None]
    expected = torch.softmax(clf.logits(x)[0] / clf.temperature, 0).tolist()
    assert list(analysis.probabilities) == LABELS3
    assert list(analysis.probabilities.values()) == pytest.approx(expected, abs=1e-6)
    assert analysis.top == analysis.probabilities.label and analysis.labels == LABELS3
    assert set(analysis.timings) == {"decode", "forward", "gate", "heatmap"}
    assert analysis.seconds == pytest.approx(sum(analysis.timings[k] for k in ("decode", "forward", "gate")))
    # No localiser in this bundle: the heatmap is Grad-CAM of the predicted class, from the same pass's maps.
    assert analysis.heatmap.kind == "gradcam" and analysis.heatmap.target == analysis.top
    assert analysis.maps is not None and analysis.maps.shape[0] == 1
    assert analysis.image.shape == analysis.working.shape == (512, 512)
    assert pipeline.analyse(clf, slice_path, heatmap=False).heatmap is None


def test_the_check_raises_with_the_reason_and_the_image(clf, slice_path, monkeypatch):
    _refusing(monkeypatch)
    with pytest.raises(NotBrainMRIError, match="it is a test pattern") as excinfo:
        pipeline.analyse(clf, slice_path)
    assert isinstance(excinfo.value, ImageError) and excinfo.value.image.shape == (512, 512)
    assert excinfo.value.result.score == 2.0
    # check=False skips it, and the answer says no check was made.
    skipped = pipeline.analyse(clf, slice_path, check=False, heatmap=False).probabilities
    assert skipped.gate is None and skipped.check_note == pipeline.UNCHECKED_NOTE
    with pytest.raises(NotBrainMRIError):
        clf.predict(slice_path)
    assert clf.predict(slice_path, check=False) == pytest.approx(dict(skipped), abs=1e-6)


def test_unusable_gate_statistics_classify_and_say_no_check_ran(clf, slice_path, monkeypatch):
    def unusable(classifier, image, outputs=None):
        raise gate.GateUnavailableError("statistics of an older kind")

    monkeypatch.setattr(gate, "has_gate", lambda classifier: True)
    monkeypatch.setattr(gate, "check", unusable)
    p = clf.predict(slice_path)
    assert p.gate is None and p.check_note == pipeline.NO_CHECK_NOTE


def test_a_batch_row_reports_a_refusal_and_the_batch_goes_on(clf, slice_path, monkeypatch):
    good = result_row(clf, BatchItem(name="a.jpg", path=slice_path))
    assert good["prediction"] in LABELS3 and good["note"] == ""
    assert sum(good[f"p_{c}"] for c in LABELS3) == pytest.approx(1.0, abs=1e-5)
    _refusing(monkeypatch)
    refused = result_row(clf, BatchItem(name="b.jpg", data=slice_path.read_bytes()))
    assert refused["prediction"] == "" and refused["note"] == "Not a brain MRI: it is a test pattern."
    assert np.isnan(refused["confidence"])
    unchecked = result_row(clf, BatchItem(name="b.jpg", data=slice_path.read_bytes()), check=False)
    assert unchecked["prediction"] == good["prediction"]
    outcomes = clf.predict_batch([slice_path, b"", slice_path], check=True)
    assert [type(o).__name__ for o in outcomes] == ["NotBrainMRIError", "EmptyImageError", "NotBrainMRIError"]


def test_a_tumour_map_that_fails_falls_back_to_grad_cam(tiny_bundle, tmp_path, slice_path, monkeypatch):
    from tumorlib import localise

    folder = shutil.copytree(tiny_bundle, tmp_path / "mapped")
    model = Classifier.from_pretrained(folder).model
    localise.export(folder, torch.nn.Conv2d(model.feature_info[3]["num_chs"], 1, 1), 3, model)
    mapped = Classifier.from_pretrained(folder, variant="fp32")
    analysis = pipeline.analyse(mapped, slice_path)
    assert analysis.heatmap.kind == "map" and analysis.heatmap.target == pipeline.TUMOUR_MAP
    assert analysis.heatmap.explanation.heatmap.shape == (512, 512)

    def broken(classifier, image, grid=None):
        raise RuntimeError("internal detail")

    monkeypatch.setattr(localise, "localise", broken)
    fallback = pipeline.analyse(mapped, slice_path).heatmap
    assert fallback.kind == "gradcam" and fallback.target == analysis.top
    assert (
        fallback.note
        == "The tumour map could not be drawn for this image. Grad-CAM of the predicted class is shown instead."
    )
    # A class's Grad-CAM on request, whatever the default.
    other = next(c for c in LABELS3 if c != analysis.top)
    assert pipeline.heatmap_of(mapped, analysis, other).target == other


def test_working_and_display_copies_are_bounded():
    big = np.zeros((1500, 2400), np.float32)
    assert pipeline.working_copy(big).shape == (640, 1024)
    small = np.zeros((300, 200), np.float32)
    assert pipeline.working_copy(small) is small
    shown = pipeline.to_display(big)
    assert max(shown.size) == pipeline.DISPLAY_SIDE and shown.mode == "L"
    assert pipeline.to_display(None) is None
