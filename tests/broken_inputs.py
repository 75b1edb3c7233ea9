"""A corpus of broken inputs, as a user's would be: hand-made faults and a seeded fuzzer.

- `annotation_faults(valid)`: named, hand-made faults of a valid COCO keypoint file (the cases
  issue 13 found and their neighbours): duplicate ids, wrong types, short keypoints, missing
  fields, truncation, ...
- `fuzzed_annotations(valid, seed, count)`: seeded mutations of the same file: a field of a
  random record dropped or retyped (string, null, list, object, negative, NaN), a record
  duplicated, the text truncated at a random byte.
- `keypoint_set_faults(valid)`: broken keypoint-set JSON files.
- `image_faults()`: undecodable, truncated and repaired images (bytes).

Each case is `(name, content)`: the text of the file to write (a dict is written as JSON).
"""

from __future__ import annotations

import copy
import json
import math
import random

import numpy as np

from data_fixtures import encode

RETYPED_VALUES = ("x", None, [], {}, -1, float("nan"), 1e30)


def annotation_faults(valid: dict) -> list:
    """Hand-made faults of the COCO keypoint file `valid` (a dict), as (name, content)."""
    cases = []

    def variant(name, change):
        data = copy.deepcopy(valid)
        result = change(data)
        cases.append((name, data if result is None else result))

    annotations = valid["annotations"]
    variant("duplicate annotation id", lambda d: d["annotations"][1].update(
        id=d["annotations"][0]["id"]))
    variant("duplicate image id", lambda d: d["images"].append(dict(d["images"][0])))
    variant("annotations is an object", lambda d: d.update(annotations={"0": annotations[0]}))
    variant("images is an object", lambda d: d.update(images={"0": d["images"][0]}))
    variant("no categories", lambda d: d.pop("categories"))
    variant("no annotations", lambda d: d.pop("annotations"))
    variant("annotation without image_id", lambda d: d["annotations"][0].pop("image_id"))
    variant("annotation of an unknown image", lambda d: d["annotations"][0].update(
        image_id=999))
    variant("short keypoints", lambda d: d["annotations"][0].update(
        keypoints=d["annotations"][0]["keypoints"][:-1]))
    variant("string keypoints", lambda d: d["annotations"][0].update(keypoints="1,2,3"))
    variant("keypoints of strings", lambda d: d["annotations"][0].update(
        keypoints=[str(v) for v in d["annotations"][0]["keypoints"]]))
    variant("bbox of three numbers", lambda d: d["annotations"][0].update(bbox=[1, 2, 3]))
    variant("image without file_name", lambda d: d["images"][0].pop("file_name"))
    variant("image with a string id", lambda d: d["images"][0].update(id="one"))
    variant("top level is a list", lambda d: [d])
    text = json.dumps(valid)
    cases.append(("truncated JSON", text[: len(text) // 2]))
    cases.append(("empty file", ""))
    return cases


def fuzzed_annotations(valid: dict, seed: int, count: int) -> list:
    """`count` seeded mutations of the COCO keypoint file `valid`, as (name, content)."""
    rng = random.Random(seed)
    cases = []
    for n in range(count):
        data = copy.deepcopy(valid)
        kind = rng.choice(("drop", "retype", "duplicate", "truncate"))
        if kind == "truncate":
            text = json.dumps(valid)
            cut = rng.randrange(1, len(text))
            cases.append((f"fuzz {n}: truncated at byte {cut}", text[:cut]))
            continue
        section = rng.choice(("images", "annotations", "categories"))
        records = data[section]
        index = rng.randrange(len(records))
        if kind == "duplicate":
            records.append(copy.deepcopy(records[index]))
            cases.append((f"fuzz {n}: {section}[{index}] duplicated", data))
            continue
        field = rng.choice(sorted(records[index]))
        if kind == "drop":
            records[index].pop(field)
            cases.append((f"fuzz {n}: {section}[{index}].{field} dropped", data))
        else:
            value = rng.choice(RETYPED_VALUES)
            records[index][field] = value
            shown = "NaN" if isinstance(value, float) and math.isnan(value) else repr(value)
            cases.append((f"fuzz {n}: {section}[{index}].{field} = {shown}", data))
    return cases


def keypoint_set_faults(valid: dict) -> list:
    """Broken keypoint-set JSON files derived from the config dict `valid`."""
    cases = []

    def variant(name, change):
        data = copy.deepcopy(valid)
        change(data)
        cases.append((name, data))

    variant("all OKS sigmas 0", lambda d: d.update(oks_sigmas=[0.0] * len(d["keypoint_names"])))
    variant("a sigma that is a string", lambda d: d["oks_sigmas"].__setitem__(0, "x"))
    variant("a negative sigma", lambda d: d["oks_sigmas"].__setitem__(0, -0.1))
    variant("sigmas of the wrong length", lambda d: d["oks_sigmas"].pop())
    variant("flip_pairs is a number", lambda d: d.update(flip_pairs=5))
    variant("a flip pair out of range", lambda d: d.update(flip_pairs=[[0, 99]]))
    variant("duplicate keypoint names", lambda d: d["keypoint_names"].__setitem__(
        1, d["keypoint_names"][0]))
    text = json.dumps(valid)
    cases.append(("truncated JSON", text[: len(text) // 2]))
    return cases


def image_faults(height=120, width=160) -> dict:
    """{name: (file name, bytes)} of images a reader must skip or repair."""
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    jpeg = encode(picture, ".jpg", 90)
    grey = encode(picture[..., :1].repeat(3, axis=-1), ".jpg", 90)
    return {
        "undecodable": ("garbage.jpg", b"this is not an image" * 10),
        "truncated JPEG": ("truncated.jpg", jpeg[: len(jpeg) // 3]),
        "empty file": ("empty.jpg", b""),
        "PNG named .jpg": ("png_inside.jpg", encode(picture, ".png")),
        "grey JPEG": ("grey.jpg", grey),
    }


def write_case(path: str, content) -> str:
    """Write one case's content (text, or a JSON-ready object) to `path`."""
    with open(path, "w") as file:
        file.write(content if isinstance(content, str) else json.dumps(content))
    return path
