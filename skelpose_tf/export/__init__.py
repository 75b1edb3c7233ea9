"""Export and serving: a TF Serving SavedModel, TFLite models for LiteRT, built-in verification.

- `saved_model`: `export_saved_model` (frozen graph; signatures `serving_default` for crops and
  `full_image` for an image plus boxes), `ServingGraph` (the exported computations).
- `tflite`: `export_tflite` (variants `keypoints` = MoveNet contract and `heatmaps`;
  quantisations float32, float16, dynamic_int8, int8).
- `runtime`: the LiteRT interpreter (tf.lite fallback) and runners with one `predict` interface.
- `verify`: comparison with the Keras model, `evaluate_exported_ap` (COCO AP of an export).
- `bundle`: `export_all` (the SavedModel and every TFLite variant in one directory, each
  verified against the Keras model on real crops, `export_report.json`; all or nothing: written
  in a staging directory and swapped in, a failed export goes to `<dir>.failed`), `compare_ap`.

This file only re-exports those names.
"""

from skelpose_tf.export.bundle import (FAILED_SUFFIX, HEATMAP_QUANTIZATIONS, KILL_AT_ENV,
                                       REPORT_FILE, SAVED_MODEL_DIR, ExportedArtifact,
                                       ExportReport, RejectedExportError, compare_ap,
                                       directory_size, export_all, export_verified_saved_model,
                                       export_verified_tflite, staged_directory)
from skelpose_tf.export.runtime import open_runner
from skelpose_tf.export.saved_model import (ServingGraph, export_saved_model, metadata_path,
                                            read_metadata)
from skelpose_tf.export.tflite import QUANTIZATIONS, VARIANTS, TFLiteExporter, export_tflite
from skelpose_tf.export.verify import (DEFAULT_TOLERANCES, Comparison, ExportVerificationError,
                                       Tolerance, crops_from_records, dataset_crops,
                                       evaluate_exported_ap)

__all__ = [
    "DEFAULT_TOLERANCES", "QUANTIZATIONS", "VARIANTS", "Comparison", "ExportReport",
    "ExportVerificationError", "ExportedArtifact", "RejectedExportError",
    "ServingGraph", "TFLiteExporter", "Tolerance", "compare_ap", "crops_from_records",
    "dataset_crops", "evaluate_exported_ap", "export_all", "export_saved_model", "export_tflite",
    "export_verified_saved_model", "export_verified_tflite", "metadata_path", "open_runner",
    "read_metadata", "staged_directory", "directory_size", "FAILED_SUFFIX",
    "HEATMAP_QUANTIZATIONS", "KILL_AT_ENV", "REPORT_FILE", "SAVED_MODEL_DIR",
]
