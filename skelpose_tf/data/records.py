"""The per-person record every reader produces, and the report of what was skipped or repaired.

Coordinates follow docs/design.md section 3.1: continuous pixel coordinates of the original
image with pixel centres at integers (pixel (0, 0) covers [-0.5, 0.5] x [-0.5, 0.5]), 0-based.

`center` and `scale` describe the region of the image the crop covers, **in pixels** (HRNet
stores scale in units of pixel_std = 200 pixels; we do not): the crop of the model input shows
the rectangle of size `scale` = (width, height) centred at `center`, and `scale` already has the
model input's aspect ratio and the 1.25 padding (HRNet's `_xywh2cs`, times 200).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading

import numpy as np

logger = logging.getLogger("skelpose_tf.data")


@dataclasses.dataclass(frozen=True, eq=False)
class PersonRecord:
    """One person instance: where its image is, its region and its labelled keypoints.

    Attributes:
        image_path: path of the image file.
        image_id: integer id of the image (COCO `image_id`; for MPII, the annotation's position
            in its file).
        image_size: (height, width) of the image in pixels.
        box: float32 [4], (x, y, w, h) person box in image pixels (COCO boxes after the official
            cleaning; detector boxes as given; MPII: the square of side 200 * s around the
            shifted centre).
        center: float32 [2], (x, y) centre of the crop region, image pixels.
        scale: float32 [2], (width, height) of the crop region in pixels, with the model input's
            aspect ratio and the padding applied.
        keypoints: float32 [K, 2], (x, y) image pixels, 0-based; zeros where unlabelled.
        visibility: float32 [K], the raw label: COCO v in {0, 1, 2} (0 = not labelled,
            1 = labelled but occluded, 2 = visible); MPII joints_vis in {0, 1}.
        box_score: detector confidence of the box; 1.0 for ground-truth boxes.
        annotation_id: COCO annotation id, or -1 (detector boxes, MPII).
        head_box: MPII only: float32 [2, 2], ((x1, y1), (x2, y2)) head box corners in 0-based
            pixels; None elsewhere.
    """

    image_path: str
    image_id: int
    image_size: tuple
    box: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    keypoints: np.ndarray
    visibility: np.ndarray
    box_score: float = 1.0
    annotation_id: int = -1
    head_box: np.ndarray | None = None


class SkipReport:
    """A thread-safe tally of inputs that were skipped or repaired, by reason.

    Readers and the data pipeline share one report: every entry is logged (the first
    `log_limit` per reason with full detail, as a WARNING, or INFO for expected filtering such
    as crowd boxes), counted once per distinct item, and listed by `summary()` for the run's
    summary. Nothing is dropped silently.

    Example:
        report = SkipReport()
        records = read_coco_keypoints(..., report=report)
        ...
        print(report.summary())
    """

    def __init__(self, log_limit: int = 10):
        self._lock = threading.Lock()
        self._skipped = collections.Counter()
        self._repaired = collections.Counter()
        self._seen = set()
        self._first = {}  # (verb, reason) -> the first item's `where`
        self._log_limit = log_limit

    def skip(self, reason: str, where: str, level: int = logging.WARNING) -> bool:
        """Record that the item described by `where` was left out because of `reason`.

        Returns:
            True the first time this (reason, where) pair is reported, else False (the item is
            counted once however many epochs meet it).
        """
        return self._add(self._skipped, "Skipped", reason, where, level)

    def repair(self, reason: str, where: str, level: int = logging.INFO) -> bool:
        """Record that the item in `where` is used after a change described by `reason`."""
        return self._add(self._repaired, "Repaired", reason, where, level)

    def _add(self, counter, verb, reason, where, level) -> bool:
        with self._lock:
            key = (verb, reason, where)
            if key in self._seen:
                return False
            self._seen.add(key)
            self._first.setdefault((verb, reason), where)
            counter[reason] += 1
            count = counter[reason]
        if count <= self._log_limit:
            logger.log(level, "%s %s: %s", verb, where, reason)
            if count == self._log_limit:
                logger.log(level, "%s: further items with reason %r are counted, not logged",
                           verb, reason)
        return True

    @property
    def skipped(self) -> dict:
        """{reason: number of distinct items skipped}."""
        with self._lock:
            return dict(self._skipped)

    @property
    def repaired(self) -> dict:
        """{reason: number of distinct items used after a repair}."""
        with self._lock:
            return dict(self._repaired)

    def summary(self) -> str:
        """A few lines for the run's summary (one per reason), or a line saying nothing happened."""
        lines = []
        for title, counts in (("skipped", self.skipped), ("repaired", self.repaired)):
            for reason, count in sorted(counts.items()):
                lines.append(f"{title}: {count} x {reason}")
        return "\n".join(lines) if lines else "no input skipped or repaired"

    def one_line(self) -> str:
        """`summary()` on one line, each reason with its first item, for an error message:
        "skipped: 11 x missing image file (first: ann.json annotation id 4 (images/4.jpg))"."""
        with self._lock:
            first = dict(self._first)
            tables = (("Skipped", "skipped", dict(self._skipped)),
                      ("Repaired", "repaired", dict(self._repaired)))
        parts = [f"{title}: {count} x {reason} (first: {first[(verb, reason)]})"
                 for verb, title, counts in tables for reason, count in sorted(counts.items())]
        return "; ".join(parts) if parts else "no input skipped or repaired"


_NUMBER_TYPES = frozenset({int, float})
# A labelled keypoint further than this outside the pixel grid [0, W-1] x [0, H-1] is treated as
# an annotation error.
OUTSIDE_TOLERANCE_PX = 1.0


def as_float32(values, shape, where: str) -> np.ndarray:
    """`values` (nested lists of JSON numbers) as a float32 array of `shape`.

    Raises:
        ValueError: naming `where` and repeating the value when it is not numbers (strings,
            booleans, null), has another shape, or holds a NaN or infinity.
    """
    try:
        objects = np.array(values, dtype=object)
    except ValueError:  # ragged nesting
        objects = None
    if objects is None or objects.shape != tuple(shape):
        got = "a ragged list" if objects is None else f"shape {objects.shape}"
        raise ValueError(f"{where} must be numbers of shape {tuple(shape)}. Received {got}: "
                         f"{values!r}")
    if not {type(v) for v in objects.flat} <= _NUMBER_TYPES:
        raise ValueError(f"{where} must hold only numbers. Received: {values!r}")
    array = objects.astype(np.float32)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{where} must be finite numbers. Received: {values!r}")
    return array


def unlabel_outside_image(keypoints, visibility, image_size, keypoint_set, where, report):
    """Make labelled keypoints outside the image unlabelled, and zero unlabelled coordinates.

    A keypoint counts as outside when it lies more than `OUTSIDE_TOLERANCE_PX` beyond the pixel
    grid [0, W - 1] x [0, H - 1]; each one is reported (`SkipReport.repair`) with its position.

    Args:
        keypoints: float32 [K, 2], image pixels.
        visibility: float32 [K], > 0 where labelled.
        image_size: (height, width).
        keypoint_set: the `KeypointSet` (for the keypoint names in the log).
        where: the file and record, for the report.
        report: a `SkipReport`.

    Returns:
        (keypoints float32 [K, 2], visibility float32 [K]), new arrays.
    """
    keypoints = np.array(keypoints, np.float32)
    visibility = np.array(visibility, np.float32)
    height, width = image_size
    tolerance = OUTSIDE_TOLERANCE_PX
    x, y = keypoints[:, 0], keypoints[:, 1]
    outside = (visibility > 0) & ((x < -tolerance) | (x > width - 1 + tolerance)
                                  | (y < -tolerance) | (y > height - 1 + tolerance))
    for k in np.flatnonzero(outside):
        report.repair(
            "labelled keypoint outside the image, made unlabelled",
            f"{where} keypoint {k} ({keypoint_set.keypoint_names[k]}) at "
            f"({x[k]:g}, {y[k]:g}) in a {width}x{height} image",
            level=logging.WARNING,
        )
    visibility[outside] = 0.0
    keypoints[visibility == 0] = 0.0
    return keypoints, visibility
