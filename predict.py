"""Predict poses on your own images (top-down): every person found, keypoints JSON and drawings.

    python predict.py --weights runs/demo --image photo.jpg             # HOG person detector
    python predict.py --weights runs/demo --image photos/ --detector=boxes:boxes.json --show_maps
    python predict.py --weights export/saved_model --image photo.jpg \
        --detector=saved_model:ssd_mobilenet/saved_model --det_score=0.4
    python predict.py --weights runs/demo --video clip.mp4 --smooth --detect_every=4
    python predict.py --weights runs/demo --camera 0          # Ctrl-C ends the recording

--weights: a .keras file, a run directory, a .weights.h5 file (with the architecture flags), a
SavedModel export directory or a .tflite export (`skelpose_tf.estimator.PoseEstimator.load`).
--detector (`skelpose_tf.detectors`): `hog` (default, OpenCV's HOG people detector, offline;
`hog:SIDE` finds smaller people), `saved_model:DIR` (a TF Object Detection API export),
`keras_hub:PRESET_OR_DIR` (a keras-hub ObjectDetector, `pip install .[detectors]`),
`boxes:FILE` (a JSON object mapping file names to boxes [x, y, w, h] or {"bbox", "score"}, a
plain list for one image, or COCO detection results; images the file does not list use the
whole image as one person box, and the output says so) or `none` (whole image). --boxes FILE is
the old spelling of --detector=boxes:FILE. --annotations names a COCO annotation file whose
image ids the COCO outputs use (and that matches COCO detection results to file names);
without it an image's id is its numeric file stem.

Writes into --out_dir: `predictions.json` (keypoints in original-image pixels),
`coco_results.json` (COCO keypoint results for pycocotools' loadRes), `<image>_pose.png`
(boxes, scores and skeletons) and, with --show_maps, `<image>_person<i>_maps.png` (skeletal
heatmaps, upper/lower/full-body attention and keypoint heatmaps over the input crop, as the
paper's Fig. 1-2).

--video FILE / --camera N (`skelpose_tf.video_prediction`): people get track ids across frames,
the detector runs on every --detect_every-th frame (people are followed from their last pose in
between), --smooth applies One-Euro smoothing per track. Writes `<video>_poses.mp4` (skeletons
and track ids drawn), `<video>_poses.jsonl` (one COCO-style record per frame and person, with
frame, time and track id) and `<video>_summary.json`, with a progress line in frames/s.

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
from skelpose_tf.detectors import DEFAULT_NMS_IOU, image_ids_by_name  # noqa: E402
from skelpose_tf.video_prediction import (define_video_flags, predict_video,  # noqa: E402
                                          video_options, video_source)

_WEIGHTS = model_flags.define_weights_flag(
    help_text=model_flags.WEIGHTS_HELP + " Or an export: a SavedModel directory or a .tflite "
    "file.")
model_flags.define_architecture_flags()
model_flags.define_decoding_flags()
_IMAGE = flags.DEFINE_string("image", None, "An image file, or a folder of images.")
_VIDEO_FLAGS = define_video_flags()
_DETECTOR = flags.DEFINE_string(
    "detector", "hog", "Person detector: hog, hog:SIDE, saved_model:DIR, "
    "keras_hub:PRESET_OR_DIR, boxes:FILE or none (the whole image).")
_BOXES = flags.DEFINE_string("boxes", "", "Deprecated: --detector=boxes:FILE.")
_DET_SCORE = flags.DEFINE_float("det_score", None, "Keep person boxes scoring at least this "
                                "(default: hog 0.25, saved_model / keras_hub 0.5, boxes 0).",
                                lower_bound=0.0, upper_bound=1.0)
_NMS_IOU = flags.DEFINE_float("nms_iou", DEFAULT_NMS_IOU, "IoU threshold of the box NMS.",
                              lower_bound=0.0, upper_bound=1.0)
_ANNOTATIONS = flags.DEFINE_string(
    "annotations", "", "Optional COCO annotation file: image ids of coco_results.json (and of "
    "COCO detection results in --detector=boxes:FILE).")
_OUT_DIR = flags.DEFINE_string("out_dir", "predictions", "Output folder.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 16, "Person crops per forward pass.",
                                   lower_bound=1)
_SHOW_MAPS = flags.DEFINE_boolean("show_maps", False,
                                  "Also write each person's heatmap / attention-map panel.")
_THRESHOLD = flags.DEFINE_float("draw_threshold", 0.3, "Draw keypoints scoring above this.")
flags.register_multi_flags_validator(
    ["image", "video", "camera"], lambda values: sum(v is not None for v in values.values()) == 1,
    message="Give exactly one of --image, --video and --camera.")


def _detector_spec() -> str:
    if not _BOXES.value:
        return _DETECTOR.value
    if flags.FLAGS["detector"].present:
        raise cli.UserError("Give either --boxes FILE or --detector, not both (--boxes FILE is "
                            "--detector=boxes:FILE).")
    return f"boxes:{_BOXES.value}"


def _estimator(images):
    from skelpose_tf.detectors import BoxesDetector, open_detector
    from skelpose_tf.estimator import PoseEstimator, open_pose_runner

    spec = _detector_spec()
    annotations = _ANNOTATIONS.value or None
    if spec.startswith("boxes:"):  # checked against the images: a key naming none is an error
        path = spec.partition(":")[2]
        detector = BoxesDetector.from_file(path, annotations, _DET_SCORE.value or 0.0, images)
    else:
        detector = open_detector(spec, _DET_SCORE.value, _NMS_IOU.value,
                                 annotations=annotations)
    flip_test = model_flags.value("flip_test") if flags.FLAGS["flip_test"].present else None
    runner = open_pose_runner(
        _WEIGHTS.value, flip_test=flip_test, decoder=model_flags.value("decoder"),
        top_n=model_flags.value("top_n"), width=model_flags.value("width"),
        input_size=model_flags.value("input_size"),
        keypoint_set=model_flags.value("keypoint_set"),
        skeletal_attention=model_flags.value("skeletal_attention"),
        topology=model_flags.value("topology") or "official", sigma=model_flags.value("sigma"))
    return PoseEstimator(runner, detector, batch_size=_BATCH_SIZE.value)


def _describe_model(estimator) -> str:
    """Prints what predicts and returns the model's path for the outputs."""
    runner = estimator.runner
    network = getattr(runner, "network", None)
    model = getattr(runner, "path", None) or _WEIGHTS.value
    if network is not None:
        from skelpose_tf.model_loading import describe_model, resolve_checkpoint

        model = resolve_checkpoint(_WEIGHTS.value)
        print(f"model: {describe_model(network)} from {model}", flush=True)
    else:
        print(f"model: export {model}", flush=True)
    detector = estimator.detector
    print(f"person boxes: {detector.name if detector else 'whole image'}", flush=True)
    return model


def _predict_video():
    source = video_source(_VIDEO_FLAGS)
    if _detector_spec().startswith("boxes:"):
        raise cli.UserError("A boxes file names images, not video frames: give a detector "
                            "(--detector=hog, saved_model:DIR, keras_hub:PRESET) for --video / "
                            "--camera.")
    estimator = _estimator([])
    _describe_model(estimator)
    summary = predict_video(estimator, source, _OUT_DIR.value, draw_threshold=_THRESHOLD.value,
                            **video_options(_VIDEO_FLAGS, estimator.keypoint_set))
    print(f"frames: {summary['frames']}, people per frame: mean "
          f"{summary['people_per_frame']['mean']:.2f}, tracks: {len(summary['track_ids'])}, "
          f"{summary['processing_fps']:.1f} frames/s")
    for name, path in summary["outputs"].items():
        print(f"{name}: {path}")


def _predict():
    images = image_prediction.list_images(_IMAGE.value)
    ids_by_name = image_ids_by_name(_ANNOTATIONS.value) if _ANNOTATIONS.value else None
    estimator = _estimator(images)
    runner = estimator.runner
    network = getattr(runner, "network", None)
    model = _describe_model(estimator)
    # A folder: a bad file is a counted skip; an image named explicitly must be readable.
    skipped = [] if os.path.isdir(_IMAGE.value) else None
    predictions = image_prediction.predict_images(estimator, images, keep_maps=_SHOW_MAPS.value,
                                                  skipped=skipped)
    skipped = skipped or []
    if not predictions:
        report = SkipReport(log_limit=0)
        for entry in skipped:
            report.skip(entry["reason"], entry["image"])
        raise cli.UserError(f"None of the {len(images)} images in {_IMAGE.value} could be "
                            f"read; nothing written ({report.one_line()}).")
    payload = image_prediction.write_outputs(
        predictions, estimator, _OUT_DIR.value, weights=model,
        flip_test=runner.flip_test, show_maps=_SHOW_MAPS.value, threshold=_THRESHOLD.value,
        skipped=skipped, ids_by_name=ids_by_name)
    for entry in payload["images"]:
        people = len(entry["people"])
        print(f"{entry['image']}: {people} {'person' if people == 1 else 'people'} "
              f"(person boxes: {entry['box_source']}) -> {entry['drawing']}"
              + (f" + {len(entry['maps'])} maps panel(s)" if "maps" in entry else ""))
    for entry in skipped:
        print(f"{entry['image']}: skipped ({entry['reason']})")
    if _SHOW_MAPS.value and not getattr(network, "skeletal_attention", False):
        print("note: the model has no skeletal attention maps here; the maps panels show the "
              "keypoint heatmaps only")
    print(f"images: {len(predictions)} of {len(images)} predicted"
          + (f", {len(skipped)} skipped (listed under 'skipped' in predictions.json)"
             if skipped else ""))
    print(f"keypoints: {os.path.join(_OUT_DIR.value, 'predictions.json')}, COCO results: "
          f"{payload['coco_results']}")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # skipped inputs are summarised in the report
    if _IMAGE.value is None:
        _predict_video()
    else:
        _predict()


if __name__ == "__main__":
    cli.run(main)
