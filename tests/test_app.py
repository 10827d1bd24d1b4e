"""The Gradio app (app.py) and the safe batch reader behind it (tumorlib/batch.py).

Everything runs against the tiny test bundle from conftest. Where a test is about the app's wiring rather
than the trust layer's figures, tumorlib.explain / tumorlib.gate are replaced by small stand-ins with the
same interface (``gradcam`` -> Explanation, ``check`` -> GateResult), installed with monkeypatch.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import zipfile
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gradio as gr
import numpy as np
import pandas as pd
import pytest
from PIL import Image

import app
from tumorlib import decode_image, gate, localise, results
from tumorlib import explain as explain_module
from tumorlib.batch import (
    BatchLimits,
    TooManyFilesError,
    UnsafeArchiveError,
    ZipBombError,
    check_zip,
    iter_batch,
    plan_batch,
)
from tumorlib.errors import ImageError, TumorlibError
from tumorlib.modelcard import model_card

from .conftest import FIGSHARE, LABELS3

GLIOMA = FIGSHARE / "images" / "2384.jpg"


# --------------------------------------------------------------------------- helpers and stand-ins


class FakeExplanation:
    """The documented Explanation interface: heatmap, target, overlay(opacity) -> RGB PIL image."""

    def __init__(self, image: np.ndarray, target: str) -> None:
        self.heatmap = np.linspace(0, 1, image.shape[0] * image.shape[1], dtype=np.float32).reshape(image.shape[:2])
        self.target = target
        self.base = image

    def overlay(self, opacity: float = 0.5) -> Image.Image:
        grey = self.base if self.base.ndim == 2 else self.base.mean(axis=2)
        rgb = np.stack([grey] * 3, axis=2)
        rgb[..., 0] = (1 - opacity) * rgb[..., 0] + opacity * self.heatmap
        return Image.fromarray((rgb * 255).astype(np.uint8), "RGB")


class FakeExplain:
    def __init__(self) -> None:
        self.calls: list[str | None] = []

    def gradcam(self, classifier, image, target=None, maps=None):
        assert isinstance(image, np.ndarray) and image.dtype == np.float32
        name = target if target is not None else classifier.labels[0]
        self.calls.append(name)
        return FakeExplanation(image, name)


class FakeGate:
    """Refuses bright images (mean above 0.5): real slices are mostly black background."""

    threshold = 0.5

    def check(self, classifier, image, outputs=None):
        score = float(np.mean(image))
        ok = score <= self.threshold
        reason = "" if ok else "it is mostly bright, unlike an MRI slice with its black background."
        return SimpleNamespace(is_mri=ok, score=score, threshold=self.threshold, reason=reason)


def _bright_image(path: Path) -> Path:
    """A bright photo-like image the stand-in gate refuses."""
    pixels = np.full((120, 160, 3), 255, dtype=np.uint8)
    pixels[:, :8] = (0, 40, 90)  # a dark band: the decoder rescales each image to its own range
    Image.fromarray(pixels).save(path)
    return path


def _error_text(excinfo: pytest.ExceptionInfo) -> str:
    return str(getattr(excinfo.value, "message", excinfo.value))


def _expected(path: Path) -> str:
    """The message tumorlib itself gives for this file."""
    with pytest.raises(ImageError) as excinfo:
        decode_image(path)
    return str(excinfo.value)


@pytest.fixture(scope="module")
def service(tiny_bundle) -> app.DemoService:
    return app.DemoService(app.specs_from([tiny_bundle]), check=False)


def fake_explain(monkeypatch) -> FakeExplain:
    fake = FakeExplain()
    monkeypatch.setattr(explain_module, "gradcam", fake.gradcam)
    return fake


@pytest.fixture
def fakes(monkeypatch) -> SimpleNamespace:
    """The stand-in Grad-CAM and gate in place of tumorlib's own."""
    monkeypatch.setattr(gate, "has_gate", lambda classifier: True)
    monkeypatch.setattr(gate, "check", FakeGate().check)
    return SimpleNamespace(explain=fake_explain(monkeypatch))


@pytest.fixture
def trusted(tiny_bundle, fakes) -> app.DemoService:
    return app.DemoService(app.specs_from([tiny_bundle]))


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    files = {}
    files["empty"] = root / "empty.jpg"
    files["empty"].write_bytes(b"")
    files["text"] = root / "notes.jpg"
    files["text"].write_text("These are my notes, not an image.\n" * 20, encoding="utf-8")
    files["truncated"] = root / "truncated.jpg"
    data = GLIOMA.read_bytes()
    files["truncated"].write_bytes(data[: len(data) // 3])
    files["gif"] = root / "animated.gif"
    frames = [Image.new("L", (64, 64), value) for value in (0, 128, 255)]
    frames[0].save(files["gif"], save_all=True, append_images=frames[1:])
    files["tiny"] = root / "tiny.png"
    Image.new("L", (8, 8)).save(files["tiny"])
    files["zip"] = root / "slices.zip"
    with zipfile.ZipFile(files["zip"], "w") as zf:
        zf.write(GLIOMA, "2384.jpg")
    return files


@pytest.fixture(scope="module")
def zip_bomb(tmp_path_factory) -> Path:
    """20 MB of zeros in a 20 kB member: a ratio of about 1000 to 1."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.write(GLIOMA, "real.jpg")
        zf.writestr("huge.bmp", bytes(20 * 2**20))
    return path


@pytest.fixture(scope="module")
def traversal_zip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("traversal") / "evil.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.write(GLIOMA, "fine.jpg")
        zf.writestr("../../outside/evil.jpg", GLIOMA.read_bytes())
    return path


# --------------------------------------------------------------------------- building the page


def test_without_a_model_the_app_builds_and_says_so():
    demo = app.build_demo(model_dirs=[])
    assert isinstance(demo, gr.Blocks)
    service = demo.service
    with pytest.raises(gr.Error) as excinfo:
        service.predict(str(GLIOMA))
    assert "No model is installed" in _error_text(excinfo)
    label, summary, *_ = service.predict_ui(str(GLIOMA), None)
    assert label is None and "No model is installed" in summary
    assert "No model is installed" in service.model_tab(None)[0]


def test_building_the_demo_loads_no_model(tiny_bundle):
    demo = app.build_demo(model_dirs=[tiny_bundle], check=False)
    registry = demo.service.registry
    assert registry.names == ["tiny"] and registry.loaded("tiny") is None
    names = {dep.get("api_name") for dep in demo.config["dependencies"] if dep.get("api_visibility") == "public"}
    assert {"predict", "batch"} <= names


# --------------------------------------------------------------------------- one image


def test_predict_classifies_every_sample(service, sample_paths):
    for path in sample_paths[::4]:
        probabilities, overlay, summary = service.predict(str(path))
        assert list(probabilities) == LABELS3
        assert math.isclose(sum(probabilities.values()), 1.0, rel_tol=1e-5)
        assert all(0.0 <= p <= 1.0 for p in probabilities.values())
        top = max(probabilities, key=probabilities.get)
        assert top.capitalize() in summary
        assert isinstance(overlay, Image.Image) and "Grad-CAM in" in summary
        assert "The brain-MRI check was skipped" in summary


def test_predict_reads_the_file_itself_not_an_8_bit_copy(service, tmp_path, slice_u8):
    """A 12-bit slice stored as a 16-bit PNG gives the same probabilities as its 8-bit original."""
    png8, png16 = tmp_path / "slice8.png", tmp_path / "slice16.png"
    Image.fromarray(slice_u8).save(png8)
    Image.fromarray(slice_u8.astype(np.uint16) * 16).save(png16)  # 0..4080: clipped to white as 8-bit
    assert Image.open(png16).mode.startswith("I")
    p8, _, _ = service.predict(str(png8))
    p16, _, _ = service.predict(str(png16))
    assert p8 == pytest.approx(p16, abs=1e-5)


@pytest.mark.parametrize("kind", ["empty", "text", "truncated", "gif", "tiny", "zip"])
def test_bad_uploads_raise_gr_error_with_the_tumorlib_message(service, bad_files, kind):
    path = bad_files[kind]
    expected = _expected(path)
    with pytest.raises(gr.Error) as excinfo:
        service.predict(str(path))
    text = _error_text(excinfo)
    assert text.startswith("Cannot read this file: ") and expected in text
    # The page shows the same message in place of the result, with no label.
    label, summary, *_ = service.predict_ui(str(path), None)
    assert label is None and expected in summary


def test_missing_and_expired_uploads(service, tmp_path):
    with pytest.raises(gr.Error) as excinfo:
        service.predict(None)
    assert "No image was uploaded" in _error_text(excinfo)
    with pytest.raises(gr.Error) as excinfo:
        service.predict(str(tmp_path / "gone.jpg"))
    assert "no longer on the server" in _error_text(excinfo)
    # Clearing the upload clears the result rather than erroring.
    assert service.predict_ui(None, None)[:2] == (None, "")


def test_unexpected_errors_become_a_plain_message(service, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("internal detail")

    monkeypatch.setattr(app.pipeline, "analyse", boom)
    with pytest.raises(gr.Error) as excinfo:
        service.predict(str(GLIOMA))
    assert _error_text(excinfo) == app.UNEXPECTED_MESSAGE
    assert "internal detail" not in service.predict_ui(str(GLIOMA), None)[1]


def test_unknown_model_and_broken_bundle(tmp_path, tiny_bundle):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_bundle, broken)
    (broken / "model.safetensors").write_bytes(b"not weights")
    service = app.DemoService(app.specs_from([broken]), check=False)
    with pytest.raises(gr.Error) as excinfo:
        service.predict(str(GLIOMA))
    assert _error_text(excinfo).startswith("The model could not be loaded: ")
    with pytest.raises(TumorlibError, match="Unknown model"):
        service.analyse(str(GLIOMA), "nope")


# --------------------------------------------------------------------------- trust layer wiring


def test_gate_refusal_gives_no_diagnosis(trusted, tmp_path):
    bright = _bright_image(tmp_path / "holiday.png")
    with pytest.raises(gr.Error) as excinfo:
        trusted.predict(str(bright))
    assert (
        _error_text(excinfo) == "Not a brain MRI: it is mostly bright, unlike an MRI slice with its black background."
    )
    label, summary, view, overlay, _, state = trusted.predict_ui(str(bright), None)
    assert label is None and overlay is None and state is None
    assert "Not a brain MRI" in summary and "No diagnosis" in summary
    assert isinstance(view, Image.Image)  # the visitor still sees what was checked


def test_grad_cam_overlay_class_selector_and_opacity(trusted, fakes):
    explain = fakes.explain
    probabilities, overlay, summary = trusted.predict(str(GLIOMA))
    top = max(probabilities, key=probabilities.get)
    assert isinstance(overlay, Image.Image) and overlay.mode == "RGB"
    assert max(overlay.size) <= app.pipeline.DISPLAY_SIDE
    assert "Grad-CAM in" in summary and "Brain-MRI check passed (score" in summary
    assert explain.calls[-1] == top

    label, summary, view, overlay, selector, state = trusted.predict_ui(str(GLIOMA), None, 0.5)
    assert label == probabilities and isinstance(view, Image.Image) and isinstance(overlay, Image.Image)
    assert selector.value == top and [value for _, value in selector.choices] == LABELS3
    other = next(label for label in LABELS3 if label != top)
    calls = len(explain.calls)
    faint, state = trusted.explain_ui(state, other, 0.1)
    assert explain.calls[calls:] == [other]
    strong, state = trusted.explain_ui(state, other, 0.9)
    assert explain.calls[calls:] == [other]  # cached: only the blend is redone
    assert np.asarray(faint).tolist() != np.asarray(strong).tolist()
    assert trusted.explain_ui(None, other, 0.5) == (None, None)


def test_large_uploads_are_explained_on_a_bounded_copy(trusted, tmp_path):
    big = tmp_path / "big.png"
    pixels = np.zeros((1500, 2400), np.uint8)
    pixels[300:1200, 500:1900] = 120
    Image.fromarray(pixels).save(big)
    label, _, view, overlay, _, state = trusted.predict_ui(str(big), None)
    assert set(label) == set(LABELS3)
    working = state["analysis"].working
    assert working.shape == (640, 1024) and working.dtype == np.float32
    assert max(view.size) == app.pipeline.DISPLAY_SIDE and max(overlay.size) == app.pipeline.DISPLAY_SIDE
    small = np.zeros((300, 200), np.float32)
    assert app.pipeline.working_copy(small) is small


def test_a_failing_grad_cam_does_not_lose_the_prediction(tiny_bundle, monkeypatch):
    monkeypatch.setattr(explain_module, "gradcam", lambda *a, **k: 1 / 0)
    service = app.DemoService(app.specs_from([tiny_bundle]), check=False)
    probabilities, overlay, summary = service.predict(str(GLIOMA))
    assert overlay is None and set(probabilities) == set(LABELS3)
    assert "Grad-CAM could not be computed" in summary


@pytest.fixture(scope="module")
def gated_bundle(tiny_bundle, tmp_path_factory, sample_paths) -> Path:
    """The tiny bundle with not-an-MRI gate statistics fitted on the committed tumour slices."""
    import torch

    from tumorlib import Classifier
    from tumorlib.bundle import save_extra, update_config

    folder = tmp_path_factory.mktemp("gated") / "gated"
    shutil.copytree(tiny_bundle, folder)
    clf = Classifier.from_pretrained(folder)
    names = pd.read_csv(FIGSHARE / "metadata.csv").set_index("index")["label_name"]
    slices = [p for p in sample_paths if p.parent == FIGSHARE / "images"]
    features, widths = gate.model_input(clf.bundle.model, torch.stack([clf.preprocess(p) for p in slices]))
    stats = gate.fit_stages(features, [LABELS3.index(names[int(p.stem)]) for p in slices], widths, dims=8)
    settings = gate.thresholds(gate.stage_statistics(stats, features, widths), widths, quantile=1.0)
    settings["threshold"] *= 1.5  # headroom: these tests are about the app's wiring, not where the thresholds sit
    save_extra(folder, gate.GATE_NAME, stats)
    update_config(folder, gate=settings)
    return folder


def test_real_trust_layer_gate_and_grad_cam(gated_bundle, tmp_path):
    service = app.DemoService(app.specs_from([gated_bundle]))
    probabilities, overlay, summary = service.predict(str(GLIOMA))
    assert set(probabilities) == set(LABELS3)
    assert isinstance(overlay, Image.Image) and overlay.mode == "RGB" and overlay.size == (512, 512)
    assert "Brain-MRI check passed" in summary and "Grad-CAM in" in summary

    _, _, _, overlay, selector, state = service.predict_ui(str(GLIOMA), None, 0.5)
    assert isinstance(overlay, Image.Image)
    other = next(c for c in LABELS3 if c != selector.value)
    redrawn, state = service.explain_ui(state, other, 0.5)
    assert state["explanations"][other].target == other and isinstance(redrawn, Image.Image)

    photo = tmp_path / "photo.png"
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(photo)
    with pytest.raises(gr.Error) as excinfo:
        service.predict(str(photo))
    assert _error_text(excinfo).startswith("Not a brain MRI: ")
    assert "Not-an-MRI check | yes" in service.model_tab(None)[0]


def test_a_model_without_gate_statistics_is_classified_and_says_so(tiny_bundle):
    service = app.DemoService(app.specs_from([tiny_bundle]))
    _, _, summary = service.predict(str(GLIOMA))
    assert "This model comes without a brain-MRI check" in summary


# --------------------------------------------------------------------------- batch


def test_batch_mixes_good_and_bad_files(trusted, sample_paths, bad_files, tmp_path):
    archive = tmp_path / "more.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.write(sample_paths[1], "scans/a.jpg")
        zf.writestr("scans/broken.jpg", b"\xff\xd8\xff\xe0 not really")
        zf.writestr("__MACOSX/scans/._a.jpg", b"resource fork")
        zf.writestr("scans/", b"")
    white = _bright_image(tmp_path / "white.png")
    files = [str(sample_paths[0]), str(bad_files["text"]), str(archive), str(white)]
    frame = trusted.run_batch(files)
    assert list(frame["file"]) == [
        sample_paths[0].name,
        "notes.jpg",
        "more.zip/scans/a.jpg",
        "more.zip/scans/broken.jpg",
        "white.png",
    ]
    columns = ["file", "group", "prediction", "confidence", *(f"p_{c}" for c in LABELS3), "set_95", "note"]
    assert list(frame.columns) == columns
    assert list(frame["group"]) == ["", "", "more.zip/scans", "more.zip/scans", ""]
    good = frame[frame["prediction"] != ""]
    assert list(good["file"]) == [sample_paths[0].name, "more.zip/scans/a.jpg"]
    assert set(good["prediction"]) <= set(LABELS3)
    assert np.allclose(good[[f"p_{c}" for c in LABELS3]].sum(axis=1), 1.0)
    notes = dict(zip(frame["file"], frame["note"], strict=True))
    assert notes["notes.jpg"] == "Cannot read this file: " + _expected(bad_files["text"])
    assert notes["more.zip/scans/broken.jpg"].startswith("Cannot read this file: ")
    assert notes["white.png"].startswith("Not a brain MRI: ")

    path = trusted.write_csv(frame)
    back = pd.read_csv(path, keep_default_na=False)
    assert list(back["file"]) == list(frame["file"]) and len(back) == 5

    shown, download, summary, groups, gallery = trusted.batch_ui(files, None, progress=lambda *a, **k: None)
    assert len(shown) == 5 and Path(download).read_text(encoding="utf-8").startswith("file,group,")
    assert summary.startswith("**2 of 5 images classified** (") and "3 could not be classified" in summary
    # The zip's folder is one group: its readable slice answers it, the broken one is counted apart.
    assert list(groups["group"]) == ["more.zip/scans"] and list(groups["unreadable"]) == [1]
    assert "**more.zip/scans (2 slices)**" in summary and "1 could not be read" in summary
    assert len(gallery) == 1 and gallery[0][1].startswith("more.zip/scans: ")
    assert all(update.visible for update in trusted.show_groups(groups))


def test_one_upload_is_answered_as_before(service):
    shown, _, summary, groups, gallery = service.batch_ui([str(GLIOMA)], None, progress=lambda *a, **k: None)
    assert list(shown["file"]) == [GLIOMA.name] and list(shown["group"]) == [""]
    assert "per series or folder" not in summary and groups.empty and gallery == []
    assert not any(update.visible for update in service.show_groups(groups))


def _two_folders(tmp_path: Path, paths: list[Path]) -> Path:
    archive = tmp_path / "patients.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i, path in enumerate(paths[:4]):
            zf.write(path, f"{'ab'[i % 2]}/{i}.jpg")
    return archive


def _two_series(tmp_path: Path, slice_u8: np.ndarray) -> list[Path]:
    """Four DICOM files of one patient's study, two series interleaved."""
    from pydicom.uid import generate_uid

    from .test_groups import _dicom

    study, series = generate_uid(), [generate_uid(), generate_uid()]
    files = []
    for i in range(4):
        path = tmp_path / f"IM{i}.dcm"
        pixels = np.roll(slice_u8.astype(np.uint16) * 16, 5 * i, axis=0)
        path.write_bytes(
            _dicom([pixels], PatientID="PID-0042", StudyInstanceUID=study, SeriesInstanceUID=series[i % 2])
        )
        files.append(path)
    return files


def test_batch_answers_each_folder_and_each_series(service, sample_paths, slice_u8, tmp_path):
    for files, labels in (
        ([_two_folders(tmp_path, sample_paths)], ["patients.zip/a", "patients.zip/b"]),
        (_two_series(tmp_path, slice_u8), ["series 1", "series 2"]),
    ):
        _, download, summary, groups, gallery = service.batch_ui(
            [str(f) for f in files], None, progress=lambda *a, **k: None
        )
        assert list(groups["group"]) == labels and list(groups["slices"]) == [2, 2]
        assert len(gallery) == 2 and all(label in summary for label in labels)
        back = pd.read_csv(download, keep_default_na=False)
        assert sorted(set(back["group"])) == labels and len(back) == 4
        assert "PID-0042" not in summary + Path(download).read_text(encoding="utf-8") + groups.to_csv()


@pytest.mark.parametrize(("fixture", "error"), [("zip_bomb", ZipBombError), ("traversal_zip", UnsafeArchiveError)])
def test_hostile_archives_are_refused_whole(service, request, fixture, error):
    path = request.getfixturevalue(fixture)
    with pytest.raises(error) as expected:
        check_zip(path)
    with pytest.raises(gr.Error) as excinfo:
        service.run_batch([str(GLIOMA), str(path)])
    assert str(expected.value) in _error_text(excinfo)
    assert path.name in _error_text(excinfo)
    # Sent to /predict, an archive is simply not an image.
    with pytest.raises(gr.Error, match="zip archive"):
        service.predict(str(path))


def test_batch_limits(tmp_path, service):
    limits = BatchLimits(max_files=3, max_total_bytes=100_000)
    many = tmp_path / "many.zip"
    with zipfile.ZipFile(many, "w") as zf:
        for i in range(4):
            zf.writestr(f"{i}.jpg", b"x")
    with pytest.raises(TooManyFilesError, match="at most 3"):
        check_zip(many, limits)
    with pytest.raises(TooManyFilesError, match="holds 4 images"):
        plan_batch([GLIOMA] * 4, limits)
    big = tmp_path / "big.zip"
    with zipfile.ZipFile(big, "w") as zf:
        zf.writestr("a.bin", os.urandom(60_000))
        zf.writestr("b.bin", os.urandom(60_000))
    with pytest.raises(ZipBombError, match="in total"):
        check_zip(big, limits)
    for name in ("/etc/passwd", "C:\\Windows\\x.jpg", "a/../../b.jpg", "..\\up.jpg"):
        evil = tmp_path / "evil.zip"
        with zipfile.ZipFile(evil, "w") as zf:
            zf.writestr(zipfile.ZipInfo(name), b"x")
        with pytest.raises(UnsafeArchiveError):
            check_zip(evil)
    link = tmp_path / "link.zip"
    with zipfile.ZipFile(link, "w") as zf:
        info = zipfile.ZipInfo("slice.jpg")
        info.external_attr = 0o120777 << 16  # a symbolic link
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        check_zip(link)
    locked = tmp_path / "locked.zip"
    with zipfile.ZipFile(locked, "w") as zf:
        zf.write(GLIOMA, "open.jpg")
        zf.writestr("secret.jpg", b"ciphertext")
    data = bytearray(locked.read_bytes())
    entry = data.rindex(b"PK\x01\x02")  # the last central-directory entry: secret.jpg
    data[entry + 8] |= 0x1  # its "encrypted" flag
    locked.write_bytes(bytes(data))
    items = list(iter_batch([locked]))
    assert [i.name for i in items] == ["locked.zip/open.jpg", "locked.zip/secret.jpg"]
    assert items[0].data == GLIOMA.read_bytes() and items[0].error is None
    assert items[1].data is None and "encrypted" in str(items[1].error)
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04" + b"\x00" * 50)
    with pytest.raises(gr.Error, match="not a readable zip archive"):
        service.run_batch([str(broken)])
    with pytest.raises(gr.Error, match="No files were uploaded"):
        service.run_batch([])
    items = list(iter_batch([GLIOMA]))
    assert items[0].path == GLIOMA and items[0].source == GLIOMA


def test_csv_cells_cannot_become_formulas(service):
    frame = pd.DataFrame({"file": ["=HYPERLINK(1)", "ok.jpg"], "note": ["", "-1"]})
    back = pd.read_csv(service.write_csv(frame), keep_default_na=False)
    assert list(back["file"]) == ["'=HYPERLINK(1)", "ok.jpg"] and list(back["note"]) == ["", "'-1"]


# --------------------------------------------------------------------------- model tab


def _metrics() -> dict:
    cm = [[40, 3, 2], [4, 30, 1], [1, 2, 50]]
    per_class = {
        label: {"precision": 0.9, "recall": 0.88, "specificity": 0.95, "f1": 0.89, "support": sum(row)}
        for label, row in zip(LABELS3, cm, strict=True)
    }
    return {
        "labels": LABELS3,
        "n": 133,
        "n_groups": 30,
        "accuracy": 0.902,
        "accuracy_ci": [0.85, 0.94],
        "macro": {"precision": 0.9, "recall": 0.88, "specificity": 0.95, "f1": 0.89},
        "per_class": per_class,
        "confusion_matrix": cm,
        "ci": {"level": 0.95, "method": "bootstrap", "unit": "patient", "resamples": 1000},
    }


def test_model_tab_shows_card_facts_metrics_and_confusion_matrix(tmp_path, tiny_bundle):
    folder = tmp_path / "evaluated"
    shutil.copytree(tiny_bundle, folder)
    metrics = _metrics()
    (folder / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    (folder / "README.md").write_text(model_card(config, metrics), encoding="utf-8")
    service = app.DemoService(app.specs_from([folder, tiny_bundle]), check=False)

    facts, headline, per_class, paper, confusion, reliability, card, note = service.model_tab("evaluated")
    assert "test_resnet" in facts and "`glioma`" in facts and "133 test slices from 30 patients" in facts
    assert "apache-2.0" in facts
    assert headline.visible and headline.value["data"][0][:2] == ["Accuracy", "90.2%"]
    assert per_class.visible and paper.visible
    assert confusion.visible and confusion.value is not None
    assert not reliability.visible  # no reliability bins in these metrics
    assert "Intended use" in card
    assert note == results.PAPER_CAVEAT
    assert service.registry.loaded("evaluated") is None  # the tab never loads weights

    facts, headline, *_, card, note = service.model_tab("tiny")
    assert not headline.visible and "has not been evaluated" in note
    assert "No model card" in card


def test_facts_of_a_gated_model_still_name_its_source(tiny_bundle):
    """The gate's row once overwrote the Source row with where the gate's thresholds came from."""
    config = json.loads((tiny_bundle / "config.json").read_text(encoding="utf-8"))
    gate = {"n_heldout": 620, "thresholds_from": "held-out patients", "mri_refused_crossfit": 0.027}
    config["tumorlib"]["gate"] = gate
    facts = results.model_facts("tiny", "models/tiny", config, {}, None)
    assert "| Source | `models/tiny` |" in facts
    assert "yes, thresholds set on 620 slices (held-out patients); refuses 2.7% of real MRI slices" in facts


def test_page_events_are_wired(tiny_bundle, monkeypatch):
    """The page's own (private) events, run through Gradio's pre- and post-processing in-process."""
    import asyncio

    from gradio.state_holder import SessionState

    fake_explain(monkeypatch)
    demo = app.build_demo(model_dirs=[tiny_bundle], check=False)
    fns = list(demo.fns.values()) if isinstance(demo.fns, dict) else list(demo.fns)

    def run(name: str, inputs: list, **kwargs) -> list:
        fn = next(f for f in fns if f.name == name)
        return asyncio.run(demo.process_api(fn, inputs, state=session, **kwargs))["data"]

    session = SessionState(demo)
    upload = {"path": str(GLIOMA), "orig_name": GLIOMA.name, "meta": {"_type": "gradio.FileData"}}
    label, summary, view, overlay, selector, _ = run("predict_ui", [upload, "tiny", 0.5])
    assert label["label"] in LABELS3 and len(label["confidences"]) == 3
    assert label["label"].capitalize() in summary and view["path"] and overlay["path"]
    assert selector["value"] == label["label"]
    other = next(c for c in LABELS3 if c != label["label"])
    redrawn, _ = run("explain_ui", [None, other, 0.3])  # the state comes from the session
    assert redrawn["path"] != overlay["path"]

    (picked,) = run("pick_example", [], event_data=gr.EventData(None, {"index": 0, "value": None}))
    assert picked["orig_name"] == app._examples()[0][0].rsplit("/", 1)[-1]
    facts, *_ = run("model_tab", ["tiny"])
    assert "test_resnet" in facts


# --------------------------------------------------------------------------- end to end


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_end_to_end_predict_through_gradio_client(
    tiny_bundle, bad_files, zip_bomb, sample_paths, slice_u8, tmp_path, monkeypatch
):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    cache = tmp_path / "gradio"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(cache))
    demo = app.build_demo(model_dirs=[tiny_bundle], check=False)
    port = _free_port()
    app.launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        client = Client(url, verbose=False, download_files=str(tmp_path), analytics_enabled=False)
        label, overlay, summary = client.predict(handle_file(str(GLIOMA)), api_name="/predict")
        assert label["label"] in LABELS3
        confidences = {c["label"]: c["confidence"] for c in label["confidences"]}
        assert set(confidences) == set(LABELS3)
        assert math.isclose(sum(confidences.values()), 1.0, rel_tol=1e-4)
        assert max(confidences, key=confidences.get) == label["label"]
        assert overlay is not None and label["label"].capitalize() in summary

        # Every bad upload: an error carrying tumorlib's message, never a label; the server keeps serving.
        for kind, path in bad_files.items():
            with pytest.raises(AppError) as excinfo:
                client.predict(handle_file(str(path)), api_name="/predict")
            assert _expected(path) in str(excinfo.value), kind
        with pytest.raises(AppError, match="was refused"):
            client.predict([handle_file(str(GLIOMA)), handle_file(str(zip_bomb))], "tiny", api_name="/batch")

        again, _, _ = client.predict(handle_file(str(GLIOMA)), api_name="/predict")
        assert again == label
        table, csv_file, text, groups, gallery = client.predict(
            [handle_file(str(GLIOMA)), handle_file(str(bad_files["empty"]))], "tiny", api_name="/batch"
        )
        assert [row[0] for row in table["data"]] == [GLIOMA.name, "empty.jpg"]
        assert table["data"][0][2] == label["label"] and "empty" in table["data"][1][-1]
        assert pd.read_csv(csv_file)["file"].tolist() == [GLIOMA.name, "empty.jpg"]
        assert text.startswith("**1 of 2 images classified**") and not groups["data"] and not gallery
        # A zip of two folders, and two DICOM series: two group rows each, each with its best slice's heatmap.
        for files, labels in (
            ([_two_folders(tmp_path, sample_paths)], ["patients.zip/a", "patients.zip/b"]),
            (_two_series(tmp_path, slice_u8), ["series 1", "series 2"]),
        ):
            _, _, _, groups, gallery = client.predict([handle_file(str(f)) for f in files], "tiny", api_name="/batch")
            assert [row[0] for row in groups["data"]] == labels and len(gallery) == 2
            assert all(Path(item["image"]).is_file() for item in gallery)
        client.close()
        # Each upload is kept once, in its own folder; no stray temporary files pile up beside them.
        assert [p.name for p in cache.iterdir() if p.is_file()] == []
    finally:
        demo.close()


# --------------------------------------------------------------------------- the tumour map (localiser)

#: Figures no real evaluation gives, so a summary that shows them read them from the bundle's metrics.json.
LOCALISER_SCORES = {
    "pointing_game": 0.6543,
    "energy_in_mask": 0.31,
    "soft_dice": 0.28,
    "peak": 0.4567,
    "n": 1234,
    "baseline": {"pointing_game": 0.2171},
    "no_tumor": {"peak": 0.0789, "n": 321},
}
CAM_SCORES = {"pointing_game": 0.0417, "energy_in_mask": 0.02, "n": 1234, "baseline": {"pointing_game": 0.2171}}


#: tumorlib's own tumour map, whatever a test installs in its place.
LOCALISE = localise.localise
HAS_LOCALISER = localise.has_localiser


class CountingLocalise:
    """tumorlib.localise in place, counting the maps drawn (or failing, to test the fallback)."""

    def __init__(self, monkeypatch, fail: BaseException | None = None) -> None:
        self.fail, self.calls = fail, 0
        monkeypatch.setattr(localise, "has_localiser", self.has_localiser)
        monkeypatch.setattr(localise, "localise", self.localise)

    def has_localiser(self, classifier) -> bool:
        return self.fail is not None or HAS_LOCALISER(classifier)

    def localise(self, classifier, image, grid=None):
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return LOCALISE(classifier, image, grid)


@pytest.fixture(scope="module")
def localised(tiny_bundle, tmp_path_factory) -> Path:
    """The tiny bundle with a (random) tumour-mask head on stage 3 as its localiser, and a metrics.json."""
    import torch

    from tumorlib import load_bundle

    folder = tmp_path_factory.mktemp("localised") / "mapped"
    shutil.copytree(tiny_bundle, folder)
    model = load_bundle(folder).model
    torch.manual_seed(1)
    localise.export(folder, torch.nn.Conv2d(model.feature_info[3]["num_chs"], 1, 1), 3, model)
    metrics = {"labels": LABELS3, "cam": CAM_SCORES, "localiser": LOCALISER_SCORES}
    (folder / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    return folder


def _map_overlay(service: app.DemoService, image: np.ndarray, opacity: float) -> list:
    _, clf = service.registry.get()
    return np.asarray(app.to_display(LOCALISE(clf, image).overlay(opacity))).tolist()


def test_with_a_localiser_the_tumour_map_is_the_default_heatmap(localised, monkeypatch):
    located, explain = CountingLocalise(monkeypatch), fake_explain(monkeypatch)
    service = app.DemoService(app.specs_from([localised]), check=False)
    label, summary, _, overlay, selector, state = service.predict_ui(str(GLIOMA), None, 0.4)
    working = state["analysis"].working
    top = max(label, key=label.get)
    assert selector.value == app.TUMOUR_MAP and selector.choices[0] == app.TUMOUR_MAP_CHOICE
    assert [value for _, value in selector.choices[1:]] == LABELS3
    assert np.asarray(overlay).tolist() == _map_overlay(service, working, 0.4)
    assert located.calls == 1 and explain.calls == []  # no Grad-CAM until a class is picked
    assert "tumour map in" in summary and "Grad-CAM in" not in summary
    assert "**Heatmap: tumour map** (peak " in summary and "not why the class was chosen" in summary
    # The figures are the bundle's own (metrics.json), not written into the app.
    assert "its peak falls inside the tumour on 65.4% of 1,234 slices" in summary
    assert "(a fixed point at the image centre: 21.7%)" in summary
    assert "Mean peak 0.46 on tumour slices, 0.08 on 321 no-tumour slices." in summary
    assert top.capitalize() in summary  # the prediction itself is unchanged

    # A class: its Grad-CAM; back to the map: the cached map, drawn again at the new opacity.
    other = next(c for c in LABELS3 if c != top)
    cam, state = service.explain_ui(state, other, 0.4)
    assert explain.calls == [other]
    assert np.asarray(cam).tolist() == np.asarray(app.to_display(FakeExplanation(working, other).overlay(0.4))).tolist()
    again, state = service.explain_ui(state, app.TUMOUR_MAP, 0.8)
    assert located.calls == 1 and explain.calls == [other]
    assert np.asarray(again).tolist() == _map_overlay(service, working, 0.8)
    # A session whose map is not cached computes it once.
    del state["explanations"][app.TUMOUR_MAP]
    service.explain_ui(state, app.TUMOUR_MAP, 0.5)
    service.explain_ui(state, app.TUMOUR_MAP, 0.6)
    assert located.calls == 2


def test_predict_api_returns_the_tumour_map(localised, monkeypatch):
    explain = fake_explain(monkeypatch)
    service = app.DemoService(app.specs_from([localised]), check=False)  # real localise
    probabilities, overlay, summary = service.predict(str(GLIOMA))
    assert set(probabilities) == set(LABELS3) and explain.calls == []
    image = app.pipeline.working_copy(decode_image(GLIOMA))
    assert np.asarray(overlay).tolist() == _map_overlay(service, image, app.DEFAULT_OPACITY)
    assert "tumour map in" in summary and "65.4%" in summary


def test_real_grad_cam_and_tumour_map_switch_back_and_forth(localised):
    service = app.DemoService(app.specs_from([localised]), check=False)
    *_, overlay, selector, state = service.predict_ui(str(GLIOMA), None, 0.5)
    assert selector.value == app.TUMOUR_MAP
    for target in LABELS3:
        cam, state = service.explain_ui(state, target, 0.5)
        assert state["explanations"][target].target == target and isinstance(cam, Image.Image)
    back, state = service.explain_ui(state, app.TUMOUR_MAP, 0.5)
    assert np.asarray(back).tolist() == np.asarray(overlay).tolist()
    assert "Tumour map | yes, a head trained on tumour masks on stage 3" in service.model_tab(None)[0]


def test_without_a_localiser_the_heatmap_stays_grad_cam(tiny_bundle, localised, monkeypatch):
    # A model without one: the classes only, Grad-CAM of the top class, no word of a tumour map.
    explain = fake_explain(monkeypatch)
    service = app.DemoService(app.specs_from([tiny_bundle]), check=False)
    _, summary, _, overlay, selector, state = service.predict_ui(str(GLIOMA), None, 0.5)
    assert isinstance(overlay, Image.Image) and selector.value == explain.calls[-1]
    assert [value for _, value in selector.choices] == LABELS3
    assert "Grad-CAM in" in summary and "**Heatmap: Grad-CAM of " in summary and "tumour map" not in summary
    assert "falls inside the tumour" not in summary  # no metrics.json, no figure
    assert "Tumour map | none" in service.model_tab(None)[0]

    assert service.explain_ui(state, app.TUMOUR_MAP, 0.5) == (None, state)  # nothing to draw, nothing claimed

    # Grad-CAM of a localised bundle: the summary quotes the Grad-CAM check of its metrics.json.
    mapped = app.DemoService(app.specs_from([localised]), check=False)
    analysis = mapped.analyse(str(GLIOMA))
    _, clf = mapped.registry.get()
    top = analysis.top
    summary = mapped.summary(analysis, app.pipeline.gradcam(clf, analysis.working, top, analysis.maps))
    assert explain.calls[-1] == top
    assert f"**Heatmap: Grad-CAM of {top.replace('_', ' ')}**" in summary and "not where a tumour is" in summary
    assert (
        "its peak falls inside the tumour on 4.2% of 1,234 slices (a fixed point at the image centre: 21.7%)" in summary
    )


def test_summary_figures_follow_the_metrics_file(localised, tmp_path):
    folder = tmp_path / "other"
    shutil.copytree(localised, folder)
    scores = {**LOCALISER_SCORES, "pointing_game": 0.5, "baseline": {"pointing_game": 0.125}, "n": 40}
    (folder / "metrics.json").write_text(json.dumps({"labels": LABELS3, "localiser": scores}), encoding="utf-8")
    _, _, summary = app.DemoService(app.specs_from([folder]), check=False).predict(str(GLIOMA))
    assert "on 50.0% of 40 slices (a fixed point at the image centre: 12.5%)" in summary and "65.4%" not in summary
    (folder / "metrics.json").unlink()
    _, overlay, summary = app.DemoService(app.specs_from([folder]), check=False).predict(str(GLIOMA))
    assert isinstance(overlay, Image.Image) and "tumour map in" in summary
    assert "has no check of the map against tumour masks" in summary and "falls inside" not in summary


def test_a_damaged_localiser_falls_back_to_grad_cam_with_a_note(localised, tmp_path, monkeypatch):
    from tumorlib import BundleError, Classifier, load_bundle

    damaged = tmp_path / "damaged"
    shutil.copytree(localised, damaged)
    blob = bytearray((damaged / "localiser.safetensors").read_bytes())
    blob[-3] ^= 0xFF
    (damaged / "localiser.safetensors").write_bytes(bytes(blob))
    with pytest.raises(BundleError):
        localise.localise(Classifier(load_bundle(damaged)), GLIOMA)

    explain = fake_explain(monkeypatch)
    service = app.DemoService(app.specs_from([damaged]), check=False)
    probabilities, overlay, summary = service.predict(str(GLIOMA))
    top = max(probabilities, key=probabilities.get)
    assert isinstance(overlay, Image.Image) and explain.calls == [top]
    assert (
        "The tumour map could not be loaded for this model. Grad-CAM of the predicted class is shown instead."
        in summary
    )
    assert "Grad-CAM in" in summary and top.capitalize() in summary
    _, summary, _, overlay, selector, _ = service.predict_ui(str(GLIOMA), None, 0.5)
    assert selector.value == top and app.TUMOUR_MAP not in [v for _, v in selector.choices]
    assert isinstance(overlay, Image.Image) and "could not be loaded" in summary

    # Grad-CAM failing too: no overlay, the prediction still stands, the note says why.
    monkeypatch.setattr(explain_module, "gradcam", lambda *a, **k: 1 / 0)
    bare = app.DemoService(app.specs_from([damaged]), check=False)
    probabilities, overlay, summary = bare.predict(str(GLIOMA))
    assert overlay is None and set(probabilities) == set(LABELS3)
    assert "could not be loaded for this model. Grad-CAM could not be computed for this image." in summary


def test_a_failing_tumour_map_never_loses_the_prediction(localised, monkeypatch):
    fake_explain(monkeypatch)
    CountingLocalise(monkeypatch, fail=RuntimeError("internal detail"))
    service = app.DemoService(app.specs_from([localised]), check=False)
    label, summary, _, overlay, selector, state = service.predict_ui(str(GLIOMA), None, 0.5)
    assert set(label) == set(LABELS3) and isinstance(overlay, Image.Image) and selector.value in LABELS3
    assert "The tumour map could not be drawn for this image." in summary and "internal detail" not in summary
    with pytest.warns(UserWarning, match="tumour map could not be drawn"):
        assert service.explain_ui(state, app.TUMOUR_MAP, 0.5) == (None, state)


def test_preload_warms_the_tumour_map(localised, monkeypatch):
    located, explain = CountingLocalise(monkeypatch), fake_explain(monkeypatch)
    service = app.DemoService(app.specs_from([localised]), check=False)
    service.preload()
    assert located.calls == 1 and len(explain.calls) == 1


def test_the_page_comes_up_while_the_model_loads(tiny_bundle, monkeypatch):
    """Background warm-up: build_demo returns before the model is loaded; a visitor who asks meanwhile
    waits for that one load, not a second."""
    import threading

    from tumorlib import registry

    release, loads = threading.Event(), []
    real = registry.Classifier.from_pretrained

    def slow_load(*args, **kwargs):
        loads.append(args)
        assert release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(registry.Classifier, "from_pretrained", slow_load)
    demo = app.build_demo(model_dirs=[tiny_bundle], check=False, preload=True, background=True)
    assert demo.warm_up.is_alive() and demo.service.registry.loaded("tiny") is None
    answers = []
    visitor = threading.Thread(target=lambda: answers.append(demo.service.predict(str(GLIOMA))))
    visitor.start()
    release.set()
    demo.warm_up.join(30)
    visitor.join(30)
    assert len(loads) == 1 and demo.service.registry.loaded("tiny") is not None
    assert set(answers[0][0]) == set(LABELS3)
    assert app.build_demo(model_dirs=[tiny_bundle], check=False).warm_up is None


def test_page_events_with_a_tumour_map(localised, monkeypatch):
    """The sentinel choice survives Gradio's pre- and post-processing; the overlay's label claims no method."""
    import asyncio

    from gradio.state_holder import SessionState

    fake_explain(monkeypatch)
    demo = app.build_demo(model_dirs=[localised], check=False)
    fns = list(demo.fns.values()) if isinstance(demo.fns, dict) else list(demo.fns)
    session = SessionState(demo)

    def run(name: str, inputs: list) -> list:
        fn = next(f for f in fns if f.name == name)
        return asyncio.run(demo.process_api(fn, inputs, state=session))["data"]

    upload = {"path": str(GLIOMA), "orig_name": GLIOMA.name, "meta": {"_type": "gradio.FileData"}}
    _, summary, _, overlay, selector, _ = run("predict_ui", [upload, "mapped", 0.5])
    assert selector["value"] == app.TUMOUR_MAP and overlay["path"] and "tumour map in" in summary
    assert list(selector["choices"][0]) == list(app.TUMOUR_MAP_CHOICE)
    cam, _ = run("explain_ui", [None, LABELS3[0], 0.5])
    back, _ = run("explain_ui", [None, app.TUMOUR_MAP, 0.5])
    assert cam["path"] != back["path"]
    labels = {block.label for block in demo.blocks.values() if isinstance(block, (gr.Image, gr.Radio))}
    assert "Heatmap" in labels and not any("Grad-CAM" in str(label) for label in labels)
    predict = next(dep for dep in demo.config["dependencies"] if dep.get("api_name") == "predict")
    assert "heatmap overlay" in predict["api_description"] and "Grad-CAM" not in predict["api_description"]


def test_predict_answer_and_batch_carry_the_prediction_set(tiny_bundle, tmp_path, monkeypatch):
    """/predict's summary names the 95% set of a model with conformal thresholds; /batch's table has it too."""
    from tumorlib import conformal
    from tumorlib.bundle import update_config

    fake_explain(monkeypatch)
    folder = tmp_path / "with-sets"
    shutil.copytree(tiny_bundle, folder)
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(len(LABELS3)), size=600)
    y = np.array([rng.choice(len(LABELS3), p=p) for p in probs])
    update_config(folder, conformal=conformal.fit(probs, y, LABELS3))
    service = app.DemoService(app.specs_from([folder]), check=False)
    probabilities, _, summary = service.predict(str(GLIOMA))
    _, clf = service.registry.get(None)
    chosen = clf.conformal.sets([probabilities[label] for label in clf.labels])[0.95]
    assert "**95% prediction set:" in summary and all(label.replace("_", " ") in summary for label in chosen)
    assert "the true class is in this set 95% of the time" in summary
    frame = service.run_batch([str(GLIOMA)])
    assert frame["set_95"].tolist() == ["|".join(chosen)]
