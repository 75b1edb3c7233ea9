"""Predict poses on your own images (top-down): keypoints JSON and skeleton drawings.

    python predict.py --weights runs/demo --image photo.jpg              # whole image = 1 person
    python predict.py --weights runs/demo --image photos/ --boxes boxes.json --show_maps

--boxes is a JSON object mapping file names to person boxes [x, y, w, h] (or {"bbox": [...],
"score": s}); for one image a plain list of boxes also works. Images without boxes use the
whole image as one person box, and the output says so. Writes into --out_dir:
`predictions.json` (keypoints in original-image pixels), `<image>_pose.png` and, with
--show_maps, `<image>_person<i>_maps.png` (skeletal heatmaps, upper/lower/full-body attention
and keypoint heatmaps over the input crop, as the paper's Fig. 1-2).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import sys  # noqa: E402

from absl import app, flags, logging  # noqa: E402

from skelpose_tf import predict_lib  # noqa: E402
from skelpose_tf.codec import DECODERS  # noqa: E402
from skelpose_tf.model_loading import (describe_model, load_pose_model,  # noqa: E402
                                       resolve_checkpoint)

_WEIGHTS = flags.DEFINE_string(
    "weights", "runs/demo", "A .keras file, a run directory (its best.keras) or a .weights.h5 "
    "file (then give the architecture flags).")
_IMAGE = flags.DEFINE_string("image", None, "An image file, or a folder of images.")
_BOXES = flags.DEFINE_string("boxes", "", "Optional JSON of person boxes [x, y, w, h] per image.")
_OUT_DIR = flags.DEFINE_string("out_dir", "predictions", "Output folder.")
_DECODER = flags.DEFINE_enum("decoder", "weighted", DECODERS, "Heatmap decoder.")
_TOP_N = flags.DEFINE_integer("top_n", 20, "N of the weighted decoder (paper Eq. 4-5).")
_FLIP_TEST = flags.DEFINE_boolean("flip_test", True, "Average with the mirrored crop's heatmaps.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 16, "Person crops per forward pass.",
                                   lower_bound=1)
_SHOW_MAPS = flags.DEFINE_boolean("show_maps", False,
                                  "Also write each person's heatmap / attention-map panel.")
_THRESHOLD = flags.DEFINE_float("draw_threshold", 0.3, "Draw keypoints scoring above this.")
_WIDTH = flags.DEFINE_integer("width", None, ".weights.h5 only: HRNet width (32, 48, ...).")
_INPUT_SIZE = flags.DEFINE_string("input_size", None, ".weights.h5 only: input HxW, e.g. 256x192.")
_KEYPOINT_SET = flags.DEFINE_string("keypoint_set", None,
                                    ".weights.h5 only: keypoint set (coco, mpii or a JSON file).")
_SKELETAL = flags.DEFINE_boolean("skeletal_attention", None,
                                 ".weights.h5 only: with the skeletal attention module.")
flags.mark_flag_as_required("image")


def _predict():
    images = predict_lib.list_images(_IMAGE.value)
    boxes = predict_lib.read_boxes_file(_BOXES.value, images) if _BOXES.value else None
    resolve_checkpoint(_WEIGHTS.value)
    network, checkpoint = load_pose_model(_WEIGHTS.value, _WIDTH.value, _INPUT_SIZE.value,
                                          _KEYPOINT_SET.value, _SKELETAL.value)
    print(f"model: {describe_model(network)} from {checkpoint}", flush=True)
    predictions = predict_lib.predict_images(
        network, images, boxes, _BOXES.value, decoder=_DECODER.value,
        flip_test=_FLIP_TEST.value, batch_size=_BATCH_SIZE.value, top_n=_TOP_N.value)
    payload = predict_lib.write_outputs(
        predictions, network, _OUT_DIR.value, weights=checkpoint, decoder=_DECODER.value,
        flip_test=_FLIP_TEST.value, show_maps=_SHOW_MAPS.value, threshold=_THRESHOLD.value,
        top_n=_TOP_N.value)
    for entry in payload["images"]:
        people = len(entry["people"])
        print(f"{entry['image']}: {people} {'person' if people == 1 else 'people'} "
              f"(person boxes: {entry['box_source']}) -> {entry['drawing']}"
              + (f" + {len(entry['maps'])} maps panel(s)" if "maps" in entry else ""))
    if _SHOW_MAPS.value and not network.skeletal_attention:
        print("note: the model has no skeletal attention module; the maps panels show the "
              "keypoint heatmaps only")
    print(f"keypoints: {os.path.join(_OUT_DIR.value, 'predictions.json')}")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # skipped inputs are summarised in the report
    try:
        _predict()
    except ValueError as error:
        sys.exit(f"predict.py: error: {error}")


if __name__ == "__main__":
    app.run(main)
