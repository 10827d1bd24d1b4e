"""Dataset readers: every layout becomes a list of :class:`Record` with a label, a group and a loader.

A record is cheap metadata; pixels are read on demand through :func:`tumorlib.decode.decode_image`,
so a dataset of thousands of slices lists in seconds and every image is decoded exactly as the apps
decode an upload. The ``group`` is what a split must keep together: the patient for the Cheng
figshare data, a near-duplicate cluster for images without patient ids.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .decode import decode_image
from .errors import DatasetError, ImageError
from .labels import ALIASES as _ALIASES
from .labels import CLASS_NAMES, NO_PATIENT_MARKER, has_patient_id  # noqa: F401 - has_patient_id: data's API

#: Label codes of the original figshare release (``cjdata.label``).
FIGSHARE_CODES = {1: "meningioma", 2: "glioma", 3: "pituitary"}

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif", ".dcm")


def canonical_label(name: str) -> str:
    """Map a folder or label name (``notumor``, ``Glioma_tumor``, ``no``...) to a class in :data:`CLASS_NAMES`."""
    key = re.sub(r"[\s\-]+", "_", str(name).strip().lower())
    if key not in _ALIASES:
        raise DatasetError(f"Unknown class name {name!r}; expected one of {', '.join(CLASS_NAMES)} (or a known alias).")
    return _ALIASES[key]


def pid_root(pid: str) -> str:
    """The patient part of a figshare PID: letter suffixes (``MR040240B``) mark further scans of one patient."""
    return re.sub(r"(?<=\d)[A-Za-z]+$", "", pid.strip())


@dataclass(frozen=True)
class Sample:
    """One loaded slice: ``image`` as decoded (float32 in [0, 1]), ``mask`` boolean or None."""

    id: str
    image: np.ndarray
    label: str
    group: str
    mask: np.ndarray | None


@dataclass(frozen=True)
class Record:
    """One slice of a dataset, not yet loaded.

    ``id`` is unique and stable across runs (it names rows of predictions.csv); ``group`` is the unit a
    split keeps together; ``fold`` is a published fold (0-based) where the dataset ships one.
    """

    id: str
    label: str
    group: str
    path: Path
    mask_path: Path | None = None
    kind: str = "file"  # "file": an image file; "mat": a figshare v7.3 .mat struct
    fold: int | None = None

    def load_image(self) -> np.ndarray:
        """Decode the image (float32 in [0, 1]), raising a TumorlibError subclass if it cannot."""
        if self.kind == "mat":
            return decode_image(_read_mat(self.path)["image"])
        return decode_image(self.path)

    def load_mask(self) -> np.ndarray | None:
        """The tumour mask as a boolean array the size of the image, or None where there is none."""
        if self.kind == "mat":
            return _read_mat(self.path)["mask"]
        if self.mask_path is None or not self.mask_path.exists():
            return None
        try:
            with Image.open(self.mask_path) as im:
                return np.asarray(im.convert("L")) > 127
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
            raise DatasetError(f"{self.mask_path}: the tumour mask could not be read ({err}).") from None

    def load(self) -> Sample:
        """Image, label, group and mask together."""
        if self.kind == "mat":
            cj = _read_mat(self.path)
            return Sample(self.id, decode_image(cj["image"]), self.label, self.group, cj["mask"])
        return Sample(self.id, self.load_image(), self.label, self.group, self.load_mask())


def iter_samples(records: Iterable[Record]) -> Iterator[Sample]:
    """Yield loaded samples, one at a time (image, label, group id, optional mask)."""
    for rec in records:
        yield rec.load()


# --- the converted figshare layout -------------------------------------------------------------------


def read_figshare(root: str | Path) -> list[Record]:
    """Read the converted layout: ``images/N.jpg``, ``masks/N.png`` and ``metadata.csv``."""
    root = Path(root)
    meta = root / "metadata.csv"
    if not meta.is_file():
        raise DatasetError(f"{root} has no metadata.csv: not a figshare-layout folder.")
    with meta.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    need = {"index", "label_name", "pid"}
    if not rows or not need <= set(rows[0]):
        raise DatasetError(f"{meta} must have the columns {sorted(need)} and at least one row.")
    records, missing = [], []
    for row in rows:
        index = row["index"].strip()
        image = root / "images" / f"{index}.jpg"
        if not image.is_file():
            missing.append(image.name)
            continue
        root_id = (row.get("pid_root") or "").strip() or pid_root(row["pid"])
        records.append(
            Record(
                id=f"figshare/{index}",
                label=canonical_label(row["label_name"]),
                group=f"figshare/{root_id}",
                path=image,
                mask_path=root / "masks" / f"{index}.png",
            )
        )
    if missing:
        raise DatasetError(f"{len(missing)} images listed in {meta} are missing, e.g. {', '.join(missing[:3])}.")
    return records


# --- class folders -------------------------------------------------------------------------------------


def read_class_folders(
    root: str | Path,
    *,
    classes: Sequence[str] | None = None,
    max_distance: int = 6,
) -> list[Record]:
    """Read ``root/<class name>/*.jpg`` (any decodable image); near-duplicates share a group.

    Images here carry no patient id, and public collections hold many re-encoded copies of one
    slice, so each image is grouped with every image within ``max_distance`` bits of its 256-bit
    difference hash: a split then never puts two copies on both sides.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder.")
    wanted = {canonical_label(c) for c in classes} if classes else None
    files: list[tuple[Path, str]] = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            label = canonical_label(sub.name)
        except DatasetError:
            if wanted is None:
                raise
            continue
        if wanted is not None and label not in wanted:
            continue
        files += [(p, label) for p in sorted(sub.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    if not files:
        raise DatasetError(f"{root} has no class subfolders with images ({', '.join(CLASS_NAMES)}).")
    hashes = np.stack([dhash(_decode_named(p)) for p, _ in files])
    cluster = duplicate_clusters(hashes, max_distance)
    prefix = root.name
    ids = [f"{prefix}/{p.relative_to(root).as_posix()}" for p, _ in files]
    first = {}
    for i, c in enumerate(cluster):
        first.setdefault(c, ids[i])
    return [
        Record(id=ids[i], label=label, group=f"{prefix}{NO_PATIENT_MARKER}{first[cluster[i]]}", path=p)
        for i, (p, label) in enumerate(files)
    ]


def _decode_named(path: Path) -> np.ndarray:
    """:func:`decode_image`, with the file's path in the message of any error (a dataset has many files)."""
    try:
        return decode_image(path)
    except ImageError as err:
        raise type(err)(f"{path}: {err}") from None


def dhash(image: np.ndarray, size: int = 16) -> np.ndarray:
    """The ``size * size``-bit difference hash (``imagehash.dhash``'s rule) as a boolean vector."""
    grey = image if image.ndim == 2 else image @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    im = Image.fromarray(np.round(grey * 255).astype(np.uint8)).resize((size + 1, size), Image.Resampling.LANCZOS)
    px = np.asarray(im, dtype=np.int16)
    return (px[:, 1:] > px[:, :-1]).ravel()


def duplicate_clusters(hashes: np.ndarray, max_distance: int) -> np.ndarray:
    """Cluster ids (connected components of 'Hamming distance <= max_distance') for boolean hashes (N, bits)."""
    n = len(hashes)
    packed = np.packbits(hashes, axis=1)
    popcount = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    chunk = max(1, 2_000_000 // max(n, 1))  # bounds the (chunk, n, bytes) xor table
    for start in range(0, n, chunk):
        block = packed[start : start + chunk]
        dist = popcount[block[:, None, :] ^ packed[None, :, :]].sum(axis=2, dtype=np.int32)
        for a, b in zip(*np.nonzero(dist <= max_distance), strict=True):
            i, j = find(start + int(a)), find(int(b))
            if i != j:
                parent[max(i, j)] = min(i, j)
    return np.array([find(i) for i in range(n)])


# --- the original figshare release (MATLAB v7.3) -------------------------------------------------------


def _read_mat(path: Path) -> dict:
    """Read one ``cjdata`` struct; MATLAB stores arrays column-major, so images come out transposed."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "cjdata" not in f:
                raise DatasetError(f"{path.name} has no 'cjdata' struct: not a slice of the figshare release.")
            cj = f["cjdata"]
            missing = [k for k in ("label", "PID", "image") if k not in cj]
            if missing:
                raise DatasetError(f"{path.name}: the cjdata struct lacks the field(s) {', '.join(missing)}.")
            code = int(np.asarray(cj["label"]).ravel()[0])
            pid = "".join(chr(int(c)) for c in np.asarray(cj["PID"]).ravel() if int(c) > 0)
            image = np.asarray(cj["image"]).T
            mask = np.asarray(cj["tumorMask"]).T.astype(bool) if "tumorMask" in cj else None
    except DatasetError:
        raise
    except (OSError, KeyError, ValueError, IndexError, TypeError) as err:
        raise DatasetError(f"{path.name} could not be read as a MATLAB v7.3 file ({err}).") from None
    if code not in FIGSHARE_CODES:
        raise DatasetError(f"{path.name}: label {code} is not one of the release's codes 1, 2, 3.")
    if mask is not None and mask.shape != image.shape:
        mask = None
    return {"label": FIGSHARE_CODES[code], "pid": pid, "image": image, "mask": mask}


def read_mat_release(root: str | Path) -> list[Record]:
    """Read the original release: ``N.mat`` files (in any subfolders) and, if present, ``cvind.mat``."""
    root = Path(root)
    paths = sorted((p for p in root.rglob("*.mat") if p.stem.isdigit()), key=lambda p: int(p.stem))
    if not paths:
        raise DatasetError(f"{root} holds no numbered .mat files of the figshare release.")
    cvind = next(iter(root.rglob("cvind.mat")), None)
    folds = read_cvind(cvind) if cvind else None
    records = []
    for p in paths:
        cj = _read_mat(p)
        index = int(p.stem)
        fold = None
        if folds is not None:
            if index > len(folds):
                raise DatasetError(f"cvind.mat lists {len(folds)} slices but {p.name} exists.")
            fold = int(folds[index - 1]) - 1
        records.append(
            Record(
                id=f"figshare/{index}",
                label=cj["label"],
                group=f"figshare/{pid_root(cj['pid'])}",
                path=p,
                kind="mat",
                fold=fold,
            )
        )
    return records


def read_cvind(path: Path) -> np.ndarray:
    """The published fold (1-5) of every slice, from ``cvind.mat`` (v7.3/HDF5 or the older v5 format)."""
    import h5py

    try:
        if h5py.is_hdf5(path):
            with h5py.File(path, "r") as f:
                return np.asarray(f["cvind"]).ravel().astype(int)
        from scipy.io import loadmat

        return np.asarray(loadmat(path)["cvind"]).ravel().astype(int)
    except (OSError, KeyError, ValueError) as err:
        raise DatasetError(f"{path} could not be read as the published fold file ({err}).") from None


# --- any layout, several sources -----------------------------------------------------------------------


def detect_layout(root: str | Path) -> str:
    """'figshare', 'mat' or 'folders' for a dataset folder."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"Dataset folder not found: {root}")
    if (root / "metadata.csv").is_file():
        return "figshare"
    if any(p.stem.isdigit() for p in root.rglob("*.mat")):
        return "mat"
    return "folders"


def read_dataset(root: str | Path, classes: Sequence[str] | None = None) -> list[Record]:
    """Read one dataset folder in whichever layout it has, keeping only ``classes`` if given."""
    layout = detect_layout(root)
    if layout == "figshare":
        records = read_figshare(root)
    elif layout == "mat":
        records = read_mat_release(root)
    else:
        records = read_class_folders(root, classes=classes)
    if classes:
        wanted = {canonical_label(c) for c in classes}
        records = [r for r in records if r.label in wanted]
    return records


def combine(*sources: Sequence[Record]) -> list[Record]:
    """Merge record lists into one labelled set; ids must stay unique."""
    records = [r for src in sources for r in src]
    dupes = [i for i, n in Counter(r.id for r in records).items() if n > 1]
    if dupes:
        raise DatasetError(f"The same image id appears in two sources: {', '.join(dupes[:3])}.")
    return records


def read_datasets(roots: Sequence[str | Path], classes: Sequence[str] | None = None) -> list[Record]:
    """Read and combine several dataset folders."""
    return combine(*(read_dataset(r, classes) for r in roots))


def class_names(records: Iterable[Record]) -> list[str]:
    """The classes present, in the canonical order of :data:`CLASS_NAMES`."""
    present = {r.label for r in records}
    return [c for c in CLASS_NAMES if c in present]


__all__ = [
    "CLASS_NAMES",
    "Record",
    "Sample",
    "canonical_label",
    "class_names",
    "combine",
    "detect_layout",
    "dhash",
    "duplicate_clusters",
    "iter_samples",
    "pid_root",
    "read_class_folders",
    "read_cvind",
    "read_dataset",
    "read_datasets",
    "read_figshare",
    "read_mat_release",
]
