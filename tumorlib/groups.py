"""Which slices of a batch belong together, and one answer per series or folder.

A group is a set of slices the upload itself says belong together:

- DICOM files of one series (their StudyInstanceUID and SeriesInstanceUID, with PatientID), wherever they
  sit in the batch; a multi-frame DICOM file is read as a series of its frames, one slice each;
- other files (and DICOM files without those UIDs) in one folder of a zip archive (its top level is a
  folder too, named by the archive).

A loose image file (uploaded on its own, not inside an archive) belongs to no group: nothing says which
other uploads, if any, show the same patient, and pooling different patients' slices would give an answer
about nobody. Its row is its answer, as it always was; zip a folder to have its slices pooled. A group of
one slice is answered by its row alone too.

Each group is answered by :func:`tumorlib.patients.aggregate`, the rule the evaluation scores per patient:
the mean of the calibrated probabilities over the slices the not-an-MRI check accepts, with the majority
vote beside it. Its best slice (the accepted one most sure of the answer) is shown with its heatmap.

Identifiers: the UIDs and PatientID only go into keyed digests (:func:`tumorlib.dicom.read_header`) that
group slices within the request; groups are shown as "series 1", "series 2" (with "study N" when the batch
holds several studies) and their SeriesDescription, never an identifier. No UI toolkit is imported here.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np

from . import pipeline
from .batch import BatchItem, TooManyFilesError, batch_summary, decode_item, error_row, prediction_row, result_columns
from .decode import MAX_PIXELS, MIN_SIDE, sniff
from .dicom import DicomHeader, open_frames, read_header
from .errors import NotBrainMRIError, TumorlibError
from .patients import AGGREGATION, GroupAnswer, aggregate
from .summary import pretty

if TYPE_CHECKING:
    import pandas as pd
    from PIL import Image

    from .inference import Classifier

log = logging.getLogger(__name__)

__all__ = ["KEEP_SIDE", "BatchResult", "Group", "SliceAnswer", "classify_items", "group_columns", "pool"]

#: The best-slice candidates are kept at most this many pixels a side for their heatmap (the network sees
#: a smaller resize either way), so a batch of large images holds about 1 MB per kept slice.
KEEP_SIDE = 512
#: Refused slices named in a group's summary line before "and N more".
NAMED_REFUSALS = 5


@dataclass(frozen=True)
class _Origin:
    """Where a slice came from, as far as grouping goes: ``key`` None for a loose file."""

    key: str | None = None
    kind: str = ""  # "series" or "folder"
    study: str | None = None
    description: str = ""
    folder: str = ""


@dataclass
class Group:
    """One group's answer, as shown: ``label`` names it ("series 1", "scans.zip/patient_a")."""

    label: str
    kind: str
    description: str
    answer: GroupAnswer  # its ``group`` is the label; ``best_slice`` indexes the batch's rows
    labels: list[str]
    refused: list[str]  # the slices the not-an-MRI check refused
    unreadable: int  # slices that could not be read (their rows say why)
    best_name: str = ""
    heatmap: pipeline.Heatmap | None = None
    image: np.ndarray | None = None  # the best slice, at most KEEP_SIDE a side

    @property
    def prediction(self) -> str:
        return self.labels[self.answer.label] if self.answer.label is not None else ""

    @property
    def probability(self) -> float:
        return float(self.answer.probabilities[self.answer.label]) if self.answer.label is not None else math.nan

    @property
    def vote(self) -> str:
        return self.labels[self.answer.vote] if self.answer.vote is not None else ""

    def title(self) -> str:
        """The label with its size and description: "series 1 (12 slices, AX T1 POST)"."""
        n = self.answer.n_slices
        details = ", ".join(x for x in (f"{n} slice{'s' if n != 1 else ''}", self.description) if x)
        return f"{self.label} ({details})"

    def line(self) -> str:
        """A Markdown line on the group's answer."""
        answer = self.answer
        reasons = []
        if self.refused:
            shown = ", ".join(self.refused[:NAMED_REFUSALS])
            more = f" and {len(self.refused) - NAMED_REFUSALS} more" if len(self.refused) > NAMED_REFUSALS else ""
            reasons.append(f"{len(self.refused)} refused by the brain-MRI check ({shown}{more})")
        if self.unreadable:
            reasons.append(f"{self.unreadable} could not be read")
        aside = f"; {'; '.join(reasons)}" if reasons else ""
        if answer.label is None:
            return f"- **{self.title()}**: no answer, no slice was accepted{aside}."
        return (
            f"- **{self.title()}**: **{pretty(self.prediction)}** {self.probability:.0%}; "
            f"{answer.agree} of {answer.n_accepted} accepted slices agree (majority vote: {pretty(self.vote)})"
            f"{aside}. Best slice: {self.best_name}."
        )


def group_columns(labels: list[str]) -> list[str]:
    """The columns of the per-group table (see :meth:`BatchResult.groups_frame`)."""
    return [
        "group",
        "description",
        "slices",
        "accepted",
        "prediction",
        "probability",
        "agree",
        "vote",
        *(f"p_{label}" for label in labels),
        "refused",
        "unreadable",
        "best_slice",
    ]


@dataclass
class BatchResult:
    """A classified batch: one row per slice (``group`` filled where it was pooled) and one answer per group."""

    labels: list[str]
    rows: list[dict[str, Any]]
    groups: list[Group]

    def slices_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame.from_records(self.rows, columns=result_columns(self.labels))

    def groups_frame(self) -> pd.DataFrame:
        import pandas as pd

        records = []
        for group in self.groups:
            answer = group.answer
            mean = answer.probabilities if answer.probabilities is not None else [math.nan] * len(self.labels)
            record = {
                "group": group.label,
                "description": group.description,
                "slices": answer.n_slices,
                "accepted": answer.n_accepted,
                "prediction": group.prediction,
                "probability": group.probability,
                "agree": answer.agree,
                "vote": group.vote,
                **{f"p_{label}": float(p) for label, p in zip(self.labels, mean, strict=True)},
                "refused": "; ".join(group.refused),
                "unreadable": group.unreadable,
                "best_slice": group.best_name,
            }
            records.append(record)
        return pd.DataFrame.from_records(records, columns=group_columns(self.labels))

    def summary(self) -> str:
        """Markdown: the per-slice count line, then one line per group (nothing more without groups)."""
        text = batch_summary(self.slices_frame())
        if not self.groups:
            return text
        lines = [f"**One answer per series or folder** ({AGGREGATION}):", *(g.line() for g in self.groups)]
        return text + "\n\n" + "\n".join(lines)

    def gallery(self, opacity: float = 0.5) -> list[tuple[Image.Image, str]]:
        """(best slice with its heatmap, caption) of each answered group, for a gallery."""
        items = []
        for group in self.groups:
            if group.image is None:
                continue
            heatmap = group.heatmap
            shown = group.image
            if heatmap is not None and heatmap.explanation is not None:
                shown = heatmap.explanation.overlay(opacity)
                what = "tumour map" if heatmap.kind == "map" else f"Grad-CAM of {pretty(str(heatmap.target))}"
            else:
                what = heatmap.note if heatmap is not None and heatmap.note else "no heatmap"
            caption = f"{group.label}: {pretty(group.prediction)} {group.probability:.0%}; {group.best_name} ({what})"
            items.append((pipeline.to_display(shown), caption))
        return items


class _Keeper:
    """Each group's best slice so far for each class, as a copy at most KEEP_SIDE a side.

    A group's answer is known only when all its slices are in, and the slices are not kept: so the
    candidate for every class is, and a batch holds at most one copy per slice. Ties keep the first
    slice, as :func:`tumorlib.patients.aggregate` picks it.
    """

    def __init__(self) -> None:
        self.best: dict[str, list[tuple[float, int]]] = {}
        self.kept: dict[int, tuple[np.ndarray, pipeline.Prediction]] = {}

    def offer(self, key: str, index: int, probs: np.ndarray, image: np.ndarray, prediction: Any) -> None:
        best = self.best.setdefault(key, [(-math.inf, -1)] * len(probs))
        wins = [k for k, p in enumerate(probs) if p > best[k][0]]
        if not wins:
            return
        replaced = {best[k][1] for k in wins}
        for k in wins:
            best[k] = (float(probs[k]), index)
        self.kept[index] = (pipeline.working_copy(image, KEEP_SIDE), prediction)
        for old in replaced - {i for _, i in best}:
            self.kept.pop(old, None)

    def get(self, index: int) -> tuple[np.ndarray, Any] | None:
        return self.kept.get(index)


def _is_dicom(item: BatchItem) -> bool:
    if item.error is not None:
        return False
    try:
        if item.path is not None:
            with open(item.path, "rb") as f:
                head = f.read(1024)
        else:
            head = (item.data or b"")[:1024]
    except OSError:
        return False
    return sniff(head, Path(item.name).name) == "dicom"


def _origin(item: BatchItem, header: DicomHeader | None) -> _Origin:
    folder = str(PurePosixPath(item.name).parent) if item.path is None else ""
    if header is not None and header.series is not None:
        return _Origin("series:" + header.series, "series", header.study, header.description)
    if header is not None and header.frames > 1:  # a multi-frame file without UIDs: its frames are one series
        return _Origin("file:" + item.name, "series", None, header.description)
    if folder and folder != ".":
        return _Origin("folder:" + folder, "folder", folder=folder)
    return _Origin()


#: One slice to classify: its row's name, where it came from, and how to decode it.
_Slice = tuple[str, _Origin, Callable[[], np.ndarray]]


def _slices(item: BatchItem, room: int | None) -> tuple[int, Iterator[_Slice]]:
    """How many slices one item holds (one, or a multi-frame DICOM's frames) and the slices themselves;
    ``room``: how many more slices the batch may classify."""
    header = read_header(item.source) if _is_dicom(item) else None
    origin = _origin(item, header)
    frames = header.frames if header is not None else 1
    if frames == 1:
        return 1, iter([(item.name, origin, lambda: decode_item(item))])
    if room is not None and frames > room:
        message = (
            f"{Path(item.name).name} holds {frames} frames; with the rest of the batch that is more than the "
            "slices one batch classifies. Upload it on its own, or fewer frames."
        )

        return 1, iter([(item.name, origin, lambda: _raise(TooManyFilesError(message)))])

    def frames_of() -> Iterator[_Slice]:
        source = item.path if item.path is not None else (item.data or b"")
        try:
            with open_frames(source, MAX_PIXELS, MIN_SIDE) as opened:
                for index in range(opened.count):
                    name = f"{item.name} [frame {index + 1} of {opened.count}]"
                    yield name, origin, lambda i=index: opened.frame(i)
        except TumorlibError as err:  # unreadable as a whole (only opening raises here): one row says why
            yield item.name, origin, lambda err=err: _raise(err)

    return frames, frames_of()


def _raise(err: BaseException) -> np.ndarray:
    raise err


def _classify(clf: Classifier, decode: Callable[[], np.ndarray], check: bool) -> tuple[Any, Any, np.ndarray | None]:
    """(prediction or None, error or None, the decoded image or None) of one slice; never raises."""
    try:
        image = decode()
        prediction, _, _ = pipeline.classify(clf, image, check)
    except TumorlibError as err:
        return None, err, None
    except Exception as err:  # one bad file must not sink the batch
        log.exception("Unexpected error on one batch file")
        return None, err, None
    return prediction, None, image


def _labels(origins: dict[str, _Origin]) -> dict[str, str]:
    """Each group key's label: series numbered in order of appearance (within their study when the batch
    holds several studies), folders by their path."""
    studies: dict[str | None, int] = {}
    for origin in origins.values():
        if origin.kind == "series":
            studies.setdefault(origin.study, len(studies) + 1)
    counts: dict[str | None, int] = {}
    labels = {}
    for key, origin in origins.items():
        if origin.kind != "series":
            labels[key] = origin.folder
            continue
        study = origin.study if len(studies) > 1 else None
        counts[study] = counts.get(study, 0) + 1
        prefix = f"study {studies[origin.study]}, " if len(studies) > 1 else ""
        labels[key] = f"{prefix}series {counts[study]}"
    return labels


@dataclass(frozen=True)
class SliceAnswer:
    """What pooling needs of one slice: its name, its group's key (None: in no group), its calibrated
    probabilities (None: no answer), and whether the not-an-MRI check refused it."""

    name: str
    group: str | None
    probabilities: tuple[float, ...] | None = None
    refused: bool = False


def pool(
    labels: list[str], slices: list[SliceAnswer], titles: dict[str, tuple[str, str, str]] | None = None
) -> list[Group]:
    """One :class:`Group` per group key of ``slices``, in order of appearance, by
    :func:`tumorlib.patients.aggregate`; ``best_slice`` indexes ``slices``.

    ``titles`` maps a key to (label, kind, description); by default the key is the label.
    """
    grouped = [i for i, one in enumerate(slices) if one.group is not None]
    if not grouped:
        return []
    nan = (math.nan,) * len(labels)
    answers = aggregate(
        np.array([slices[i].probabilities or nan for i in grouped], dtype=np.float64).reshape(-1, len(labels)),
        [str(slices[i].group) for i in grouped],
        [slices[i].probabilities is not None for i in grouped],
    )
    groups = []
    for answer in answers:
        label, kind, description = (titles or {}).get(answer.group, (answer.group, "", ""))
        members = [slices[i] for i in grouped if slices[i].group == answer.group]
        best = grouped[answer.best_slice] if answer.best_slice is not None else None
        groups.append(
            Group(
                label=label,
                kind=kind,
                description=description,
                answer=replace(answer, group=label, best_slice=best),  # no key (a digest) leaves here
                labels=list(labels),
                refused=[one.name for one in members if one.refused],
                unreadable=sum(1 for one in members if one.probabilities is None and not one.refused),
                best_name=slices[best].name if best is not None else "",
            )
        )
    return groups


def classify_items(
    clf: Classifier,
    items: Iterable[BatchItem],
    check: bool = True,
    *,
    max_slices: int | None = None,
    planned: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    heatmaps: bool = True,
) -> BatchResult:
    """Classify every slice of ``items`` (multi-frame DICOM files expanded) and answer each group.

    ``max_slices``: the most slices one batch classifies; a multi-frame file that would pass it gets a
    row saying so. ``planned``: how many items come (for progress and that limit). ``progress(done,
    total)`` is called before each slice. ``heatmaps``: draw each group's best slice's heatmap.
    """
    labels = list(clf.labels)
    rows: list[dict[str, Any]] = []
    answers: list[SliceAnswer] = []
    origins: dict[str, _Origin] = {}
    keeper = _Keeper()
    extra = 0  # slices beyond one per item: the frames of multi-frame files
    for seen, item in enumerate(items, start=1):
        to_come = max((planned or seen) - seen, 0)  # items after this one, each at least one slice
        count, slices = _slices(item, None if max_slices is None else max_slices - len(rows) - to_come)
        extra += count - 1
        for name, origin, decode in slices:
            if progress is not None:
                progress(len(rows), max(planned or seen, seen) + extra)
            prediction, error, image = _classify(clf, decode, check)
            probs = tuple(float(prediction[c]) for c in labels) if prediction is not None else None
            if origin.key is not None:
                origins.setdefault(origin.key, origin)
                if probs is not None:
                    keeper.offer(origin.key, len(rows), np.array(probs), image, prediction)
            rows.append(
                prediction_row(name, labels, prediction) if prediction is not None else error_row(name, labels, error)
            )
            answers.append(SliceAnswer(name, origin.key, probs, isinstance(error, NotBrainMRIError)))
            del image
    sizes = Counter(one.group for one in answers if one.group is not None)
    # A group of one slice would repeat its row: that slice is answered alone, as a single upload is.
    answers = [one if sizes[one.group] > 1 else replace(one, group=None) for one in answers]
    origins = {key: origin for key, origin in origins.items() if sizes[key] > 1}
    names = _labels(origins)
    for row, one in zip(rows, answers, strict=True):
        row["group"] = names[one.group] if one.group is not None else ""
    titles = {key: (names[key], origin.kind, origin.description) for key, origin in origins.items()}
    groups = pool(labels, answers, titles)
    for group in groups:
        kept = keeper.get(group.answer.best_slice) if group.answer.best_slice is not None else None
        if kept is not None:
            group.image = kept[0]
            if heatmaps:
                group.heatmap = _heatmap(clf, kept[0], kept[1], group.prediction)
    return BatchResult(labels, rows, groups)


def _heatmap(clf: Classifier, image: np.ndarray, prediction: Any, label: str) -> pipeline.Heatmap:
    """The heatmap the model shows first for the group's answer on its best slice: the tumour map where the
    model has one, else Grad-CAM of the answer's class."""
    analysis = pipeline.Analysis(probabilities=prediction, labels=list(clf.labels), image=image, working=image)
    return pipeline.heatmap_of(clf, analysis, None if pipeline.has_localiser(clf) else label)
