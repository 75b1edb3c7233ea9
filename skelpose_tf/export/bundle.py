"""`export_all`: the SavedModel and every TFLite model of a network, verified, all or nothing.

Everything is written and verified in a staging directory beside the export directory, which
then replaces the old one by renames (`skelpose_tf.atomic_files.replace_directory`), so a kill
at any point leaves either the previous export or the new one, each with its own
`export_report.json`. An export that fails verification goes to `<dir>.failed`
(`RejectedExportError`) and the previous one stays. `compare_ap` scores every exported model
with COCO AP beside the Keras model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import sys

from skelpose_tf.atomic_files import (recover_directory, replace_directory, staging_directory,
                                      write_json_atomic)
from skelpose_tf.inference import PosePredictor
from skelpose_tf.export.saved_model import (ServingGraph, export_saved_model, float32_network,
                                            read_metadata, write_metadata)
from skelpose_tf.export.tflite import QUANTIZATIONS, TFLiteExporter
from skelpose_tf.export.verify import (DEFAULT_TOLERANCES, Comparison, ExportVerificationError,
                                       Tolerance, evaluate_exported_ap, verify_artifact,
                                       verify_full_image)

REPORT_FILE = "export_report.json"
SAVED_MODEL_DIR = "saved_model"
# Quantisations of the heatmap-only variant: the ones GPU delegates run.
HEATMAP_QUANTIZATIONS = ("float32", "float16")
# Where `export_all` leaves an export that failed verification (with raise_on_failure).
FAILED_SUFFIX = ".failed"
# Test hook: with SKELPOSE_TEST_KILL_AT=<point> the process SIGKILLs itself at that point of
# `export_all` ("artifact-<n>": after the n-th model is written and verified, counting from 1;
# "swap": just before the staged directory replaces the old one), so tests can check what a
# real kill leaves behind. Read in `_kill_point` only.
KILL_AT_ENV = "SKELPOSE_TEST_KILL_AT"


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

    def moved_to(self, out_dir) -> ExportReport:
        """This report with `out_dir` and every artifact path rebased onto `out_dir` (where
        the staging directory the artifacts were written into is about to be renamed)."""
        out_dir = os.fspath(out_dir)
        artifacts = tuple(
            dataclasses.replace(a, path=os.path.join(out_dir, os.path.relpath(a.path,
                                                                              self.out_dir)))
            for a in self.artifacts)
        return dataclasses.replace(self, out_dir=out_dir, artifacts=artifacts)

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


class RejectedExportError(ExportVerificationError):
    """`export_all` wrote an export that failed verification and did not install it.

    Attributes:
        comparisons: the failing `Comparison`s.
        report: the `ExportReport` of the rejected export, which lies in `failed_dir`.
        out_dir: the export directory, left as it was (the previous export, or absent).
        failed_dir: where the rejected export was moved (`<out_dir>.failed`).
    """

    def __init__(self, report, out_dir):
        super().__init__(report.failures)
        self.report, self.out_dir, self.failed_dir = report, os.fspath(out_dir), report.out_dir
        kept = (f"the previous export in {self.out_dir} is kept" if os.path.exists(self.out_dir)
                else f"nothing was written to {self.out_dir}")
        self.args = (f"{self.args[0]}\nThe rejected export is in {self.failed_dir}; {kept}.",)

    def __reduce__(self):  # pickles (e.g. across processes) with its own arguments
        return type(self), (self.report, self.out_dir)


@contextlib.contextmanager
def staged_directory(final):
    """Yields a fresh staging directory beside `final` (`atomic_files.staging_directory`),
    deleted on the way out unless it was renamed away (`replace_directory`) meanwhile, so an
    exception or Ctrl-C leaves no half-written sibling behind (a SIGKILL does; the next
    `recover_directory(final)` removes it)."""
    parent = os.path.dirname(os.path.abspath(final))
    os.makedirs(parent, exist_ok=True)  # recover_directory lists the parent
    recover_directory(final)
    staged = staging_directory(final)
    try:
        yield staged
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def _kill_point(name):
    """SIGKILL this process when `KILL_AT_ENV` names `name` (a test hook, see `KILL_AT_ENV`)."""
    if os.environ.get(KILL_AT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _artifact_point(artifacts) -> str:
    """The `_kill_point` name after the models of `artifacts` are written: "artifact-<n>"."""
    return f"artifact-{len({a.path for a in artifacts})}"


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
        reference: Keras outputs for `verification_crops` (`PosePredictor.predict`, same decoder
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
               saved_model=True, include_heatmaps=True, flip_test=True, decoder=None,
               tolerances=None, num_threads=2, raise_on_failure=True,
               out=sys.stdout) -> ExportReport:
    """Write and verify the SavedModel and the TFLite models of a trained network, all or none.

    The export directory ends up holding `saved_model/` (TF Serving), `pose_<quantization>.tflite`
    (MoveNet contract) for each of `quantizations`, `heatmaps_<quantization>.tflite` for each of
    `heatmap_quantizations`, a JSON beside each model, and `export_report.json`. Each artifact
    is loaded back right after it is written, run on `verification_crops`, and compared with
    the Keras model (float32, same decoder and flip test); a line per artifact is printed.

    All or nothing: everything is written and verified in a fresh staging directory beside
    `out_dir` (`.<name>.partial-<pid>`), the report is written there last, and only then does
    the staging directory replace `out_dir` (two renames, `atomic_files.replace_directory`).
    An exception or Ctrl-C deletes the staging directory; a kill leaves it behind, and the next
    export (or `recover_directory(out_dir)`) deletes it and repairs a swap cut between its two
    renames. Either way `out_dir` keeps the previous export and its report, untouched. The
    returned report and the written `export_report.json` name the final paths; no written JSON
    names the staging directory.

    When an artifact fails verification:
    - `raise_on_failure=True`: the new export is *not* installed. `out_dir` keeps the previous
      export (if any); the rejected one, with its report, is moved to `<out_dir>.failed`
      (replacing an older one) for inspection, and `RejectedExportError` (an
      `ExportVerificationError`, naming both directories and holding the rejected export's
      `report`) is raised.
    - `raise_on_failure=False`: the caller takes the verdict from the returned report, so the
      new export is installed in `out_dir` as it is, its report saying `"passed": false`.

    Args:
        network: the trained `PoseHRNet` (mixed precision is exported in float32).
        out_dir: export directory (created, or replaced as a whole).
        calibration_crops: uint8 [N, H, W, 3] real crops for `int8` calibration (better from
            the training set than from the verification set); may be None without `int8`.
        verification_crops: uint8 [M, H, W, 3] real crops to compare on.
        quantizations: of the MoveNet-contract models, from `QUANTIZATIONS`.
        heatmap_quantizations: of the heatmap-only models (none: empty).
        saved_model: also write and verify the SavedModel.
        include_heatmaps: the SavedModel's `serving_default` also returns `heatmaps`.
        flip_test, decoder: baked into the SavedModel and the keypoint models (decoder None:
            the network's own codec, `network.codec`, as every other setting of decoding).
        tolerances: {quantization: `Tolerance`} overriding `DEFAULT_TOLERANCES`.
        num_threads: interpreter threads for the verification runs.
        raise_on_failure: on a verification failure, keep `out_dir` and raise (see above).
        out: stream for the progress lines.

    Returns:
        An `ExportReport` of `out_dir` (`str()` prints the table of differences).
    """
    for quantization in (*quantizations, *heatmap_quantizations):
        if quantization not in QUANTIZATIONS:
            raise ValueError(f"quantizations must be from {QUANTIZATIONS}. "
                             f"Received: {quantization!r}")
    tolerances = {**DEFAULT_TOLERANCES, **(tolerances or {})}
    with staged_directory(out_dir) as staged:
        print(f"export: writing into {staged}; it replaces {out_dir} once all is verified",
              file=out, flush=True)
        report = _write_verified_exports(
            network, staged, calibration_crops, verification_crops, quantizations=quantizations,
            heatmap_quantizations=heatmap_quantizations, saved_model=saved_model,
            include_heatmaps=include_heatmaps, flip_test=flip_test, decoder=decoder,
            tolerances=tolerances, num_threads=num_threads, out=out)
        rejected = raise_on_failure and not report.passed
        report = report.moved_to(
            os.path.normpath(os.fspath(out_dir)) + FAILED_SUFFIX if rejected else out_dir)
        write_json_atomic(os.path.join(staged, REPORT_FILE), report.to_dict())
        _kill_point("swap")
        replace_directory(staged, report.out_dir)
    print(report, file=out, flush=True)
    if rejected:
        raise RejectedExportError(report, out_dir)
    return report


def _write_verified_exports(network, out_dir, calibration_crops, verification_crops, *,
                            quantizations, heatmap_quantizations, saved_model, include_heatmaps,
                            flip_test, decoder, tolerances, num_threads,
                            out) -> ExportReport:
    """Write and verify every artifact of `export_all` into `out_dir` (the staging directory);
    the `ExportReport` names `out_dir`. Arguments as `export_all` (`tolerances` complete)."""
    graph = ServingGraph(network, decoder=decoder, flip_test=flip_test)
    reference = PosePredictor(graph.network, graph.codec, flip_test).predict(verification_crops)
    plain_reference = (PosePredictor(graph.network, graph.codec, False).predict(
        verification_crops) if flip_test and heatmap_quantizations else reference)
    artifacts = []
    if saved_model:
        artifacts += export_verified_saved_model(
            graph, os.path.join(out_dir, SAVED_MODEL_DIR), reference, verification_crops,
            tolerances["float32"], include_heatmaps=include_heatmaps, out=out)
        _kill_point(_artifact_point(artifacts))
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
                _kill_point(_artifact_point(artifacts))
    return ExportReport(
        out_dir=os.fspath(out_dir), artifacts=tuple(artifacts), flip_test=bool(flip_test),
        decoder=graph.codec.decoder, num_verification_crops=len(verification_crops),
        num_calibration_crops=0 if calibration_crops is None else len(calibration_crops))


def compare_ap(network, report: ExportReport, annotation_file, image_dir, *, max_images=None,
               num_threads=2, out=sys.stdout) -> dict:
    """COCO AP of the Keras network and of every exported model in `report`, side by side.

    Every model runs on the same ground-truth-box crops of `annotation_file` (the synthetic val
    set in the demo) with the report's decoder and flip test (the heatmap-only models are
    decoded without flip test, as they are exported). The Keras rows run the network in
    float32, as the exports were made (a mixed-precision network scores slightly differently
    in its own precision). The models are read from the report's (final) directory, after
    `recover_directory` has repaired an interrupted swap there. Writes `ap_results/` (the
    COCO results of each model; staged, then swapped in whole) and then `ap_report.json`
    (atomically) into the report's directory, and prints one line per model with its AP
    difference to the Keras model (the heatmap-only models to the Keras model without flip
    test).

    Returns:
        {name: AP}, "keras" first, then the artifacts' file names (the SavedModel as
        "saved_model").
    """
    recover_directory(report.out_dir)
    results_dir = os.path.join(report.out_dir, "ap_results")
    network = float32_network(network)
    models = [("keras", network, {"decoder": report.decoder, "flip_test": report.flip_test}),
              ("keras_no_flip", network, {"decoder": report.decoder, "flip_test": False})]
    if not any(a.variant == "heatmaps" for a in report.artifacts) or not report.flip_test:
        models.pop()
    models += [(os.path.basename(os.path.normpath(a.path)), a.path, {})
               for a in report.artifacts if a.variant != "full_image"]
    table = {}
    with staged_directory(results_dir) as staged_results:
        for name, model, options in models:
            result = evaluate_exported_ap(
                model, annotation_file, image_dir, os.path.join(staged_results, f"{name}.json"),
                max_images=max_images, num_threads=num_threads, **options)
            table[name] = result.stats["AP"]
            baseline = table["keras_no_flip" if name.startswith("heatmaps_") and
                             "keras_no_flip" in table else "keras"]
            print(f"  AP {name:<28} {table[name]:.4f}  ({table[name] - baseline:+.4f} vs Keras)",
                  file=out, flush=True)
        replace_directory(staged_results, results_dir)
    write_json_atomic(os.path.join(report.out_dir, "ap_report.json"),
                      {"annotation_file": os.fspath(annotation_file), "max_images": max_images,
                       "AP": table})
    return table


def _add_verification(path, comparisons):
    """Record the verification results in an artifact's JSON."""
    metadata = read_metadata(path)
    metadata["verification"] = [c.to_dict() for c in comparisons]
    write_metadata(path, metadata)
