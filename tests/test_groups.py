"""Grouping a batch (tumorlib/groups.py): which slices are pooled, and the answer each group gets."""

from __future__ import annotations

import io
import math
import zipfile

import numpy as np
import pytest
from PIL import Image
from pydicom.uid import generate_uid

from tumorlib import Classifier, decode_image
from tumorlib.batch import BatchItem, iter_batch
from tumorlib.groups import KEEP_SIDE, SliceAnswer, classify_items, pool

from .conftest import LABELS3
from .dicom_files import file_bytes, mr_dataset

A, B, C = LABELS3


def _dicom(frames: list[np.ndarray], **attrs) -> bytes:
    """An MR DICOM file of the uint16 ``frames`` (several: a multi-frame file), with ``attrs`` set."""
    return file_bytes(mr_dataset(frames, **attrs))


# --------------------------------------------------------------------------- pooling hand-made answers


def test_mean_vote_agreement_and_refusals_per_group():
    slices = [
        SliceAnswer("g1/a", "g1", (0.6, 0.3, 0.1)),
        SliceAnswer("g1/b", "g1", (0.55, 0.4, 0.05)),
        SliceAnswer("g1/c", "g1", (0.0, 0.95, 0.05)),  # the odd one out: B alone
        SliceAnswer("loose.png", None, (0.1, 0.1, 0.8)),  # in no group: pooled nowhere
        SliceAnswer("g2/a", "g2", None, refused=True),
        SliceAnswer("g2/b", "g2", (0.2, 0.2, 0.6)),
        SliceAnswer("g2/c", "g2", None),  # unreadable
        SliceAnswer("g3/a", "g3", None, refused=True),
    ]
    first, second, third = pool(LABELS3, slices, {"g1": ("series 1", "series", "AX T1")})
    # g1: the mean (0.383, 0.55, 0.067) picks B though two of three slices say A; the vote says A.
    assert first.label == "series 1" and first.description == "AX T1" and first.answer.group == "series 1"
    assert first.prediction == B and first.vote == A
    assert math.isclose(first.probability, (0.3 + 0.4 + 0.95) / 3)
    assert (first.answer.n_slices, first.answer.n_accepted, first.answer.agree) == (3, 3, 1)
    assert first.best_name == "g1/c" and first.answer.best_slice == 2  # an index into ``slices``
    assert first.refused == [] and first.unreadable == 0
    # g2: the refused and the unreadable slice take no part; the one accepted slice is the answer.
    assert second.label == "g2" and second.prediction == C and math.isclose(second.probability, 0.6)
    assert (second.answer.n_slices, second.answer.n_accepted, second.answer.agree) == (3, 1, 1)
    assert second.refused == ["g2/a"] and second.unreadable == 1 and second.best_name == "g2/b"
    # g3: every slice refused, no answer.
    assert third.answer.label is None and third.prediction == "" and math.isnan(third.probability)
    assert third.refused == ["g3/a"] and "no answer" in third.line()
    assert "refused by the brain-MRI check (g2/a)" in second.line() and "1 could not be read" in second.line()


def test_a_tied_vote_goes_to_the_higher_mean():
    slices = [
        SliceAnswer("a", "g", (0.5, 0.45, 0.05)),
        SliceAnswer("b", "g", (0.4, 0.55, 0.05)),
        SliceAnswer("c", "g", (0.3, 0.3, 0.4)),
        SliceAnswer("d", "g", (0.3, 0.3, 0.4)),
    ]
    (group,) = pool(LABELS3, slices)
    # Two votes for C, but the mean (0.375, 0.4, 0.225) says B: the answer is the mean's, the vote beside it.
    assert group.prediction == B and group.vote == C and group.answer.agree == 1
    tied = pool(LABELS3, slices[:2])[0]
    # A and B one vote each: the tie goes to B, whose mean (0.5) beats A's (0.45).
    assert tied.vote == B and tied.prediction == B
    # Two slices equally sure of the answer: the first is the best slice.
    same = pool(LABELS3, [SliceAnswer("x", "g", (0.2, 0.7, 0.1)), SliceAnswer("y", "g", (0.1, 0.7, 0.2))])[0]
    assert same.best_name == "x"


def test_no_groups_no_answers():
    assert pool(LABELS3, [SliceAnswer("a.png", None, (0.2, 0.3, 0.5))]) == []


# --------------------------------------------------------------------------- grouping real uploads


@pytest.fixture(scope="module")
def clf(tiny_bundle) -> Classifier:
    return Classifier.from_pretrained(tiny_bundle)


def _classify(clf, items, **kw):
    return classify_items(clf, items, check=False, **kw)


def test_zip_folders_are_groups_and_loose_files_are_not(clf, sample_paths, tmp_path):
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(sample_paths[0], "patient_a/1.jpg")
        zf.write(sample_paths[1], "patient_a/2.jpg")
        zf.write(sample_paths[2], "patient_b/1.jpg")
        zf.write(sample_paths[3], "top.jpg")  # alone at the top level: a group of one is its row
        zf.write(sample_paths[4], "patient_b/2.jpg")
    result = _classify(clf, list(iter_batch([archive, sample_paths[5], sample_paths[6]])))
    frame = result.slices_frame()
    a, b = "study.zip/patient_a", "study.zip/patient_b"
    assert list(frame["group"]) == [a, a, b, "", b, "", ""]
    assert [g.label for g in result.groups] == [a, b]
    first = result.groups[0]
    rows = frame[frame["group"] == first.label]
    probs = rows[[f"p_{c}" for c in LABELS3]].to_numpy()
    mean = probs.mean(axis=0)
    assert first.prediction == LABELS3[int(np.argmax(mean))] and math.isclose(first.probability, mean.max())
    assert first.answer.agree == int((probs.argmax(axis=1) == np.argmax(mean)).sum())
    best = int(np.argmax(probs[:, np.argmax(mean)]))
    assert first.best_name == rows["file"].iloc[best]
    groups = result.groups_frame()
    assert list(groups["slices"]) == [2, 2] and list(groups["prediction"]) == [g.prediction for g in result.groups]
    # Each group's best slice comes back with its heatmap, drawn on a copy of bounded size.
    gallery = result.gallery()
    assert len(gallery) == 2 and all(g.heatmap is not None and g.heatmap.explanation is not None for g in result.groups)
    assert all(max(g.image.shape[:2]) <= KEEP_SIDE for g in result.groups)
    assert gallery[0][1].startswith("study.zip/patient_a: ")
    assert "One answer per series or folder" in result.summary()


def test_one_loose_file_is_answered_as_before(clf, sample_paths):
    result = _classify(clf, [BatchItem(name=sample_paths[0].name, path=sample_paths[0])])
    assert result.groups == [] and list(result.slices_frame()["group"]) == [""]
    assert "per series" not in result.summary()
    # So is a single DICOM file, UIDs and all.
    (one,) = _classify(
        clf,
        [
            BatchItem(
                name="one.dcm", data=_dicom([np.eye(64, dtype=np.uint16) * 4000], SeriesInstanceUID=generate_uid())
            )
        ],
    ).rows
    assert one["group"] == "" and one["prediction"] in LABELS3


def test_dicom_series_are_grouped_by_uid_and_name_no_identifier(clf, slice_u8):
    study = generate_uid()
    series = [generate_uid(), generate_uid()]
    secret = "PATIENT-4711"
    pixels = slice_u8.astype(np.uint16) * 16
    items = []
    for i in range(5):
        which = i % 2  # the two series interleaved, as a folder listing may give them
        data = _dicom(
            [np.roll(pixels, 3 * i, axis=1)],
            PatientID=secret,
            PatientName="Doe^Jane",
            StudyInstanceUID=study,
            SeriesInstanceUID=series[which],
            SeriesDescription=["AX T1", "AX FLAIR"][which],
            InstanceNumber=i + 1,
        )
        items.append(BatchItem(name=f"IM{i}.dcm", data=data))
    result = _classify(clf, items)
    assert [g.label for g in result.groups] == ["series 1", "series 2"]
    assert [(g.description, g.answer.n_slices) for g in result.groups] == [("AX T1", 3), ("AX FLAIR", 2)]
    assert list(result.slices_frame()["group"]) == ["series 1", "series 2"] * 2 + ["series 1"]
    assert result.groups[0].title() == "series 1 (3 slices, AX T1)"
    shown = " ".join(
        [result.summary(), result.slices_frame().to_csv(), result.groups_frame().to_csv()]
        + [caption for _, caption in result.gallery()]
        + [repr(g.answer) for g in result.groups]
    )
    for identifier in (secret, "Doe", study, *series):
        assert identifier not in shown
    # The same series under another patient id is another group: ids are read to keep patients apart.
    other = _dicom([pixels], PatientID="SOMEONE-ELSE", StudyInstanceUID=study, SeriesInstanceUID=series[0])
    again = _classify(clf, [items[0], items[2], BatchItem(name="other.dcm", data=other)])
    assert [(g.label, g.answer.n_slices) for g in again.groups] == [("series 1", 2)]
    assert list(again.slices_frame()["group"]) == ["series 1", "series 1", ""]


def test_a_multi_frame_dicom_is_a_series_of_its_frames(clf, slice_u8, tmp_path):
    pixels = slice_u8.astype(np.uint16) * 16
    frames = [np.roll(pixels, 7 * i, axis=0) for i in range(4)]
    path = tmp_path / "enhanced.dcm"
    path.write_bytes(_dicom(frames, SeriesInstanceUID=generate_uid(), SeriesDescription="COR T2"))
    result = _classify(clf, [BatchItem(name=path.name, path=path)])
    frame = result.slices_frame()
    assert list(frame["file"]) == [f"enhanced.dcm [frame {i} of 4]" for i in range(1, 5)]
    assert (frame["prediction"] != "").all() and set(frame["group"]) == {"series 1"}
    (group,) = result.groups
    assert group.answer.n_slices == 4 and group.description == "COR T2"
    # Each frame is classified as a single-frame file of that slice would be.
    columns = [f"p_{c}" for c in LABELS3]
    for i, one in enumerate(frames):
        alone = _classify(clf, [BatchItem(name="one.dcm", data=_dicom([one]))]).slices_frame()
        np.testing.assert_allclose(frame[columns].iloc[i].to_numpy(float), alone[columns].iloc[0].to_numpy(float))
    # The Classify tab's single image of a multi-frame file is its middle frame.
    np.testing.assert_array_equal(decode_image(path), decode_image(_dicom([frames[2]])))
    # Without UIDs the frames are still one series; past the batch's limit the file is refused in its row.
    bare = tmp_path / "bare.dcm"
    bare.write_bytes(_dicom(frames))
    assert [g.answer.n_slices for g in _classify(clf, [BatchItem(name="bare.dcm", path=bare)]).groups] == [4]
    limited = _classify(clf, [BatchItem(name="bare.dcm", path=bare)], max_slices=3, planned=1)
    assert len(limited.rows) == 1 and "holds 4 frames" in limited.rows[0]["note"]


def test_an_unreadable_file_counts_in_its_folder_group(clf, tmp_path, slice_path):
    """A file that cannot be read counts as unreadable in its folder's group; the group is still answered."""
    archive = tmp_path / "mixed.zip"
    buf = io.BytesIO()
    Image.open(slice_path).save(buf, format="PNG")
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("p/ok.png", buf.getvalue())
        zf.writestr("p/broken.jpg", b"\xff\xd8\xff\xe0 not really")
    result = _classify(clf, list(iter_batch([archive])))
    (group,) = result.groups
    assert group.unreadable == 1 and group.answer.n_accepted == 1 and group.best_name == "mixed.zip/p/ok.png"
