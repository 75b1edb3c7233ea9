"""A PNG contact sheet of a COCO-format keypoint data set: images with their annotations drawn.

Each person's box is drawn numbered within its image, its labelled keypoints as discs (v=2, visible)
or rings (v=1, labelled but covered), coloured by side (drawing.LEFT_RGB / RIGHT_RGB / CENTRE_RGB).
Meant for checking a data set by eye, e.g. the synthetic one:

    python -m skelpose_tf.data.contact_sheet --data data/synthetic --split val --out sheet.png
"""

from __future__ import annotations

import functools
import json
import os

import cv2
import numpy as np
from absl import app, flags

from skelpose_tf import drawing
from skelpose_tf.keypoints import get_keypoint_set


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
        for number, annotation in enumerate(people, start=1):
            x, y, w, h = annotation["bbox"]
            box = [(x + 0.5) * scale - 0.5, (y + 0.5) * scale - 0.5, w * scale, h * scale]
            canvas = drawing.draw_box(canvas, box, (255, 255, 255), 1, str(number))
            values = np.asarray(annotation["keypoints"], np.float64).reshape(k, 3)
            points = (values[:, :2] + 0.5) * scale - 0.5
            canvas = drawing.draw_pose(canvas, points, values[:, 2], keypoint_set, threshold=0,
                                       hollow=values[:, 2] == 1)  # fmt: skip
        labelled = sum(a["num_keypoints"] for a in people)
        tiles.append(canvas)
        captions.append(f"{entry['file_name']}: {len(people)} people, {labelled} kpts")
    return drawing.tile_images(tiles, cols, captions)


def _define_flags() -> dict:
    """Command-line flags, defined only when this module runs as a script (so that importing
    `make_contact_sheet` elsewhere defines no flags)."""
    return {
        "data": flags.DEFINE_string("data", None, "Data set root (images/, annotations/)."),
        "split": flags.DEFINE_enum("split", "val", ["train", "val"], "Which split to show."),
        "out": flags.DEFINE_string("out", None, "Output PNG path."),
        "num": flags.DEFINE_integer("num", 12, "Number of images on the sheet."),
        "cols": flags.DEFINE_integer("cols", 4, "Images per row."),
        "start": flags.DEFINE_integer("start", 0, "Index of the first image in the JSON."),
        "scale": flags.DEFINE_float("scale", 1.0, "Resize factor applied to each image."),
        "bits": flags.DEFINE_integer(
            "bits", 8, "Bits kept per colour channel in the PNG (6 makes documentation sheets of "
            "these noisy images about 40% smaller with no visible change)."),
        "keypoint_set": flags.DEFINE_string("keypoint_set", "coco", "Keypoint set or JSON path."),
    }


def _main(flag_holders: dict, argv) -> None:
    del argv
    values = {name: holder.value for name, holder in flag_holders.items()}
    if not values["data"] or not values["out"]:
        raise app.UsageError("--data and --out are required.")
    if not 1 <= values["bits"] <= 8:
        raise app.UsageError(f"--bits must be in 1..8. Received: {values['bits']}")
    split = values["split"]
    sheet = make_contact_sheet(
        os.path.join(values["data"], "annotations", f"person_keypoints_{split}.json"),
        os.path.join(values["data"], "images", split),
        get_keypoint_set(values["keypoint_set"]),
        num=values["num"],
        cols=values["cols"],
        start=values["start"],
        scale=values["scale"],
    )
    dropped = 8 - values["bits"]
    if dropped:  # keep the top bits, centred in the dropped range
        sheet = (sheet >> dropped << dropped) + (1 << (dropped - 1))
    out = values["out"]
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    bgr = cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(out, bgr, [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise OSError(f"Could not write {out}")
    print(f"Wrote {out} ({sheet.shape[1]}x{sheet.shape[0]}, {os.path.getsize(out) / 1024:.0f} KB)")


if __name__ == "__main__":
    from skelpose_tf import cli

    cli.run(functools.partial(_main, _define_flags()),
            "python -m skelpose_tf.data.contact_sheet")
