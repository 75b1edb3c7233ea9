"""Export and serving: a TF Serving SavedModel, TFLite models for LiteRT, built-in verification.

- `saved_model`: `export_saved_model` (frozen graph; signatures `serving_default` for crops and
  `full_image` for an image plus boxes), `ServingGraph` (the exported computations).
- `tflite`: `export_tflite` (variants `keypoints` = MoveNet contract and `heatmaps`;
  quantisations float32, float16, dynamic_int8, int8).
- `runtime`: the LiteRT interpreter (tf.lite fallback) and runners with one `predict` interface.
- `verify`: comparison with the Keras model, `evaluate_exported_ap` (COCO AP of an export).

`export_all` writes the SavedModel and every TFLite variant into one directory, verifies each
against the Keras model on real crops, writes `export_report.json`, and raises
`ExportVerificationError` when one is past its tolerance.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

from skelpose_tf.export.runtime import KerasRunner, open_runner
from skelpose_tf.export.saved_model import (ServingGraph, export_saved_model, float32_network,
                                            metadata_path, read_metadata, write_metadata)
from skelpose_tf.export.tflite import (QUANTIZATIONS, VARIANTS, TFLiteExporter,
                                       export_tflite)
from skelpose_tf.export.verify import (DEFAULT_TOLERANCES, Comparison, ExportVerificationError,
                                       Tolerance, crops_from_records, dataset_crops,
                                       evaluate_exported_ap, verify_artifact,
                                       verify_full_image)

__all__ = [
    "DEFAULT_TOLERANCES", "QUANTIZATIONS", "VARIANTS", "Comparison", "ExportReport",
    "ExportVerificationError", "ExportedArtifact", "KerasRunner", "ServingGraph",
    "TFLiteExporter", "Tolerance", "compare_ap", "crops_from_records", "dataset_crops",
    "evaluate_exported_ap", "export_all", "export_saved_model", "export_tflite",
    "export_verified_saved_model", "export_verified_tflite", "metadata_path", "open_runner",
    "read_metadata",
]

REPORT_FILE = "export_report.json"
SAVED_MODEL_DIR = "saved_model"
# Quantisations of the heatmap-only variant: the ones GPU delegates run.
HEATMAP_QUANTIZATIONS = ("float32", "float16")


@dataclasses.dataclass(frozen=True)
class ExportedArtifact:
    """One written model and how it compared with the Keras model.

    Attributes:
        path: the .tflite file or SavedModel directory.
        kind: "saved_model" or "tflite".
        variant: "crops" / "full_image" (SavedModel signatures), "keypoints" or "heatmaps".
        quantization: one of `QUANTIZATIONS` ("float32" for the SavedModel).
        size_bytes: size on disk.
        comparison: the `Comparison` with the Keras model.
    """

    path: str
    kind: str
    variant: str
    quantization: str
    size_bytes: int
    comparison: Comparison

    def to_dict(self) -> dict:
        return dict(path=self.path, kind=self.kind, variant=self.variant,
                    quantization=self.quantization, size_bytes=self.size_bytes,
                    comparison=self.comparison.to_dict())


@dataclasses.dataclass(frozen=True)
class ExportReport:
    """What `export_all` wrote and measured.

    Attributes:
        out_dir: the export directory.
        artifacts: `ExportedArtifact`s in the order written.
        flip_test, decoder: the export options.
        num_verification_crops, num_calibration_crops: the crops used.
    """

    out_dir: str
    artifacts: tuple
    flip_test: bool
    decoder: str
    num_verification_crops: int
    num_calibration_crops: int

    @property
    def passed(self) -> bool:
        return all(a.comparison.passed for a in self.artifacts)

    @property
    def failures(self) -> tuple:
        return tuple(a.comparison for a in self.artifacts if not a.comparison.passed)

    def to_dict(self) -> dict:
        return dict(out_dir=self.out_dir, flip_test=self.flip_test, decoder=self.decoder,
                    num_verification_crops=self.num_verification_crops,
                    num_calibration_crops=self.num_calibration_crops, passed=self.passed,
                    artifacts=[a.to_dict() for a in self.artifacts])

    def __str__(self) -> str:
        lines = [f"Exports in {self.out_dir} (decoder {self.decoder}, flip test "
                 f"{'on' if self.flip_test else 'off'}; compared with the Keras model on "
                 f"{self.num_verification_crops} real crops, crop pixels):",
                 f"  {'artifact':<28} {'size':>9} {'kp max':>8} {'kp mean':>8} {'conf max':>8} "
                 f"{'conf mean':>9} {'score':>8} {'heatmap':>8}  result"]
        for a in self.artifacts:
            c = a.comparison
            heatmap = "-" if c.heatmap_error is None else f"{100 * c.heatmap_error:.2g}%"
            lines.append(
                f"  {c.name:<28} {a.size_bytes / 2**20:>7.2f}MB {c.max_keypoint_error_px:>8.3g} "
                f"{c.mean_keypoint_error_px:>8.3g} {c.max_confident_keypoint_error_px:>8.3g} "
                f"{c.mean_confident_keypoint_error_px:>9.3g} {c.max_score_error:>8.2g} "
                f"{heatmap:>8}  "
                f"{'ok' if c.passed else 'FAILED'}")
        return "\n".join(lines)


def directory_size(path) -> int:
    """Bytes of a file, or of every file under a directory."""
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(path) for name in names)


def export_verified_saved_model(graph: ServingGraph, path, reference, verification_crops,
                                tolerance: Tolerance, include_heatmaps=True,
                                out=sys.stdout) -> tuple:
    """Write the SavedModel of `graph`, load it back and verify both signatures.

    Args:
        graph: the `ServingGraph` (network, decoder, flip test).
        path: the SavedModel directory.
        reference: Keras outputs for `verification_crops` (`KerasRunner.predict`, same decoder
            and flip test).
        verification_crops: uint8 [N, H, W, 3] real crops.
        tolerance: the `Tolerance` of both comparisons.
        include_heatmaps: `serving_default` also returns `heatmaps`.

    Returns:
        Two `ExportedArtifact`s: `serving_default` (variant "crops") and `full_image`.
    """
    print(f"export: SavedModel -> {path}", file=out, flush=True)
    export_saved_model(graph.network, path, include_heatmaps=include_heatmaps, graph=graph)
    comparisons = (verify_artifact(path, reference, verification_crops, tolerance),
                   verify_full_image(path, reference, verification_crops, tolerance))
    _add_verification(path, comparisons)
    artifacts = tuple(
        ExportedArtifact(os.fspath(path), "saved_model", variant, "float32",
                         directory_size(path), comparison)
        for variant, comparison in zip(("crops", "full_image"), comparisons))
    for artifact in artifacts:
        print(f"  verified {artifact.comparison}", file=out, flush=True)
    return artifacts


def export_verified_tflite(exporter: TFLiteExporter, path, reference, verification_crops,
                           tolerance: Tolerance, *, quantization, variant="keypoints",
                           calibration_crops=None, num_threads=2,
                           out=sys.stdout) -> ExportedArtifact:
    """Write one TFLite model, load it back with LiteRT and verify it.

    Args:
        exporter: a `TFLiteExporter` of the `ServingGraph` (it keeps the frozen graphs of
            earlier calls).
        path: the .tflite file (its JSON goes beside it).
        reference: Keras outputs for `verification_crops` (without the flip test for the
            `heatmaps` variant).
        verification_crops: uint8 [N, H, W, 3] real crops.
        tolerance: the `Tolerance` to check.
        quantization, variant, calibration_crops: as `export_tflite`.
        num_threads: interpreter threads.
    """
    print(f"export: TFLite {variant} {quantization} -> {path}", file=out, flush=True)
    exporter.export(path, quantization, variant, calibration_crops)
    comparison = verify_artifact(path, reference, verification_crops, tolerance, num_threads)
    _add_verification(path, [comparison])
    print(f"  verified {comparison}", file=out, flush=True)
    return ExportedArtifact(os.fspath(path), "tflite", variant, quantization,
                            directory_size(path), comparison)


def export_all(network, out_dir, calibration_crops, verification_crops, *,
               quantizations=QUANTIZATIONS, heatmap_quantizations=HEATMAP_QUANTIZATIONS,
               saved_model=True, include_heatmaps=True, flip_test=True, decoder="weighted",
               top_n=20, tolerances=None, num_threads=2, raise_on_failure=True,
               out=sys.stdout) -> ExportReport:
    """Write and verify the SavedModel and the TFLite models of a trained network.

    Writes into `out_dir`: `saved_model/` (TF Serving), `pose_<quantization>.tflite` (MoveNet
    contract) for each of `quantizations`, `heatmaps_<quantization>.tflite` for each of
    `heatmap_quantizations`, a JSON beside each model, and `export_report.json`. Each artifact
    is loaded back right after it is written, run on `verification_crops`, and compared with
    the Keras model (float32, same decoder and flip test); a line per artifact is printed.

    Args:
        network: the trained `PoseHRNet` (mixed precision is exported in float32).
        out_dir: export directory (created).
        calibration_crops: uint8 [N, H, W, 3] real crops for `int8` calibration (better from
            the training set than from the verification set); may be None without `int8`.
        verification_crops: uint8 [M, H, W, 3] real crops to compare on.
        quantizations: of the MoveNet-contract models, from `QUANTIZATIONS`.
        heatmap_quantizations: of the heatmap-only models (none: empty).
        saved_model: also write and verify the SavedModel.
        include_heatmaps: the SavedModel's `serving_default` also returns `heatmaps`.
        flip_test, decoder, top_n: baked into the SavedModel and the keypoint models.
        tolerances: {quantization: `Tolerance`} overriding `DEFAULT_TOLERANCES`.
        num_threads: interpreter threads for the verification runs.
        raise_on_failure: raise `ExportVerificationError` (after writing everything and the
            report) when an artifact is past its tolerance.
        out: stream for the progress lines.

    Returns:
        An `ExportReport` (`str()` prints the table of differences).
    """
    for quantization in (*quantizations, *heatmap_quantizations):
        if quantization not in QUANTIZATIONS:
            raise ValueError(f"quantizations must be from {QUANTIZATIONS}. "
                             f"Received: {quantization!r}")
    tolerances = {**DEFAULT_TOLERANCES, **(tolerances or {})}
    os.makedirs(out_dir, exist_ok=True)
    graph = ServingGraph(network, decoder=decoder, flip_test=flip_test, top_n=top_n)
    reference = KerasRunner(graph.network, decoder, flip_test, top_n).predict(verification_crops)
    plain_reference = (KerasRunner(graph.network, decoder, False, top_n).predict(
        verification_crops) if flip_test and heatmap_quantizations else reference)
    artifacts = []
    if saved_model:
        artifacts += export_verified_saved_model(
            graph, os.path.join(out_dir, SAVED_MODEL_DIR), reference, verification_crops,
            tolerances["float32"], include_heatmaps=include_heatmaps, out=out)
    with TFLiteExporter(graph) as exporter:
        for variant, chosen, expected in (("keypoints", quantizations, reference),
                                          ("heatmaps", heatmap_quantizations, plain_reference)):
            for quantization in chosen:
                stem = "pose" if variant == "keypoints" else "heatmaps"
                artifacts.append(export_verified_tflite(
                    exporter, os.path.join(out_dir, f"{stem}_{quantization}.tflite"), expected,
                    verification_crops, tolerances[quantization], quantization=quantization,
                    variant=variant, calibration_crops=calibration_crops,
                    num_threads=num_threads, out=out))
    report = ExportReport(
        out_dir=os.fspath(out_dir), artifacts=tuple(artifacts), flip_test=bool(flip_test),
        decoder=decoder, num_verification_crops=len(verification_crops),
        num_calibration_crops=0 if calibration_crops is None else len(calibration_crops))
    with open(os.path.join(out_dir, REPORT_FILE), "w") as file:
        json.dump(report.to_dict(), file, indent=2)
    print(report, file=out, flush=True)
    if raise_on_failure and not report.passed:
        raise ExportVerificationError(report.failures)
    return report


def compare_ap(network, report: ExportReport, annotation_file, image_dir, *, max_images=None,
               num_threads=2, out=sys.stdout) -> dict:
    """COCO AP of the Keras network and of every exported model in `report`, side by side.

    Every model runs on the same ground-truth-box crops of `annotation_file` (the synthetic val
    set in the demo) with the report's decoder and flip test (the heatmap-only models are
    decoded without flip test, as they are exported). The Keras rows run the network in
    float32, as the exports were made (a mixed-precision network scores slightly differently
    in its own precision). Writes `ap_report.json` into the
    report's directory and prints one line per model with its AP difference to the Keras
    model (the heatmap-only models to the Keras model without flip test).

    Returns:
        {name: AP}, "keras" first, then the artifacts' file names (the SavedModel as
        "saved_model").
    """
    results_dir = os.path.join(report.out_dir, "ap_results")
    network = float32_network(network)
    models = [("keras", network, {"decoder": report.decoder, "flip_test": report.flip_test}),
              ("keras_no_flip", network, {"decoder": report.decoder, "flip_test": False})]
    if not any(a.variant == "heatmaps" for a in report.artifacts) or not report.flip_test:
        models.pop()
    models += [(os.path.basename(os.path.normpath(a.path)), a.path, {})
               for a in report.artifacts if a.variant != "full_image"]
    table = {}
    for name, model, options in models:
        result = evaluate_exported_ap(
            model, annotation_file, image_dir, os.path.join(results_dir, f"{name}.json"),
            max_images=max_images, num_threads=num_threads, **options)
        table[name] = result.stats["AP"]
        baseline = table["keras_no_flip" if name.startswith("heatmaps_") and
                         "keras_no_flip" in table else "keras"]
        print(f"  AP {name:<28} {table[name]:.4f}  ({table[name] - baseline:+.4f} vs Keras)",
              file=out, flush=True)
    with open(os.path.join(report.out_dir, "ap_report.json"), "w") as file:
        json.dump({"annotation_file": os.fspath(annotation_file), "max_images": max_images,
                   "AP": table}, file, indent=2)
    return table


def _add_verification(path, comparisons):
    """Record the verification results in an artifact's JSON."""
    metadata = read_metadata(path)
    metadata["verification"] = [c.to_dict() for c in comparisons]
    write_metadata(path, metadata)
