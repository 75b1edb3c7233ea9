"""Keypoint-set metadata: one table per data set, read by every other module.

A `KeypointSet` holds what the model, the targets, augmentation, the flip test,
the losses and the metrics need to know about a skeleton: keypoint names, flip
partners, the skeletal links of the paper (physical bones and virtual
left-right links, each labelled upper or lower body), OKS sigmas, joint
weights and the upper-body keypoints used by half-body augmentation.
Nothing else in the package hard-codes a keypoint index or count.

Built-in sets: `COCO` (17 keypoints) and `MPII` (16 keypoints), both with the
16 links of docs/design.md section 1 (9 upper, 7 lower).

Declaring a custom set (any number of keypoints and links):

```python
from skelpose_tf.keypoints import KeypointSet, SkeletalLink

hand = KeypointSet(
    name="my_set",
    keypoint_names=("left", "centre", "right"),
    flip_pairs=((0, 2),),
    links=(SkeletalLink(0, 1, "physical", "upper"),
           SkeletalLink(1, 2, "physical", "lower"),
           SkeletalLink(0, 2, "virtual", "upper")),
    oks_sigmas=(0.05, 0.05, 0.05),
    upper_body=(0, 1),
)
```

or write the same fields as JSON (`KeypointSet.to_config()` shows the layout)
and pass the file's path wherever a keypoint set is accepted
(`get_keypoint_set("path/to/set.json")`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping, Sequence

import numpy as np

LINK_KINDS = ("physical", "virtual")
BODY_PARTS = ("upper", "lower")


@dataclasses.dataclass(frozen=True)
class SkeletalLink:
    """One skeletal heatmap: the segment between keypoints `a` and `b`.

    Args:
        a: index of the first keypoint.
        b: index of the second keypoint.
        kind: "physical" (a bone) or "virtual" (a left-right link).
        part: "upper" or "lower"; decides whether the link's map is summed
            into the upper-body or the lower-body attention map.
    """

    a: int
    b: int
    kind: str
    part: str

    def __post_init__(self):
        if self.kind not in LINK_KINDS:
            raise ValueError(
                f"SkeletalLink kind must be one of {LINK_KINDS}. Received: kind={self.kind!r}"
            )
        if self.part not in BODY_PARTS:
            raise ValueError(
                f"SkeletalLink part must be one of {BODY_PARTS}. Received: part={self.part!r}"
            )
        if self.a == self.b:
            raise ValueError(f"A link needs two different keypoints. Received: a=b={self.a}")


@dataclasses.dataclass(frozen=True)
class KeypointSet:
    """Metadata of one keypoint set (see the module docstring for an example).

    Args:
        name: short identifier, e.g. "coco".
        keypoint_names: K names, in the order of the heatmap channels.
        flip_pairs: (left, right) index pairs swapped by a horizontal flip.
        links: the S skeletal links, in the order of the skeletal heatmap channels.
        oks_sigmas: K per-keypoint OKS constants (COCO's k_i).
        upper_body: indices of the upper-body keypoints (half-body augmentation).
        joint_weights: optional K loss weights (1.0 each when omitted).
        drawing_edges: index pairs drawn as the skeleton in pictures (defaults
            to the links of kind "physical").
    """

    name: str
    keypoint_names: tuple
    flip_pairs: tuple
    links: tuple
    oks_sigmas: tuple
    upper_body: tuple
    joint_weights: tuple | None = None
    drawing_edges: tuple | None = None

    def __post_init__(self):
        k = len(self.keypoint_names)
        if k == 0:
            raise ValueError(f"Keypoint set {self.name!r} has no keypoints.")
        if len(set(self.keypoint_names)) != k:
            raise ValueError(f"Keypoint set {self.name!r} has duplicate keypoint names.")
        seen = set()
        for pair in self.flip_pairs:
            if len(pair) != 2:
                raise ValueError(f"Keypoint set {self.name!r}: flip pair {pair} is not a pair.")
            for i in pair:
                self._check_index(i, "flip_pairs")
                if i in seen:
                    raise ValueError(
                        f"Keypoint set {self.name!r}: keypoint {i} appears in two flip pairs."
                    )
                seen.add(i)
        for link in self.links:
            self._check_index(link.a, "links")
            self._check_index(link.b, "links")
        if len(self.oks_sigmas) != k:
            raise ValueError(
                f"Keypoint set {self.name!r}: oks_sigmas has {len(self.oks_sigmas)} values "
                f"for {k} keypoints."
            )
        if self.joint_weights is not None and len(self.joint_weights) != k:
            raise ValueError(
                f"Keypoint set {self.name!r}: joint_weights has {len(self.joint_weights)} values "
                f"for {k} keypoints."
            )
        for i in self.upper_body:
            self._check_index(i, "upper_body")
        for edge in self.drawing_edges or ():
            for i in edge:
                self._check_index(i, "drawing_edges")

    def _check_index(self, index, field):
        if not 0 <= int(index) < len(self.keypoint_names):
            raise ValueError(
                f"Keypoint set {self.name!r}: {field} refers to keypoint {index}, but there are "
                f"only {len(self.keypoint_names)} keypoints."
            )

    # Derived views ---------------------------------------------------------------------------
    @property
    def num_keypoints(self) -> int:
        return len(self.keypoint_names)

    @property
    def num_links(self) -> int:
        return len(self.links)

    @property
    def flip_index(self) -> tuple:
        """Permutation p with p[i] = the keypoint that i becomes after a horizontal flip."""
        index = list(range(self.num_keypoints))
        for left, right in self.flip_pairs:
            index[left], index[right] = right, left
        return tuple(index)

    @property
    def link_pairs(self) -> np.ndarray:
        """int32 [S, 2]: the (a, b) keypoint indices of every link."""
        return np.asarray([(link.a, link.b) for link in self.links], np.int32).reshape(-1, 2)

    @property
    def upper_link_indices(self) -> tuple:
        """Indices of the links summed into the upper-body attention map (the set U)."""
        return tuple(i for i, link in enumerate(self.links) if link.part == "upper")

    @property
    def lower_link_indices(self) -> tuple:
        """Indices of the links summed into the lower-body attention map (the set L)."""
        return tuple(i for i, link in enumerate(self.links) if link.part == "lower")

    @property
    def lower_body(self) -> tuple:
        upper = set(self.upper_body)
        return tuple(i for i in range(self.num_keypoints) if i not in upper)

    @property
    def weights(self) -> tuple:
        """Per-keypoint loss weights (1.0 when the set declares none)."""
        return self.joint_weights or (1.0,) * self.num_keypoints

    @property
    def edges(self) -> tuple:
        """Index pairs to draw as the skeleton."""
        if self.drawing_edges is not None:
            return self.drawing_edges
        return tuple((link.a, link.b) for link in self.links if link.kind == "physical")

    def index(self, name: str) -> int:
        """The channel index of the keypoint called `name`."""
        try:
            return self.keypoint_names.index(name)
        except ValueError:
            raise KeyError(
                f"Keypoint set {self.name!r} has no keypoint {name!r}. "
                f"Known: {', '.join(self.keypoint_names)}"
            ) from None

    # Serialisation -----------------------------------------------------------------------------
    def to_config(self) -> dict:
        """A JSON-serialisable dict; `KeypointSet.from_config` inverts it."""
        return {
            "name": self.name,
            "keypoint_names": list(self.keypoint_names),
            "flip_pairs": [list(p) for p in self.flip_pairs],
            "links": [dataclasses.asdict(link) for link in self.links],
            "oks_sigmas": list(self.oks_sigmas),
            "upper_body": list(self.upper_body),
            "joint_weights": None if self.joint_weights is None else list(self.joint_weights),
            "drawing_edges": (
                None if self.drawing_edges is None else [list(e) for e in self.drawing_edges]
            ),
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any], source: str = "config") -> "KeypointSet":
        required = ("name", "keypoint_names", "flip_pairs", "links", "oks_sigmas", "upper_body")
        missing = [key for key in required if key not in config]
        if missing:
            raise ValueError(f"Keypoint set in {source} is missing field(s): {', '.join(missing)}")
        try:
            links = tuple(
                SkeletalLink(int(l["a"]), int(l["b"]), str(l["kind"]), str(l["part"]))
                for l in config["links"]
            )
        except (KeyError, TypeError) as error:
            raise ValueError(
                f"Keypoint set in {source}: each link needs fields a, b, kind, part ({error})"
            ) from None
        optional = lambda key: None if config.get(key) is None else tuple(config[key])
        return cls(
            name=str(config["name"]),
            keypoint_names=tuple(str(n) for n in config["keypoint_names"]),
            flip_pairs=tuple(tuple(int(i) for i in p) for p in config["flip_pairs"]),
            links=links,
            oks_sigmas=tuple(float(s) for s in config["oks_sigmas"]),
            upper_body=tuple(int(i) for i in config["upper_body"]),
            joint_weights=optional("joint_weights"),
            drawing_edges=(
                None
                if config.get("drawing_edges") is None
                else tuple(tuple(int(i) for i in e) for e in config["drawing_edges"])
            ),
        )

    @classmethod
    def from_json(cls, path: str) -> "KeypointSet":
        try:
            with open(path) as f:
                config = json.load(f)
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"Cannot read keypoint set file {path}: {error}") from None
        return cls.from_config(config, source=path)


def _links_by_name(names: Sequence[str], table: Sequence[tuple]) -> tuple:
    """Build SkeletalLinks from (name_a, name_b, kind, part) rows."""
    return tuple(SkeletalLink(names.index(a), names.index(b), kind, part) for a, b, kind, part in table)


# The 16 links of docs/design.md section 1 (paper Fig. 3b), by keypoint name so that COCO and MPII
# share one definition. Torso sides count as upper body: change the part here to move them.
SKELETAL_LINKS = (
    ("l_shoulder", "l_elbow", "physical", "upper"),
    ("l_elbow", "l_wrist", "physical", "upper"),
    ("r_shoulder", "r_elbow", "physical", "upper"),
    ("r_elbow", "r_wrist", "physical", "upper"),
    ("l_shoulder", "l_hip", "physical", "upper"),
    ("r_shoulder", "r_hip", "physical", "upper"),
    ("l_hip", "l_knee", "physical", "lower"),
    ("l_knee", "l_ankle", "physical", "lower"),
    ("r_hip", "r_knee", "physical", "lower"),
    ("r_knee", "r_ankle", "physical", "lower"),
    ("l_shoulder", "r_shoulder", "virtual", "upper"),
    ("l_elbow", "r_elbow", "virtual", "upper"),
    ("l_wrist", "r_wrist", "virtual", "upper"),
    ("l_hip", "r_hip", "virtual", "lower"),
    ("l_knee", "r_knee", "virtual", "lower"),
    ("l_ankle", "r_ankle", "virtual", "lower"),
)

_COCO_NAMES = (
    "nose", "l_eye", "r_eye", "l_ear", "r_ear", "l_shoulder", "r_shoulder", "l_elbow",
    "r_elbow", "l_wrist", "r_wrist", "l_hip", "r_hip", "l_knee", "r_knee", "l_ankle", "r_ankle",
)  # fmt: skip

COCO = KeypointSet(
    name="coco",
    keypoint_names=_COCO_NAMES,
    flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    links=_links_by_name(_COCO_NAMES, SKELETAL_LINKS),
    # COCO keypoint OKS constants (cocodataset.org, pycocotools).
    oks_sigmas=(0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062,
                0.107, 0.107, 0.087, 0.087, 0.089, 0.089),  # fmt: skip
    # Official HRNet half-body split: keypoints 0-10 are the upper body.
    upper_body=tuple(range(11)),
    # Official HRNet USE_DIFFERENT_JOINTS_WEIGHT table (off by default in training).
    joint_weights=(1.0,) * 7 + (1.2, 1.2, 1.5, 1.5, 1.0, 1.0, 1.2, 1.2, 1.5, 1.5),
    # The COCO annotation file's skeleton, 0-based.
    drawing_edges=((15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6),
                   (5, 7), (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4),
                   (3, 5), (4, 6)),  # fmt: skip
)

_MPII_NAMES = (
    "r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "pelvis", "thorax",
    "upper_neck", "head_top", "r_wrist", "r_elbow", "r_shoulder", "l_shoulder", "l_elbow",
    "l_wrist",
)  # fmt: skip

# Short joint names of MPII's gt_valid.mat (`dataset_joints`), by our MPII keypoint names.
MPII_MAT_JOINT_NAMES = {
    "r_ankle": "rank", "r_knee": "rkne", "r_hip": "rhip", "l_hip": "lhip", "l_knee": "lkne",
    "l_ankle": "lank", "pelvis": "pelv", "thorax": "thor", "upper_neck": "neck",
    "head_top": "head", "r_wrist": "rwri", "r_elbow": "relb", "r_shoulder": "rsho",
    "l_shoulder": "lsho", "l_elbow": "lelb", "l_wrist": "lwri",
}  # fmt: skip

MPII = KeypointSet(
    name="mpii",
    keypoint_names=_MPII_NAMES,
    flip_pairs=((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13)),
    links=_links_by_name(_MPII_NAMES, SKELETAL_LINKS),
    # mmpose's MPII OKS constants (MPII defines none; used only by OKS-NMS).
    oks_sigmas=(0.089, 0.083, 0.107, 0.107, 0.083, 0.089, 0.026, 0.026, 0.026, 0.026, 0.062,
                0.072, 0.179, 0.179, 0.072, 0.062),  # fmt: skip
    # Official HRNet half-body split: keypoints 7-15 are the upper body.
    upper_body=tuple(range(7, 16)),
    joint_weights=(1.5, 1.2, 1.0, 1.0, 1.2, 1.5, 1.0, 1.0, 1.0, 1.0, 1.5, 1.2, 1.0, 1.0, 1.2, 1.5),
    drawing_edges=((0, 1), (1, 2), (2, 6), (6, 3), (3, 4), (4, 5), (6, 7), (7, 8), (8, 9),
                   (10, 11), (11, 12), (12, 7), (7, 13), (13, 14), (14, 15)),  # fmt: skip
)

BUILTIN_KEYPOINT_SETS = {"coco": COCO, "mpii": MPII}


def get_keypoint_set(spec) -> KeypointSet:
    """Resolve a keypoint set from a name ("coco", "mpii"), a JSON path, a config dict or a set.

    Raises:
        ValueError: for an unknown name or an invalid file/config, naming the problem.
    """
    if isinstance(spec, KeypointSet):
        return spec
    if isinstance(spec, Mapping):
        return KeypointSet.from_config(spec)
    if isinstance(spec, str):
        if spec.lower() in BUILTIN_KEYPOINT_SETS:
            return BUILTIN_KEYPOINT_SETS[spec.lower()]
        if spec.endswith(".json") or os.path.sep in spec:
            if not os.path.exists(spec):
                raise ValueError(f"Keypoint set file not found: {spec}")
            return KeypointSet.from_json(spec)
    raise ValueError(
        f"Unknown keypoint set {spec!r}. Use one of {sorted(BUILTIN_KEYPOINT_SETS)}, "
        "a path to a JSON file, a config dict or a KeypointSet."
    )
