"""Predict poses on your own images (top-down): keypoints JSON and skeleton drawings.

    python predict.py --weights runs/demo --image photo.jpg              # whole image = 1 person
    python predict.py --weights runs/demo --image photos/ --boxes boxes.json --show_maps

--boxes is a JSON object mapping file names to person boxes [x, y, w, h] (or {"bbox": [...],
"score": s}); for one image a plain list of boxes also works. Images without boxes use the
whole image as one person box, and the output says so. Writes into --out_dir:
`predictions.json` (keypoints in original-image pixels), `<image>_pose.png` and, with
--show_maps, `<image>_person<i>_maps.png` (skeletal heatmaps, upper/lower/full-body attention
and keypoint heatmaps over the input crop, as the paper's Fig. 1-2).

In a folder, an image that cannot be read (truncated, corrupt) is skipped: the others are
predicted and written, the skipped ones are printed and listed under "skipped" in
predictions.json (exit status 0; 1 with one line when no image could be read). A single image
given by name must be readable.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


from absl import flags, logging  # noqa: E402

from skelpose_tf import cli, image_prediction, model_flags  # noqa: E402
from skelpose_tf.data.records import SkipReport  # noqa: E402
from skelpose_tf.model_loading import describe_model, resolve_checkpoint  # noqa: E402

_WEIGHTS = model_flags.define_weights_flag()
model_flags.define_architecture_flags()
model_flags.define_decoding_flags()
_IMAGE = flags.DEFINE_string("image", None, "An image file, or a folder of images.")
_BOXES = flags.DEFINE_string("boxes", "", "Optional JSON of person boxes [x, y, w, h] per image.")
_OUT_DIR = flags.DEFINE_string("out_dir", "predictions", "Output folder.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 16, "Person crops per forward pass.",
                                   lower_bound=1)
_SHOW_MAPS = flags.DEFINE_boolean("show_maps", False,
                                  "Also write each person's heatmap / attention-map panel.")
_THRESHOLD = flags.DEFINE_float("draw_threshold", 0.3, "Draw keypoints scoring above this.")
flags.mark_flag_as_required("image")


def _predict():
    images = image_prediction.list_images(_IMAGE.value)
    boxes = image_prediction.read_boxes_file(_BOXES.value, images) if _BOXES.value else None
    resolve_checkpoint(_WEIGHTS.value)
    network, checkpoint = model_flags.load_model(_WEIGHTS.value)
    print(f"model: {describe_model(network)} from {checkpoint}", flush=True)
    flip_test = model_flags.value("flip_test")
    # A folder: a bad file is a counted skip; an image named explicitly must be readable.
    skipped = [] if os.path.isdir(_IMAGE.value) else None
    predictions = image_prediction.predict_images(
        network, images, boxes, _BOXES.value, flip_test=flip_test,
        batch_size=_BATCH_SIZE.value, keep_maps=_SHOW_MAPS.value, skipped=skipped)
    skipped = skipped or []
    if not predictions:
        report = SkipReport(log_limit=0)
        for entry in skipped:
            report.skip(entry["reason"], entry["image"])
        raise cli.UserError(f"None of the {len(images)} images in {_IMAGE.value} could be "
                            f"read; nothing written ({report.one_line()}).")
    payload = image_prediction.write_outputs(
        predictions, network, _OUT_DIR.value, weights=checkpoint, flip_test=flip_test,
        show_maps=_SHOW_MAPS.value, threshold=_THRESHOLD.value, skipped=skipped)
    for entry in payload["images"]:
        people = len(entry["people"])
        print(f"{entry['image']}: {people} {'person' if people == 1 else 'people'} "
              f"(person boxes: {entry['box_source']}) -> {entry['drawing']}"
              + (f" + {len(entry['maps'])} maps panel(s)" if "maps" in entry else ""))
    for entry in skipped:
        print(f"{entry['image']}: skipped ({entry['reason']})")
    if _SHOW_MAPS.value and not network.skeletal_attention:
        print("note: the model has no skeletal attention module; the maps panels show the "
              "keypoint heatmaps only")
    print(f"images: {len(predictions)} of {len(images)} predicted"
          + (f", {len(skipped)} skipped (listed under 'skipped' in predictions.json)"
             if skipped else ""))
    print(f"keypoints: {os.path.join(_OUT_DIR.value, 'predictions.json')}")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # skipped inputs are summarised in the report
    _predict()


if __name__ == "__main__":
    cli.run(main)
