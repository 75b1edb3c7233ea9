"""COCO keypoint JSON files, read and checked before pycocotools sees them.

pycocotools trusts its input: a missing field is a `KeyError` deep inside `COCOeval`, an
`annotations` object instead of a list a `TypeError`, and **duplicate ids are silently
overwritten** in its index (`anns[ann["id"]] = ann`), so that perfect predictions score
AP 79.5 / AR 87.5 instead of 100. The functions here check what `COCO.createIndex`,
`COCO.loadRes` and `COCOeval(..., "keypoints")` read, and raise a one-line `ValueError` that
names the file, the record and the field, and says what to do.

Duplicate image or annotation ids are refused, naming the first ones: renumbering them here
would silently change which ground truth a result is matched with.

Ground truth (`check_ground_truth`), a JSON object with the lists:
- `images`: objects with a unique integer `id`;
- `categories`: objects with a unique integer `id`, `keypoints` (when present) a list of names;
- `annotations`: objects with a unique integer `id`, an `image_id` of `images` and a
  `category_id` of `categories`. An annotation of a keypoint category (one that lists
  `keypoints`, or the category of annotations that have them) also needs `keypoints`: 3K
  finite numbers (x, y, v) with v in {0, 1, 2} and K the category's keypoint count, `bbox`:
  4 finite numbers (x, y, w, h) with w, h >= 0, `area`: a finite number >= 0 (> 0 for a
  person with labelled keypoints: OKS divides by it), `iscrowd`: 0 or 1 and `num_keypoints`:
  an integer >= 0 (pycocotools ignores the person when it is 0).

Results (`check_results`): a non-empty list of objects with an `image_id` of the annotation
file, the keypoint category's `category_id`, `keypoints`: 3K finite numbers (x, y, score) and
a finite `score`; a `bbox`, when the first result has one, in every result (4 finite numbers).

No TensorFlow is imported here.
"""

from __future__ import annotations

import json
import math
import os

_MAX_NAMED = 5
_NUMBER_TYPES = (int, float)


def load_json(path: str, what: str):
    """The parsed JSON file at `path`.

    Args:
        path: the file.
        what: what the file is, for messages ("COCO annotation file").

    Raises:
        ValueError: the file is missing or unreadable, or not valid JSON (naming `path`).
    """
    if not os.path.isfile(path):
        raise ValueError(f"{what} not found: {path}")
    try:
        with open(path) as file:
            return json.load(file)
    except json.JSONDecodeError as error:
        raise ValueError(f"{what} {path} is not valid JSON ({error}): is it truncated or "
                         "damaged? Write or download it again.") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"Cannot read {what} {path}: {error}") from None


def first_repeated(ids) -> list:
    """The values that occur more than once in `ids`, in the order of their second occurrence."""
    seen, repeated = set(), {}
    for value in ids:
        if value in seen:
            repeated.setdefault(value, None)
        seen.add(value)
    return list(repeated)


def refuse_duplicates(ids, path: str, what: str) -> None:
    """Raise a ValueError naming the first repeated `ids` (of `what`, e.g. "image") in `path`.

    pycocotools (and the readers' tables) keep only the last of two records with one id, so a
    duplicate silently drops ground truth; renumbering would silently change which ground
    truth a result matches. The user has to decide.
    """
    repeated = first_repeated(ids)
    if repeated:
        raise ValueError(
            f"{path}: {len(repeated)} {what} id(s) occur more than once: {name_some(repeated)}. "
            f"Give every {what} its own id and fix the references to it: pycocotools' index "
            f"silently keeps one {what} per id, and renumbering here would change which ground "
            "truth a result is matched with."
        )


def check_ground_truth(data, path: str) -> None:
    """Check a parsed COCO keypoint annotation file (the rules of the module docstring).

    Args:
        data: the parsed JSON.
        path: the file's name, for messages.

    Raises:
        ValueError: the first problem, naming `path`, the record and the field.
    """
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a COCO annotation file must be a JSON object with the lists "
                         f"'images', 'annotations' and 'categories'. Received a "
                         f"{_type_name(data)}.")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            got = "nothing" if key not in data else f"a {_type_name(data[key])}"
            raise ValueError(f"{path}: field {key!r} must be a list of objects (a COCO "
                             f"annotation file). Received {got}.")
    categories = {}
    for position, category in enumerate(data["categories"]):
        where = f"{path} category #{position}"
        _check_object(category, where)
        category_id = _integer(category, "id", where)
        names = category.get("keypoints")
        if names is not None and (not isinstance(names, list)
                                  or not all(isinstance(n, str) for n in names)):
            raise ValueError(f"{where} (id {category_id}) field 'keypoints' must be a list of "
                             f"keypoint names. Received: {names!r}")
        categories.setdefault(category_id, category)
    refuse_duplicates([c["id"] for c in data["categories"]], path, "category")
    image_ids = set()
    for position, image in enumerate(data["images"]):
        where = f"{path} image #{position}"
        _check_object(image, where)
        image_ids.add(_integer(image, "id", where))
    refuse_duplicates([image["id"] for image in data["images"]], path, "image")
    sizes = {c_id: len(c["keypoints"]) for c_id, c in categories.items() if c.get("keypoints")}
    for position, annotation in enumerate(data["annotations"]):
        where = f"{path} annotation #{position}"
        _check_object(annotation, where)
        where = f"{path} annotation id {_integer(annotation, 'id', where)}"
        image_id = _integer(annotation, "image_id", where)
        if image_id not in image_ids:
            raise ValueError(f"{where} field 'image_id' is {image_id}, which is not an id of "
                             "'images': add the image or remove the annotation.")
        category_id = _integer(annotation, "category_id", where)
        if category_id not in categories:
            raise ValueError(f"{where} field 'category_id' is {category_id}, which is not an id "
                             f"of 'categories' ({name_some(sorted(categories))}).")
        if category_id in sizes or "keypoints" in annotation:
            _check_person(annotation, where, sizes, category_id)
    refuse_duplicates([a["id"] for a in data["annotations"]], path, "annotation")


def _check_person(annotation, where, sizes, category_id) -> None:
    """The fields COCOeval reads from a ground-truth person; `sizes` learns K per category."""
    keypoints = _numbers(annotation, "keypoints", where)
    size = sizes.get(category_id)
    if size is None:  # the category lists no keypoint names: its first person sets K
        if not keypoints or len(keypoints) % 3:
            raise ValueError(f"{where} field 'keypoints' must hold x, y, v for each keypoint (a "
                             f"multiple of 3 numbers). Received {len(keypoints)} numbers.")
        size = sizes[category_id] = len(keypoints) // 3
    if len(keypoints) != 3 * size:
        raise ValueError(f"{where} field 'keypoints' must hold {3 * size} numbers (x, y, v for "
                         f"the {size} keypoints of category {category_id}). Received "
                         f"{len(keypoints)}.")
    flags = keypoints[2::3]
    if any(v not in (0, 1, 2) for v in flags):
        raise ValueError(f"{where} field 'keypoints': every third value (the visibility flag v) "
                         f"must be 0, 1 or 2. Received: {[v for v in flags if v not in (0, 1, 2)]}")
    bbox = _numbers(annotation, "bbox", where)
    if len(bbox) != 4 or bbox[2] < 0 or bbox[3] < 0:
        raise ValueError(f"{where} field 'bbox' must be [x, y, width, height] with width and "
                         f"height >= 0. Received: {bbox!r}")
    iscrowd = annotation.get("iscrowd")
    if iscrowd not in (0, 1) or isinstance(iscrowd, bool):
        raise ValueError(f"{where} field 'iscrowd' must be 0 or 1 (pycocotools needs it). "
                         f"Received: {iscrowd!r}")
    num_keypoints = _integer(annotation, "num_keypoints", where)
    if num_keypoints < 0:
        raise ValueError(f"{where} field 'num_keypoints' must be >= 0. Received: {num_keypoints}")
    area = annotation.get("area")
    if not _is_finite_number(area) or area < 0:
        raise ValueError(f"{where} field 'area' must be a finite number >= 0 (the person's area "
                         f"in pixels). Received: {area!r}")
    if area == 0 and num_keypoints > 0 and not iscrowd:
        raise ValueError(f"{where} has labelled keypoints but 'area' 0: OKS divides by the area, "
                         "so no prediction could match it. Give the person's area in pixels.")


def check_results(results, path: str, image_ids, category_id: int, num_keypoints: int,
                  source: str) -> None:
    """Check parsed COCO keypoint results against their annotation file.

    Args:
        results: the parsed JSON (should be a list of per-person dicts).
        path: the results file's name, for messages.
        image_ids: the annotation file's image ids.
        category_id: its keypoint category.
        num_keypoints: K of the keypoint set.
        source: the annotation file's name, for messages.

    Raises:
        ValueError: the first problem, naming `path`, the result (position and image id) and
            the field; results for unknown images or with another keypoint count are counted
            and the first few named.
    """
    if not isinstance(results, list) or not results:
        got = f"a {_type_name(results)}" if not isinstance(results, list) else "an empty list"
        raise ValueError(f"{path}: a COCO results file must be a non-empty JSON list of "
                         f"per-person results {{image_id, category_id, keypoints, score}}. "
                         f"Received {got}.")
    # pycocotools reads the boxes of every result when the first one has a non-empty bbox.
    with_bbox = isinstance(results[0], dict) and results[0].get("bbox", []) != []
    wrong_count, unknown = [], []
    for position, result in enumerate(results):
        where = f"{path} result #{position}"
        _check_object(result, where)
        image_id = _integer(result, "image_id", where)
        where = f"{where} (image id {image_id})"
        if image_id not in image_ids:
            unknown.append(image_id)
        if _integer(result, "category_id", where) != category_id:
            raise ValueError(f"{where} field 'category_id' is {result['category_id']}, but the "
                             f"keypoint category of {source} is {category_id}: write "
                             f"category_id {category_id}, or score against the matching "
                             "annotation file.")
        if len(_numbers(result, "keypoints", where)) != 3 * num_keypoints:
            wrong_count.append(f"result #{position} (image id {image_id})")
        score = result.get("score")
        if not _is_finite_number(score):
            raise ValueError(f"{where} field 'score' must be a finite number (the person's "
                             f"confidence). Received: {score!r}")
        if with_bbox and len(_numbers(result, "bbox", where)) != 4:
            raise ValueError(f"{where} field 'bbox' must be [x, y, width, height] (the first "
                             f"result has one, so pycocotools reads it from every result).")
    if wrong_count:
        raise ValueError(f"{path}: {len(wrong_count)} result(s) do not hold {3 * num_keypoints} "
                         f"keypoint values (x, y, score for {num_keypoints} keypoints), e.g. "
                         f"{wrong_count[0]}. Is the keypoint set (evaluate.py --keypoint_set) "
                         "the one of the predictions?")
    if unknown:
        unknown = sorted(set(unknown))
        raise ValueError(f"{path}: predictions for {len(unknown)} image id(s) that are not in the "
                         f"annotation file {source}: {name_some(unknown)}. Are the "
                         "predictions for another split or data set?")


# Small checks ------------------------------------------------------------------------------------
def _type_name(value) -> str:
    return {dict: "JSON object", list: "list", str: "string"}.get(type(value),
                                                                  type(value).__name__)


def name_some(values) -> str:
    """The first few `values` as text ("3, 5, 9 and 12 more")."""
    values = list(values)
    shown = ", ".join(str(v) for v in values[:_MAX_NAMED])
    return shown + (f" and {len(values) - _MAX_NAMED} more" if len(values) > _MAX_NAMED else "")


def _check_object(value, where) -> None:
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be a JSON object. Received: {_short(value)}")


def _integer(record, field, where) -> int:
    """record[field] as an int (an integral float such as 7.0 is accepted, as pycocotools
    matches it with 7)."""
    value = record.get(field)
    if type(value) is float and value.is_integer():
        return int(value)
    if type(value) is not int:
        missing = field not in record
        raise ValueError(f"{where} " + (f"has no field {field!r} (an integer)" if missing else
                                        f"field {field!r} must be an integer. Received: "
                                        f"{_short(value)}") + ".")
    return value


def _is_finite_number(value) -> bool:
    return type(value) in _NUMBER_TYPES and math.isfinite(value)


def _numbers(record, field, where) -> list:
    """record[field] as a list of finite JSON numbers (no strings, booleans, null, NaN)."""
    values = record.get(field)
    if not isinstance(values, list):
        missing = field not in record
        raise ValueError(f"{where} " + (f"has no field {field!r} (a list of numbers)"
                                        if missing else
                                        f"field {field!r} must be a list of numbers. "
                                        f"Received: {_short(values)}") + ".")
    for index, value in enumerate(values):
        if not _is_finite_number(value):
            raise ValueError(f"{where} field {field!r}[{index}] must be a finite number. "
                             f"Received: {value!r}")
    return values


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
