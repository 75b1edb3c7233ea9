"""Export a trained pose network: TF Serving SavedModel and TFLite (LiteRT) models, verified.

    python export_tflite.py --weights runs/demo                  # everything -> runs/demo/export
    python export_tflite.py --weights runs/demo --format saved_model --out export/saved_model
    python export_tflite.py --weights runs/demo/best.keras --out model.tflite \
        --quantization int8                                          # one MoveNet-contract model
    python export_tflite.py --weights runs/demo --out heatmaps.tflite --variant heatmaps \
        --quantization float16                                       # for GPU delegates
    python export_tflite.py --weights runs/demo --evaluate_ap        # + COCO AP of each model

Formats (`--format`; the default `auto` means `tflite` when `--out` ends in `.tflite`, else `all`):
- `all`: `--out` is a directory (default `<run dir>/export`) receiving `saved_model/`,
  `pose_<q>.tflite` for each `--quantization` (default all four), `heatmaps_<q>.tflite` for each
  `--heatmap_quantization` (default float32, float16), a JSON beside each model and
  `export_report.json`.
- `saved_model`: `--out` is the SavedModel directory (signatures `serving_default` and
  `full_image`).
- `tflite`: `--out` is the .tflite file; one `--quantization` and one `--variant`.

Every model is loaded back after it is written and compared with the Keras model on real crops
of `--ann`/`--images` (default: the synthetic val set in `--data_dir`, generated if missing);
the differences are printed and the command fails (exit status 1) when one is past its
tolerance. `int8` calibrates on crops of the training set (`--calibration_ann` /
`--calibration_images`, default the synthetic train set). `--evaluate_ap` adds the COCO AP of
each model next to the Keras model's AP (`ap_report.json`).

Nothing is left half-written: `all` writes and verifies everything in a staging directory that
replaces `--out` only when every model passed (a failed export goes to `<out>.failed`, its AP
too with `--evaluate_ap`, and the previous export stays); `saved_model` is written aside and
swapped in; `tflite` writes the model and its JSON each whole (a model that fails verification
is still written there, with its verdict in the JSON).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

from skelpose_tf import cli, export, model_flags  # noqa: E402
from skelpose_tf.atomic_files import replace_directory  # noqa: E402
from skelpose_tf.export import QUANTIZATIONS  # noqa: E402

_WEIGHTS = model_flags.define_weights_flag()
model_flags.define_architecture_flags()
model_flags.define_decoding_flags(
    flip_test_help="Average with the mirrored crop's heatmaps inside the graph.")
_FORMAT = flags.DEFINE_enum(
    "format", "auto", ["auto", "all", "saved_model", "tflite"],
    "What to write; auto: tflite when --out ends in .tflite, else all.")
_OUT = flags.DEFINE_string(
    "out", "", "all: output directory (default <run dir>/export); saved_model: the SavedModel "
    "directory; tflite: the .tflite file.")
_QUANTIZATION = flags.DEFINE_list(
    "quantization", None, f"Quantisation(s) of the keypoint models, from {QUANTIZATIONS}. "
    "Default: all four for --format=all, float32 for --format=tflite (exactly one there).")
_HEATMAP_QUANTIZATION = flags.DEFINE_list(
    "heatmap_quantization", ["float32", "float16"],
    "--format=all: quantisations of the heatmap-only models (empty: none).")
_VARIANT = flags.DEFINE_enum(
    "variant", "keypoints", ["keypoints", "heatmaps"],
    "--format=tflite: keypoints (MoveNet contract, decoder inside) or heatmaps (network only).")
_SAVED_MODEL_HEATMAPS = flags.DEFINE_boolean(
    "saved_model_heatmaps", True, "serving_default also returns the heatmaps.")
_DATA_DIR = flags.DEFINE_string("data_dir", "data/synthetic",
                                "Synthetic data set used when --ann / --calibration_ann are not "
                                "given (generated if missing).")
_ANN = flags.DEFINE_string("ann", "", "COCO keypoint JSON for verification and --evaluate_ap.")
_IMAGES = flags.DEFINE_string("images", "", "Image folder of --ann.")
_CALIBRATION_ANN = flags.DEFINE_string("calibration_ann", "",
                                       "COCO keypoint JSON for int8 calibration crops.")
_CALIBRATION_IMAGES = flags.DEFINE_string("calibration_images", "",
                                          "Image folder of --calibration_ann.")
_NUM_VERIFICATION = flags.DEFINE_integer("num_verification", 64,
                                         "Real crops compared with the Keras model.", lower_bound=1)
_NUM_CALIBRATION = flags.DEFINE_integer("num_calibration", 200,
                                        "Real crops for int8 calibration.", lower_bound=1)
_EVALUATE_AP = flags.DEFINE_boolean("evaluate_ap", False,
                                    "--format=all: COCO AP of every model on --ann.")
_AP_MAX_IMAGES = flags.DEFINE_integer("ap_max_images", 0,
                                      "Evaluate AP on the first N images only (0: all).")
_NUM_THREADS = flags.DEFINE_integer("num_threads", 2, "TFLite interpreter threads.",
                                    lower_bound=1)


def _format():
    if _FORMAT.value != "auto":
        return _FORMAT.value
    return "tflite" if _OUT.value.endswith(".tflite") else "all"


def _quantizations():
    chosen = _QUANTIZATION.value
    if chosen is None:
        chosen = list(QUANTIZATIONS) if _format() == "all" else ["float32"]
    for name in (*chosen, *_HEATMAP_QUANTIZATION.value):
        if name not in QUANTIZATIONS:
            raise app.UsageError(f"Unknown quantization {name!r}; choose from {QUANTIZATIONS}.")
    if _format() == "tflite" and len(chosen) != 1:
        raise app.UsageError("--format=tflite writes one file: give exactly one --quantization "
                             f"(received {chosen}); use --format=all for several.")
    return chosen


def _out_path(weights):
    if _OUT.value:
        return _OUT.value
    if _format() != "all":
        raise app.UsageError(f"--format={_format()} needs --out.")
    run_dir = weights if os.path.isdir(weights) else os.path.dirname(weights)
    return os.path.join(run_dir or ".", "export")


def _data_files(needs_calibration):
    """(verification ann, images), (calibration ann, images) or None without int8."""
    from skelpose_tf.data.sources import ensure_synthetic_dataset

    for annotation, images, names in ((_ANN.value, _IMAGES.value, "--ann/--images"),
                                      (_CALIBRATION_ANN.value, _CALIBRATION_IMAGES.value,
                                       "--calibration_ann/--calibration_images")):
        if bool(annotation) != bool(images):
            raise app.UsageError(f"Give both of {names} or neither.")
    verification = (_ANN.value, _IMAGES.value) if _ANN.value else None
    calibration = ((_CALIBRATION_ANN.value, _CALIBRATION_IMAGES.value)
                   if _CALIBRATION_ANN.value or not needs_calibration else None)
    if verification is None or (needs_calibration and calibration is None):
        paths = ensure_synthetic_dataset(_DATA_DIR.value)
        verification = verification or (paths.val_annotations, paths.val_images)
        if needs_calibration:
            calibration = calibration or (paths.train_annotations, paths.train_images)
    return verification, (calibration if needs_calibration else None)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # TF's SavedModel writer logs at INFO
    from skelpose_tf.inference import PosePredictor
    from skelpose_tf.model_loading import describe_model

    quantizations = _quantizations()
    network, source = model_flags.load_model(_WEIGHTS.value)
    out_path = _out_path(_WEIGHTS.value)
    print(f"model: {describe_model(network)} from {source}", flush=True)
    needs_calibration = "int8" in (*quantizations, *(_HEATMAP_QUANTIZATION.value
                                                     if _format() == "all" else ()))
    (ann, images), calibration_files = _data_files(needs_calibration)
    keypoint_set, input_size = network.keypoint_set, network.input_size
    verification = export.dataset_crops(ann, images, keypoint_set, input_size,
                                        _NUM_VERIFICATION.value)
    calibration = (export.dataset_crops(*calibration_files, keypoint_set, input_size,
                                        _NUM_CALIBRATION.value)
                   if calibration_files else None)
    print(f"data: {len(verification)} verification crops from {ann}"
          + (f", {len(calibration)} calibration crops from {calibration_files[0]}"
             if calibration_files else ""), flush=True)
    options = dict(flip_test=model_flags.value("flip_test"))  # decoding: network.codec

    if _format() == "all":
        rejected = None
        try:
            report = export.export_all(
                network, out_path, calibration, verification, quantizations=quantizations,
                heatmap_quantizations=_HEATMAP_QUANTIZATION.value,
                include_heatmaps=_SAVED_MODEL_HEATMAPS.value, num_threads=_NUM_THREADS.value,
                **options)
        except export.RejectedExportError as error:  # the AP shows what the failure costs
            report, rejected = error.report, error
        if _EVALUATE_AP.value:
            print(f"COCO AP on {ann} (ground-truth boxes):", flush=True)
            export.compare_ap(network, report, ann, images,
                              max_images=_AP_MAX_IMAGES.value or None,
                              num_threads=_NUM_THREADS.value)
        if rejected is not None:
            raise rejected
        return

    graph = export.ServingGraph(network, **options)
    flip_test = options["flip_test"] and not (_format() == "tflite"
                                              and _VARIANT.value == "heatmaps")
    reference = PosePredictor(graph.network, graph.codec, flip_test).predict(verification)
    quantization = quantizations[0] if _format() == "tflite" else "float32"
    tolerance = export.DEFAULT_TOLERANCES[quantization]
    if _format() == "saved_model":
        with export.staged_directory(out_path) as staged:  # written aside, then swapped in
            written = os.path.join(staged, os.path.basename(os.path.normpath(out_path)))
            artifacts = export.export_verified_saved_model(
                graph, written, reference, verification, tolerance,
                include_heatmaps=_SAVED_MODEL_HEATMAPS.value)
            replace_directory(written, out_path)
    else:
        with export.TFLiteExporter(graph) as exporter:
            artifacts = (export.export_verified_tflite(
                exporter, out_path, reference, verification, tolerance,
                quantization=quantization, variant=_VARIANT.value,
                calibration_crops=calibration, num_threads=_NUM_THREADS.value),)
    failures = [a.comparison for a in artifacts if not a.comparison.passed]
    if failures:
        raise export.ExportVerificationError(failures)
    print(f"wrote {out_path} (contract and verification in "
          f"{export.metadata_path(out_path)})", flush=True)


if __name__ == "__main__":
    cli.run(main)
