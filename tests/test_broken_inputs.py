"""The corpus test: every entry point on broken inputs (tests/broken_inputs.py) either gives a
correct result with every skip counted, or one line that names the file, and never a traceback
or a silently different metric.

A perfect estimator (`PoolingNetwork` on dot images) scores AP 1.0 on the valid file, so any
accepted input that changes the metric without a counted skip shows up.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from broken_inputs import (annotation_faults, fuzzed_annotations, image_faults,
                           keypoint_set_faults, write_case)
from pose_fixtures import (DOTS, REPO_ROOT, PoolingNetwork, run_script, save_tiny_model,
                           write_dots_dataset)
from skelpose_tf.data.coco import read_coco_keypoints
from skelpose_tf.data.records import SkipReport
from skelpose_tf.keypoints import get_keypoint_set
from skelpose_tf.model_evaluation import evaluate_coco_decoders

FUZZ_SEED = 13
FUZZ_CASES = 40
USER_ERRORS = (ValueError, OSError)
# TensorFlow's start-up lines on stderr, which no program of ours writes.
_TF_NOISE = re.compile(r"^(WARNING: All log messages|[IWE]\d{4} |.*cuda|.*oneDNN)")


@pytest.fixture(scope="module")
def dots(tmp_path_factory):
    paths = write_dots_dataset(str(tmp_path_factory.mktemp("dots")), num_images=2)
    with open(paths["ann"]) as file:
        paths["valid"] = json.load(file)
    return paths


def _outcome(call, path):
    """("error", message) for a user error naming the file, ("done", result), or a failure."""
    try:
        return "done", call()
    except USER_ERRORS as error:
        message = " ".join(str(error).split())
        assert os.path.basename(path) in message, f"the message names no file: {message}"
        return "error", message


def _evaluate_case(name, content, dots, tmp_path):
    path = write_case(str(tmp_path / "annotations.json"), content)
    kind, result = _outcome(lambda: evaluate_coco_decoders(
        PoolingNetwork(DOTS), path, dots["images"], out_dir=str(tmp_path / "eval"),
        log_every=0), path)
    if kind == "done":
        (evaluation,) = result.values()
        skipped = bool(evaluation.notes)
        assert evaluation.metric.stats["AP"] == 1.0 or skipped, (
            f"{name}: AP {evaluation.metric.stats['AP']} without a counted skip")
    report = SkipReport()
    kind, records = _outcome(lambda: read_coco_keypoints(path, dots["images"], DOTS, (64, 48),
                                                         report=report), path)
    if kind == "done":
        expected = sum(1 for a in dots["valid"]["annotations"])
        assert len(records) == expected or report.skipped, (
            f"{name}: {len(records)} of {expected} people read, nothing counted")


@pytest.mark.parametrize("index", range(17))
def test_hand_made_annotation_faults(dots, tmp_path, index):
    name, content = annotation_faults(dots["valid"])[index]
    _evaluate_case(name, content, dots, tmp_path)


def test_the_hand_made_fault_list_is_all_run(dots):
    assert len(annotation_faults(dots["valid"])) == 17


def test_fuzzed_annotation_files(dots, tmp_path):
    failures = []
    for name, content in fuzzed_annotations(dots["valid"], FUZZ_SEED, FUZZ_CASES):
        case_dir = tmp_path / re.sub(r"\W+", "_", name)
        case_dir.mkdir()
        try:
            _evaluate_case(name, content, dots, case_dir)
        except AssertionError as failure:
            failures.append(f"{name}: {failure}")
        except Exception as error:  # noqa: BLE001 - a traceback a user would see
            failures.append(f"{name}: {type(error).__name__}: {error}")
    assert not failures, "\n".join(failures)


def test_broken_keypoint_sets_are_refused_naming_the_file(dots, tmp_path):
    for n, (name, content) in enumerate(keypoint_set_faults(DOTS.to_config())):
        path = write_case(str(tmp_path / f"set_{n}.json"), content)
        with pytest.raises(ValueError, match=re.escape(os.path.basename(path))):
            get_keypoint_set(path)


def test_broken_images_are_counted_skips_or_repairs(dots, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(dots["images"], images)
    valid = json.loads(json.dumps(dots["valid"]))
    faults = image_faults()
    for n, (name, (file_name, data)) in enumerate(faults.items()):
        (images / file_name).write_bytes(data)
        image_id = 100 + n
        valid["images"].append({"id": image_id, "file_name": file_name, "height": 120,
                                "width": 160})
        person = dict(valid["annotations"][0], id=1000 + n, image_id=image_id)
        valid["annotations"].append(person)
    path = write_case(str(tmp_path / "with_bad_images.json"), valid)
    (evaluation,) = evaluate_coco_decoders(PoolingNetwork(DOTS), path, str(images),
                                           out_dir=str(tmp_path / "eval"), log_every=0).values()
    notes = " ".join(evaluation.notes)
    assert "inputs left out or repaired" in notes
    for word in ("repaired", "skipped"):
        assert word in notes or word.replace("ped", "") in notes, notes


def _one_line_error(completed, names):
    lines = [line for line in completed.stderr.strip().splitlines()
             if not _TF_NOISE.match(line)]
    assert completed.returncode == 1, completed.stderr[-2000:]
    assert "Traceback" not in completed.stderr, completed.stderr[-3000:]
    assert len(lines) == 1, lines
    assert names in lines[0], lines[0]
    return lines[0]


def test_every_entry_point_fails_in_one_line_naming_the_file(dots, tmp_path):
    duplicate = write_case(str(tmp_path / "duplicate_ids.json"),
                           annotation_faults(dots["valid"])[0][1])
    bad_set = write_case(str(tmp_path / "zero_sigmas.json"),
                         keypoint_set_faults(DOTS.to_config())[0][1])
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"not an image")
    run_dir = str(tmp_path / "run")
    save_tiny_model(run_dir)
    runs = [
        (("evaluate.py", f"--weights={run_dir}", f"--ann={duplicate}",
          f"--images={dots['images']}"), "duplicate_ids.json"),
        (("evaluate.py", f"--results_json={duplicate}", f"--ann={duplicate}"),
         "duplicate_ids.json"),
        (("ablation.py", f"--skeletal_weights={run_dir}", f"--ann={duplicate}",
          f"--images={dots['images']}"), "duplicate_ids.json"),
        (("train.py", "--dataset=synthetic", f"--data_dir={tmp_path / 'synthetic'}",
          f"--keypoint_set={bad_set}", f"--run_dir={tmp_path / 'train'}"), "zero_sigmas.json"),
        (("predict.py", f"--weights={run_dir}", f"--image={garbage}",
          f"--out_dir={tmp_path / 'predicted'}"), "garbage.jpg"),
        (("export_tflite.py", f"--weights={tmp_path / 'missing.keras'}"), "missing.keras"),
        (("-m", "skelpose_tf.convert_weights", f"--checkpoint={tmp_path / 'missing.pth'}",
          f"--out={tmp_path / 'x.weights.h5'}"), "missing.pth"),
        (("-m", "skelpose_tf.data.tfrecords", f"--ann={duplicate}",
          f"--images={dots['images']}", f"--out={tmp_path / 'shards'}",
          f"--keypoint_set={dots['keypoint_set']}"), "duplicate_ids.json"),
        (("-m", "skelpose_tf.model_info", f"--keypoint_set={bad_set}"), "zero_sigmas.json"),
        (("-m", "skelpose_tf.data.contact_sheet", f"--data={tmp_path / 'no_data'}",
          f"--out={tmp_path / 'sheet.png'}"), "no_data"),
    ]
    for args, names in runs:
        if args[0] == "-m":
            completed = subprocess.run(
                [sys.executable, *args], cwd=REPO_ROOT, capture_output=True, text=True,
                timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
                                      CUDA_VISIBLE_DEVICES=""))
        else:
            completed = run_script(*args)
        _one_line_error(completed, names)
