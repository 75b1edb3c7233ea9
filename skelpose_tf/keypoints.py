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
(`get_keypoint_set("path/to/set.json")`). Every field is checked when the set is
loaded (`KeypointSet` lists the rules); an error names the file, the set and the
field, e.g. `sets/hand.json: Keypoint set 'hand': oks_sigmas[2] (keypoint 'right')
must be a finite number > 0 (...). Received: 0.0`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping, Sequence

import numpy as np

LINK_KINDS = ("physical", "virtual")
BODY_PARTS = ("upper", "lower")

# The fields of a keypoint set's config / JSON file (`KeypointSet.to_config`).
REQUIRED_FIELDS = ("name", "keypoint_names", "flip_pairs", "links", "oks_sigmas", "upper_body")
OPTIONAL_FIELDS = ("joint_weights", "drawing_edges")
LINK_FIELDS = ("a", "b", "kind", "part")


def _is_index(value) -> bool:
    """True for an integer (Python or numpy), not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value) -> bool:
    """True for an int or a float (Python or numpy), not a bool."""
    return (isinstance(value, (int, float, np.integer, np.floating))
            and not isinstance(value, (bool, np.bool_)))


@dataclasses.dataclass(frozen=True)
class SkeletalLink:
    """One skeletal heatmap: the segment between keypoints `a` and `b`.

    Args:
        a: index of the first keypoint (an integer >= 0).
        b: index of the second keypoint, different from `a`.
        kind: "physical" (a bone) or "virtual" (a left-right link).
        part: "upper" or "lower"; decides whether the link's map is summed
            into the upper-body or the lower-body attention map.

    Raises:
        ValueError: repeating the bad value (the keypoint set checks `a`, `b` < K).
    """

    a: int
    b: int
    kind: str
    part: str

    def __post_init__(self):
        for field in ("a", "b"):
            value = getattr(self, field)
            if not _is_index(value) or value < 0:
                raise ValueError(f"SkeletalLink {field} must be a keypoint index (an integer "
                                 f">= 0). Received: {field}={value!r}")
            object.__setattr__(self, field, int(value))
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

    Every field is checked when the set is made (directly, from a config dict or from a JSON
    file), so that a bad table fails at load time instead of giving wrong scores later: names
    unique, indices in [0, K), flip pairs disjoint, OKS sigmas finite and > 0 (a sigma of 0
    makes OKS 0/0), joint weights finite and >= 0 and not all 0. Lists are stored as tuples.

    Args:
        name: short identifier, e.g. "coco".
        keypoint_names: K unique names, in the order of the heatmap channels.
        flip_pairs: (left, right) index pairs swapped by a horizontal flip; a keypoint is in
            at most one pair.
        links: the S `SkeletalLink`s, in the order of the skeletal heatmap channels.
        oks_sigmas: K per-keypoint OKS constants (COCO's k_i), each finite and > 0.
        upper_body: indices of the upper-body keypoints (half-body augmentation).
        joint_weights: optional K loss weights, each finite and >= 0 (1.0 each when omitted).
        drawing_edges: index pairs drawn as the skeleton in pictures (defaults
            to the links of kind "physical").

    Raises:
        ValueError: naming the set, the field and the entry, and repeating the bad value.
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
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"A keypoint set's name must be a non-empty string. Received: "
                             f"name={self.name!r}")
        names = self._sequence("keypoint_names")
        if not names:
            self._fail("keypoint_names is empty: a keypoint set needs at least one keypoint.")
        for i, name in enumerate(names):
            if not isinstance(name, str) or not name:
                self._fail(f"keypoint_names[{i}] must be a non-empty string. Received: {name!r}")
        repeated = [name for name in dict.fromkeys(names) if names.count(name) > 1]
        if repeated:
            self._fail(f"keypoint_names must be unique; {', '.join(map(repr, repeated))} "
                       "appear(s) more than once.")
        self._store("keypoint_names", names)
        flip_pairs = self._pairs("flip_pairs")
        seen = set()
        for i, pair in enumerate(flip_pairs):
            for index in pair:
                if index in seen:
                    self._fail(f"flip_pairs[{i}]: keypoint {index} ({names[index]!r}) appears "
                               "in two flip pairs; each keypoint has at most one partner.")
                seen.add(index)
        self._store("flip_pairs", flip_pairs)
        links = self._sequence("links")
        for i, link in enumerate(links):
            if not isinstance(link, SkeletalLink):
                self._fail(f"links[{i}] must be a SkeletalLink. Received: {link!r}")
            self._index(link.a, f"links[{i}] (a)")
            self._index(link.b, f"links[{i}] (b)")
        self._store("links", links)
        self._store("oks_sigmas", self._numbers(
            "oks_sigmas", positive=True, hint="the keypoint's OKS constant; COCO's are 0.025 to "
            "0.107, and a sigma of 0 makes OKS undefined"))
        if self.joint_weights is not None:
            weights = self._numbers("joint_weights", positive=False, hint="a loss weight")
            if not any(weights):
                self._fail("joint_weights are all 0: no keypoint would be learned. Omit the "
                           "field for weights of 1.")
            self._store("joint_weights", weights)
        upper_body = self._sequence("upper_body")
        for i, index in enumerate(upper_body):
            self._index(index, f"upper_body[{i}]")
        self._store("upper_body", tuple(int(i) for i in upper_body))
        if self.drawing_edges is not None:
            self._store("drawing_edges", self._pairs("drawing_edges"))

    # Validation helpers (used by __post_init__ only) -------------------------------------------
    def _fail(self, message):
        raise ValueError(f"Keypoint set {self.name!r}: {message}")

    def _store(self, field, value):
        object.__setattr__(self, field, value)

    def _sequence(self, field) -> tuple:
        value = getattr(self, field)
        if isinstance(value, np.ndarray) and value.ndim:
            value = value.tolist()
        if not isinstance(value, (list, tuple)):
            self._fail(f"{field} must be a list. Received: {value!r}")
        return tuple(value)

    def _index(self, value, where) -> None:
        k = len(self.keypoint_names)
        if not _is_index(value) or not 0 <= value < k:
            self._fail(f"{where} refers to keypoint {value!r}, but keypoint indices are the "
                       f"integers 0 to {k - 1} ({k} keypoints).")

    def _pairs(self, field) -> tuple:
        """The field as a tuple of (a, b) int pairs of two different in-range keypoints."""
        pairs = []
        for i, pair in enumerate(self._sequence(field)):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                self._fail(f"{field}[{i}] must be a pair of keypoint indices [a, b]. "
                           f"Received: {pair!r}")
            for index in pair:
                self._index(index, f"{field}[{i}]")
            if pair[0] == pair[1]:
                self._fail(f"{field}[{i}] must name two different keypoints. Received: {pair!r}")
            pairs.append((int(pair[0]), int(pair[1])))
        return tuple(pairs)

    def _numbers(self, field, positive: bool, hint: str) -> tuple:
        """The field as K Python floats, each finite and > 0 (`positive`) or >= 0."""
        values = self._sequence(field)
        k = len(self.keypoint_names)
        if len(values) != k:
            self._fail(f"{field} has {len(values)} values for {k} keypoints; give one per "
                       "keypoint, in the order of keypoint_names.")
        bound = "> 0" if positive else ">= 0"
        for i, value in enumerate(values):
            if (not _is_number(value) or not np.isfinite(value)
                    or value < 0 or (positive and value == 0)):
                self._fail(f"{field}[{i}] (keypoint {self.keypoint_names[i]!r}) must be a finite "
                           f"number {bound} ({hint}). Received: {value!r}")
        return tuple(float(v) for v in values)

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
    def from_config(cls, config: Mapping[str, Any], source: str | None = None) -> "KeypointSet":
        """The set described by a `to_config()`-layout dict (e.g. a parsed JSON file).

        Args:
            config: {"name", "keypoint_names", "flip_pairs", "links": [{"a", "b", "kind",
                "part"}], "oks_sigmas", "upper_body"} and optionally "joint_weights",
                "drawing_edges"; no other fields (a misspelt optional field would otherwise be
                ignored without a word).
            source: where the config came from (a file path); it starts every error message.

        Raises:
            ValueError: a missing, unknown or invalid field, naming `source`, the set and the
                field.
        """
        try:
            return cls._parse_config(config)
        except ValueError as error:
            if source is None:
                raise
            raise ValueError(f"{source}: {error}") from None

    @classmethod
    def _parse_config(cls, config) -> "KeypointSet":
        if not isinstance(config, Mapping):
            raise ValueError(f"A keypoint set must be a JSON object with the fields "
                             f"{', '.join(REQUIRED_FIELDS)}. Received a {type(config).__name__}.")
        missing = [key for key in REQUIRED_FIELDS if key not in config]
        if missing:
            raise ValueError(f"Keypoint set is missing field(s): {', '.join(missing)} "
                             "(KeypointSet.to_config() shows the layout).")
        unknown = [str(key) for key in config if key not in REQUIRED_FIELDS + OPTIONAL_FIELDS]
        if unknown:
            raise ValueError(f"Keypoint set {config['name']!r} has unknown field(s) "
                             f"{', '.join(unknown)}; the fields are "
                             f"{', '.join(REQUIRED_FIELDS + OPTIONAL_FIELDS)}.")
        links = config["links"]
        if not isinstance(links, (list, tuple)):
            raise ValueError(f"Keypoint set {config['name']!r}: links must be a list of objects "
                             f"{{a, b, kind, part}}. Received: {links!r}")
        parsed = []
        for i, link in enumerate(links):
            if not isinstance(link, Mapping) or set(link) != set(LINK_FIELDS):
                raise ValueError(f"Keypoint set {config['name']!r}: links[{i}] must be an object "
                                 f"with exactly the fields a, b, kind, part. Received: {link!r}")
            try:
                parsed.append(SkeletalLink(*(link[key] for key in LINK_FIELDS)))
            except ValueError as error:
                raise ValueError(f"Keypoint set {config['name']!r}: links[{i}]: {error}") from None
        # Every value is checked (and lists made tuples) by __post_init__.
        return cls(
            name=config["name"],
            keypoint_names=config["keypoint_names"],
            flip_pairs=config["flip_pairs"],
            links=tuple(parsed),
            oks_sigmas=config["oks_sigmas"],
            upper_body=config["upper_body"],
            joint_weights=config.get("joint_weights"),
            drawing_edges=config.get("drawing_edges"),
        )

    @classmethod
    def from_json(cls, path: str) -> "KeypointSet":
        """The set in a JSON file of the `to_config()` layout; errors start with `path`."""
        try:
            with open(path) as f:
                config = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"Cannot read keypoint set file {path}: {error}. It must be a JSON "
                             "object of the KeypointSet.to_config() layout.") from None
        return cls.from_config(config, source=path)


def _links_by_name(names: Sequence[str], table: Sequence[tuple]) -> tuple:
    """Build SkeletalLinks from (name_a, name_b, kind, part) rows."""
    return tuple(SkeletalLink(names.index(a), names.index(b), kind, part)
                 for a, b, kind, part in table)


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
