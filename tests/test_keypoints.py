"""Keypoint sets: the built-in tables, the JSON layout, and the checks made when a set is loaded."""

import json
import re

import numpy as np
import pytest

from skelpose_tf.keypoints import (BUILTIN_KEYPOINT_SETS, COCO, MPII, KeypointSet, SkeletalLink,
                                   get_keypoint_set)

# A valid three-keypoint set in the JSON layout; each case below breaks one field.
_VALID = {
    "name": "three",
    "keypoint_names": ["left", "centre", "right"],
    "flip_pairs": [[0, 2]],
    "links": [{"a": 0, "b": 1, "kind": "physical", "part": "upper"},
              {"a": 1, "b": 2, "kind": "virtual", "part": "lower"}],
    "oks_sigmas": [0.05, 0.06, 0.05],
    "upper_body": [0, 1],
    "joint_weights": [1.0, 1.5, 1.0],
    "drawing_edges": [[0, 1], [1, 2]],
}


def _write(tmp_path, config, name="three.json"):
    path = tmp_path / name
    path.write_text(json.dumps(config))
    return str(path)


def _changed(**fields):
    config = json.loads(json.dumps(_VALID))
    config.update(fields)
    return config


def test_builtin_sets_are_consistent_and_round_trip_through_json(tmp_path):
    assert (COCO.num_keypoints, COCO.num_links, MPII.num_keypoints, MPII.num_links) == (17, 16,
                                                                                        16, 16)
    for keypoint_set in BUILTIN_KEYPOINT_SETS.values():
        assert sorted(keypoint_set.flip_index) == list(range(keypoint_set.num_keypoints))
        loaded = get_keypoint_set(_write(tmp_path, keypoint_set.to_config(),
                                         f"{keypoint_set.name}.json"))
        assert loaded == keypoint_set and hash(loaded) == hash(keypoint_set)


def test_a_valid_json_set_loads_with_lists_as_tuples(tmp_path):
    loaded = get_keypoint_set(_write(tmp_path, _VALID))
    assert loaded.flip_pairs == ((0, 2),) and loaded.flip_index == (2, 1, 0)
    assert loaded.links[1] == SkeletalLink(1, 2, "virtual", "lower")
    assert loaded.oks_sigmas == (0.05, 0.06, 0.05) and loaded.weights == (1.0, 1.5, 1.0)
    assert loaded.edges == ((0, 1), (1, 2)) and loaded.lower_body == (2,)
    hash(loaded)  # every field is a tuple
    assert loaded.to_config() == _VALID
    # Optional fields may be left out or null.
    minimal = {k: v for k, v in _VALID.items() if k not in ("joint_weights", "drawing_edges")}
    assert get_keypoint_set(dict(minimal, joint_weights=None)).weights == (1.0, 1.0, 1.0)


@pytest.mark.parametrize("config, message", [
    # OKS sigmas: all-zero sigmas used to be accepted (perfect predictions then scored AP 35.9).
    (_changed(oks_sigmas=[0.0, 0.0, 0.0]),
     r"oks_sigmas\[0\] \(keypoint 'left'\) must be a finite number > 0 .*Received: 0.0"),
    (_changed(oks_sigmas=[0.05, "x", 0.05]),
     r"oks_sigmas\[1\] \(keypoint 'centre'\) must be a finite number > 0 .*Received: 'x'"),
    (_changed(oks_sigmas=[0.05, 0.05, -0.1]), r"oks_sigmas\[2\] .*Received: -0.1"),
    (_changed(oks_sigmas=[0.05, float("nan"), 0.05]), r"oks_sigmas\[1\] .*Received: nan"),
    (_changed(oks_sigmas=[0.05, True, 0.05]), r"oks_sigmas\[1\] .*Received: True"),
    (_changed(oks_sigmas=[0.05, 0.05]), r"oks_sigmas has 2 values for 3 keypoints"),
    (_changed(oks_sigmas=0.05), r"oks_sigmas must be a list. Received: 0.05"),
    # Joint weights.
    (_changed(joint_weights=[1.0, -1.0, 1.0]),
     r"joint_weights\[1\] \(keypoint 'centre'\) must be a finite number >= 0"),
    (_changed(joint_weights=[1.0, float("inf"), 1.0]), r"joint_weights\[1\] .*Received: inf"),
    (_changed(joint_weights=[0, 0, 0]), r"joint_weights are all 0"),
    (_changed(joint_weights=[1.0]), r"joint_weights has 1 values for 3 keypoints"),
    # Flip pairs: `flip_pairs: 5` used to be a TypeError.
    (_changed(flip_pairs=5), r"flip_pairs must be a list. Received: 5"),
    (_changed(flip_pairs=[[0, 3]]), r"flip_pairs\[0\] refers to keypoint 3, but keypoint "
                                    r"indices are the integers 0 to 2 \(3 keypoints\)"),
    (_changed(flip_pairs=[[0, -1]]), r"flip_pairs\[0\] refers to keypoint -1"),
    (_changed(flip_pairs=[["0", 2]]), r"flip_pairs\[0\] refers to keypoint '0'"),
    (_changed(flip_pairs=[[0, 1.0]]), r"flip_pairs\[0\] refers to keypoint 1.0"),
    (_changed(flip_pairs=[[0, 1, 2]]), r"flip_pairs\[0\] must be a pair .*Received: \[0, 1, 2\]"),
    (_changed(flip_pairs=[0, 2]), r"flip_pairs\[0\] must be a pair .*Received: 0"),
    (_changed(flip_pairs=[[1, 1]]), r"flip_pairs\[0\] must name two different keypoints"),
    (_changed(flip_pairs=[[0, 2], [2, 1]]), r"flip_pairs\[1\]: keypoint 2 \('right'\) appears "
                                            r"in two flip pairs"),
    # Links.
    (_changed(links=[{"a": 0, "b": 7, "kind": "physical", "part": "upper"}]),
     r"links\[0\] \(b\) refers to keypoint 7"),
    (_changed(links=[{"a": 0, "b": 1, "kind": "bone", "part": "upper"}]),
     r"links\[0\]: SkeletalLink kind must be one of .*Received: kind='bone'"),
    (_changed(links=[{"a": "0", "b": 1, "kind": "physical", "part": "upper"}]),
     r"links\[0\]: SkeletalLink a must be a keypoint index .*Received: a='0'"),
    (_changed(links=[[0, 1, "physical", "upper"]]),
     r"links\[0\] must be an object with exactly the fields a, b, kind, part"),
    (_changed(links=[{"a": 0, "b": 1, "kind": "physical"}]), r"links\[0\] must be an object"),
    (_changed(links={"a": 0}), r"links must be a list of objects"),
    # Names, indices, fields.
    (_changed(keypoint_names=["a", "b", "a"]),
     r"keypoint_names must be unique; 'a' appear\(s\) more than once"),
    (_changed(keypoint_names=["a", 2, "c"]), r"keypoint_names\[1\] must be a non-empty string"),
    (_changed(keypoint_names=[], oks_sigmas=[]), r"keypoint_names is empty"),
    (_changed(upper_body=[0, 3]), r"upper_body\[1\] refers to keypoint 3"),
    (_changed(drawing_edges=[[0, 0]]), r"drawing_edges\[0\] must name two different keypoints"),
    (_changed(name=""), r"name must be a non-empty string"),
    (_changed(joint_weight=[1, 1, 1]), r"unknown field\(s\) joint_weight; the fields are"),
    ({k: v for k, v in _VALID.items() if k != "oks_sigmas"}, r"missing field\(s\): oks_sigmas"),
    ([_VALID], r"must be a JSON object with the fields name, keypoint_names"),
])
def test_a_bad_json_set_names_the_file_and_the_field(tmp_path, config, message):
    path = _write(tmp_path, config)
    with pytest.raises(ValueError, match=re.escape(path) + ": .*" + message):
        get_keypoint_set(path)
    # The same config as a dict: the same message, without a file.
    with pytest.raises(ValueError, match=message):
        KeypointSet.from_config(config)


def test_unreadable_and_missing_files_are_named(tmp_path):
    truncated = tmp_path / "truncated.json"
    truncated.write_text(json.dumps(_VALID)[:40])
    with pytest.raises(ValueError,
                       match=f"Cannot read keypoint set file {re.escape(str(truncated))}"):
        get_keypoint_set(str(truncated))
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValueError, match="Cannot read keypoint set file .*binary.json"):
        get_keypoint_set(str(binary))
    with pytest.raises(ValueError, match="Keypoint set file not found: .*nowhere.json"):
        get_keypoint_set(str(tmp_path / "nowhere.json"))
    with pytest.raises(ValueError, match=r"Unknown keypoint set 'cocoa'. Use one of \['coco', "):
        get_keypoint_set("cocoa")


def test_sets_made_in_python_are_checked_too():
    fields = dict(name="pair", keypoint_names=("a", "b"), flip_pairs=((0, 1),), links=(),
                  upper_body=(0,))
    with pytest.raises(ValueError, match=r"^Keypoint set 'pair': oks_sigmas\[0\] \(keypoint "
                                         r"'a'\) must be a finite number > 0"):
        KeypointSet(oks_sigmas=(0.0, 0.0), **fields)
    with pytest.raises(ValueError, match=r"links\[0\] must be a SkeletalLink"):
        KeypointSet(oks_sigmas=(0.1, 0.1), **dict(fields, links=((0, 1),)))
    with pytest.raises(ValueError, match=r"SkeletalLink b must be a keypoint index"):
        SkeletalLink(0, 1.5, "physical", "upper")
    # numpy numbers and lists are accepted and stored as Python tuples of ints / floats.
    made = KeypointSet(oks_sigmas=np.array([0.1, 0.2], np.float32), **dict(
        fields, flip_pairs=[[np.int64(0), 1]], upper_body=[np.int32(1)]))
    assert made.flip_pairs == ((0, 1),) and made.upper_body == (1,)
    assert made.oks_sigmas == pytest.approx((0.1, 0.2)) and type(made.oks_sigmas[0]) is float
