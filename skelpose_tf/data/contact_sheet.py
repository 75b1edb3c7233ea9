"""A PNG contact sheet of a COCO-format keypoint data set: images with their annotations drawn.

Each person's box is drawn with its annotation id, its labelled keypoints as discs (v=2, visible)
or rings (v=1, labelled but covered), coloured by side (drawing.LEFT_RGB / RIGHT_RGB / CENTRE_RGB).
Meant for checking a data set by eye, e.g. the synthetic one:

    python -m skelpose_tf.data.contact_sheet --data data/synthetic --split val --out sheet.png
"""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
from absl import app, flags

from skelpose_tf import drawing
from skelpose_tf.keypoints import get_keypoint_set

_DATA = flags.DEFINE_string("data", None, "Data set root holding images/ and annotations/.")
_SPLIT = flags.DEFINE_enum("split", "val", ["train", "val"], "Which split to show.")
_OUT = flags.DEFINE_string("out", None, "Output PNG path.")
_NUM = flags.DEFINE_integer("num", 12, "Number of images on the sheet.")
_COLS = flags.DEFINE_integer("cols", 4, "Images per row.")
_START = flags.DEFINE_integer("start", 0, "Index (in the annotation file's order) of the first image.")
_SCALE = flags.DEFINE_float("scale", 1.0, "Resize factor applied to each image before drawing.")
_KEYPOINTS = flags.DEFINE_string("keypoint_set", "coco", "Keypoint set name or JSON path.")


def make_contact_sheet(annotation_file, image_dir, keypoint_set, num=12, cols=4, start=0,
                       scale=1.0):  # fmt: skip
    """Draw the annotations of `num` images (from index `start`) into one RGB uint8 grid.

    Args:
        annotation_file: COCO keypoint JSON.
        image_dir: directory holding the images named by the JSON's `file_name`.
        keypoint_set: KeypointSet matching the JSON's keypoints.
        num, cols, start: how many images, images per row, first image index.
        scale: resize factor for each image (annotations are scaled with it, keeping the pixel
            centre convention: x' = (x + 0.5) * scale - 0.5).
    """
    with open(annotation_file) as f:
        coco = json.load(f)
    images = coco["images"][start:start + num]
    if not images:
        raise ValueError(f"No images from index {start} in {annotation_file} "
                         f"({len(coco['images'])} images)")  # fmt: skip
    by_image = {}
    for annotation in coco["annotations"]:
        by_image.setdefault(annotation["image_id"], []).append(annotation)
    tiles, captions = [], []
    k = keypoint_set.num_keypoints
    for entry in images:
        path = os.path.join(image_dir, entry["file_name"])
        bgr = cv2.imread(path)
        if bgr is None:
            raise ValueError(f"Cannot read image {path} (listed in {annotation_file})")
        canvas = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        if scale != 1.0:
            canvas = cv2.resize(canvas, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        people = by_image.get(entry["id"], [])
        for annotation in people:
            x, y, w, h = annotation["bbox"]
            box = [(x + 0.5) * scale - 0.5, (y + 0.5) * scale - 0.5, w * scale, h * scale]
            canvas = drawing.draw_box(canvas, box, (255, 255, 255), 1, str(annotation["id"] % 100))
            values = np.asarray(annotation["keypoints"], np.float64).reshape(k, 3)
            points = (values[:, :2] + 0.5) * scale - 0.5
            canvas = drawing.draw_pose(canvas, points, values[:, 2], keypoint_set, threshold=0,
                                       hollow=values[:, 2] == 1)  # fmt: skip
        labelled = sum(a["num_keypoints"] for a in people)
        tiles.append(canvas)
        captions.append(f"{entry['file_name']}: {len(people)} people, {labelled} kpts")
    return drawing.tile_images(tiles, cols, captions)


def main(argv):
    del argv
    if not _DATA.value or not _OUT.value:
        raise app.UsageError("--data and --out are required.")
    split = _SPLIT.value
    sheet = make_contact_sheet(
        os.path.join(_DATA.value, "annotations", f"person_keypoints_{split}.json"),
        os.path.join(_DATA.value, "images", split),
        get_keypoint_set(_KEYPOINTS.value),
        num=_NUM.value,
        cols=_COLS.value,
        start=_START.value,
        scale=_SCALE.value,
    )
    out_dir = os.path.dirname(os.path.abspath(_OUT.value))
    os.makedirs(out_dir, exist_ok=True)
    if not cv2.imwrite(_OUT.value, cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR),
                       [cv2.IMWRITE_PNG_COMPRESSION, 9]):  # fmt: skip
        raise OSError(f"Could not write {_OUT.value}")
    print(f"Wrote {_OUT.value} ({sheet.shape[1]}x{sheet.shape[0]}, "
          f"{os.path.getsize(_OUT.value) / 1024:.0f} KB)")  # fmt: skip


if __name__ == "__main__":
    app.run(main)
