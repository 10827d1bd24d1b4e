"""Dataset readers: the converted figshare layout, class folders, the original .mat release, combined."""

from __future__ import annotations

import csv
import shutil

import h5py
import numpy as np
import pytest
from PIL import Image

from tumorlib.data import (
    CLASS_NAMES,
    canonical_label,
    class_names,
    dhash,
    duplicate_clusters,
    iter_samples,
    pid_root,
    read_class_folders,
    read_dataset,
    read_datasets,
    read_figshare,
    read_mat_release,
)
from tumorlib.errors import DatasetError

from .conftest import FIGSHARE, FOLDERS


def test_figshare_layout():
    records = read_figshare(FIGSHARE)
    with (FIGSHARE / "metadata.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(records) == len(rows) == 24
    assert {r.label for r in records} == {"glioma", "meningioma", "pituitary"}
    by_id = {r.id: r for r in records}
    for row in rows:
        rec = by_id[f"figshare/{row['index']}"]
        assert rec.label == row["label_name"] and rec.group == f"figshare/{row['pid_root']}"
    sample = records[0].load()
    assert sample.image.shape == (512, 512) and sample.image.dtype == np.float32
    assert sample.mask.dtype == bool and 0 < sample.mask.sum() < sample.mask.size / 2


def test_patient_suffixes_share_a_group():
    assert pid_root("MR040240B") == "MR040240" and pid_root("100360") == "100360"
    records = read_figshare(FIGSHARE)
    suffixed = [r for r in records if r.group == "figshare/MR017260"]
    assert len(suffixed) == 2


def test_figshare_missing_image(tmp_path):
    shutil.copytree(FIGSHARE, tmp_path / "fs")
    next((tmp_path / "fs" / "images").glob("*.jpg")).unlink()
    with pytest.raises(DatasetError, match="1 images listed .* missing"):
        read_figshare(tmp_path / "fs")


def test_class_folders_and_aliases(tmp_path):
    root = tmp_path / "kaggle"
    for folder, n in [("notumor", 2), ("glioma_tumor", 2)]:
        (root / folder).mkdir(parents=True)
        for i, src in enumerate(sorted((FOLDERS / "no_tumor").glob("*.jpg"))[:n]):
            shutil.copy(src, root / folder / f"{i}.jpg")
    records = read_class_folders(root)
    assert sorted(r.label for r in records) == ["glioma", "glioma", "no_tumor", "no_tumor"]
    assert canonical_label("Pituitary Tumor") == "pituitary"
    with pytest.raises(DatasetError, match="Unknown class"):
        canonical_label("yes")


def test_near_duplicates_share_a_group(tmp_path):
    root = tmp_path / "set"
    (root / "no_tumor").mkdir(parents=True)
    srcs = sorted((FOLDERS / "no_tumor").glob("*.jpg"))
    for src in srcs:
        shutil.copy(src, root / "no_tumor" / src.name)
    with Image.open(srcs[0]) as im:  # a re-encoded, resized copy: what public collections are full of
        im.convert("L").resize((300, 300)).save(root / "no_tumor" / "copy.jpg", quality=70)
    records = read_class_folders(root)
    groups = {r.id.split("/")[-1]: r.group for r in records}
    assert groups["copy.jpg"] == groups[srcs[0].name]
    assert len(set(groups.values())) == len(srcs)


def test_dhash_clusters_are_transitive():
    rng = np.random.default_rng(0)
    base = rng.random(256) > 0.5
    a, b, c = base.copy(), base.copy(), base.copy()
    b[:5] ^= True  # 5 bits from a
    c[:10] ^= True  # 5 bits from b, 10 from a: joined through b
    far = ~base
    clusters = duplicate_clusters(np.stack([a, b, c, far]), 6)
    assert clusters[0] == clusters[1] == clusters[2] != clusters[3]
    img = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    assert dhash(img).shape == (256,)


def _write_mat(path, *, label: int, pid: str, image: np.ndarray, mask: np.ndarray | None, drop: str | None = None):
    """A MATLAB v7.3 file shaped like the release: HDF5 behind a 512-byte header, arrays column-major."""
    with h5py.File(path, "w", userblock_size=512) as f:
        g = f.create_group("cjdata")
        fields = {
            "label": np.array([[float(label)]]),
            "PID": np.array([[ord(c)] for c in pid], dtype=np.uint16),
            "image": image.T.astype(np.int16),
            "tumorBorder": np.array([[10.0, 20.0, 30.0, 40.0]]),
        }
        if mask is not None:
            fields["tumorMask"] = mask.T.astype(np.uint8)
        for k, v in fields.items():
            if k != drop:
                g.create_dataset(k, data=v)
    with open(path, "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2017 HDF5 schema 1.00 .")


@pytest.fixture()
def mat_release(tmp_path, slice_u8):
    root = tmp_path / "release"
    (root / "part1").mkdir(parents=True)
    image = slice_u8[:, :400].astype(np.int16) * 8  # not square: a transpose mistake cannot hide
    mask = np.zeros_like(image, dtype=bool)
    mask[100:150, 300:390] = True
    specs = [(1, "100360", 1), (2, "MR040240B", 2), (2, "MR040240C", 2), (3, "112649", 3)]
    for i, (label, pid, _) in enumerate(specs, start=1):
        _write_mat(root / "part1" / f"{i}.mat", label=label, pid=pid, image=image, mask=mask)
    with h5py.File(root / "cvind.mat", "w") as f:
        f.create_dataset("cvind", data=np.array([[s[2] for s in specs]], dtype=np.float64))
    return root, image, mask


def test_mat_release(mat_release):
    root, image, mask = mat_release
    records = read_mat_release(root)
    assert [r.label for r in records] == ["meningioma", "glioma", "glioma", "pituitary"]
    assert records[1].group == records[2].group == "figshare/MR040240"
    assert [r.fold for r in records] == [0, 1, 1, 2]
    sample = records[0].load()
    assert sample.image.shape == image.shape  # transposed back to rows x columns
    expected = (image - image.min()) / (image.max() - image.min())
    np.testing.assert_allclose(sample.image, expected, atol=1e-6)
    np.testing.assert_array_equal(sample.mask, mask)
    assert read_dataset(root)[3].label == "pituitary"


def test_mat_missing_field(tmp_path, slice_u8):
    (tmp_path / "r").mkdir()
    _write_mat(tmp_path / "r" / "1.mat", label=1, pid="1", image=slice_u8.astype(np.int16), mask=None, drop="PID")
    with pytest.raises(DatasetError, match="lacks the field.*PID"):
        read_mat_release(tmp_path / "r")


def test_combined_sources_and_class_order():
    records = read_datasets([FIGSHARE, FOLDERS])
    assert class_names(records) == list(CLASS_NAMES)
    assert len({r.id for r in records}) == len(records) == 32
    first = next(iter_samples(records[-1:]))
    assert first.label == "no_tumor" and first.mask is None
    only = read_datasets([FIGSHARE, FOLDERS], classes=["glioma", "no_tumor"])
    assert class_names(only) == ["glioma", "no_tumor"]
    with pytest.raises(DatasetError, match="two sources"):
        read_datasets([FIGSHARE, FIGSHARE])
