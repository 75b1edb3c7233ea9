"""Issue 13 for the tools: no silent wrong answer, no bare traceback.

- The TFRecord converter (`python -m skelpose_tf.data.tfrecords`) refuses an image folder that
  gives no usable image (and writes nothing), refuses the input sizes every other entry point
  refuses, reads the annotations with the training readers (same records refused, same
  messages) and counts grey / PNG-as-JPEG repairs as the training pipeline does.
- `predict.py` on a folder skips an unreadable image, predicts and writes the others, and lists
  the skipped one; a single bad image given by name stays an error.
- `train.py` passes over unreadable validation images (pictures and the validation subset,
  `model_evaluation.first_images`) and says which folder when none is readable.

Data: the project's synthetic generator (seed 0), damaged by the tests.
"""

import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from data_fixtures import write_image
from pose_fixtures import (DOTS, REPO_ROOT, PoolingNetwork, dot_image, run_script,
                           save_tiny_model, small_train_command)
from skelpose_tf import cli, image_prediction
from skelpose_tf.data import coco, mpii, pipeline
from skelpose_tf.data.records import PersonRecord, SkipReport
from skelpose_tf.data.synthetic import generate_dataset
from skelpose_tf.keypoints import COCO
from skelpose_tf.model_evaluation import first_images

CONVERTER = "python -m skelpose_tf.data.tfrecords"
TRUNCATED = "truncated JPEG (no end-of-image marker)"
SIZE = (64, 64)
# One dot person (box, keypoints) and the same person 20 pixels to the right.
ONE_PERSON = (((40.0, 20.0, 60.0, 90.0), ((55.0, 35.0), (70.4, 60.2), (85.0, 95.0))),)
SHIFTED_PERSON = (((60.0, 20.0, 60.0, 90.0), ((75.0, 35.0), (90.4, 60.2), (105.0, 95.0))),)


def convert(*args, timeout=300):
    """Run the converter from the repository root; returns the CompletedProcess."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, "-m", "skelpose_tf.data.tfrecords", *map(str, args)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def error_line(completed, program) -> str:
    """The single `<program>: error: ...` line of a run that failed as a user error."""
    output = completed.stdout[-2000:] + completed.stderr[-3000:]
    assert completed.returncode == 1, output
    assert "Traceback" not in completed.stderr, output
    lines = [line for line in completed.stderr.splitlines()
             if line.startswith(f"{program}: error:")]
    assert len(lines) == 1, output
    return lines[0][len(f"{program}: error: "):]


def truncate(path, keep=300):
    """Cut an image file to its first `keep` bytes (a JPEG without its end-of-image marker)."""
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:keep])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """The synthetic set: 4 train and 3 val images of 160x120 (left undamaged)."""
    return generate_dataset(str(tmp_path_factory.mktemp("synthetic")), 4, 3, seed=0,
                            image_size=(160, 120))


def _copy_train(dataset, tmp_path):
    """A damageable copy of the train images; returns (folder, file names in table order)."""
    folder = str(tmp_path / "images")
    shutil.copytree(dataset.train_images, folder)
    with open(dataset.train_annotations) as f:
        names = [image["file_name"] for image in json.load(f)["images"]]
    return folder, names


# The TFRecord converter ---------------------------------------------------------------------------

def test_converter_refuses_a_wrong_image_folder_and_writes_nothing(dataset, tmp_path):
    empty = tmp_path / "wrong"
    empty.mkdir()
    out = tmp_path / "shards"
    message = error_line(convert("--ann", dataset.train_annotations, "--images", empty,
                                 "--out", out), CONVERTER)
    with open(dataset.train_annotations) as f:
        first = json.load(f)["images"][0]["file_name"]
    assert f"images in {empty} (--images)" in message and "missing image file" in message
    assert os.path.join(str(empty), first) in message  # which image was missing
    assert not out.exists()
    message = error_line(convert("--ann", dataset.train_annotations, "--images",
                                 tmp_path / "nowhere", "--out", out), CONVERTER)
    assert message == f"Image folder (--images) not found: {tmp_path / 'nowhere'}"
    message = error_line(convert("--ann", tmp_path / "none.json", "--images",
                                 dataset.train_images, "--out", out), CONVERTER)
    assert message == f"Annotation file (--ann) not found: {tmp_path / 'none.json'}"
    assert not out.exists()


def test_converter_writes_no_shard_when_no_image_decodes(dataset, tmp_path):
    folder, names = _copy_train(dataset, tmp_path)
    for name in names:
        truncate(os.path.join(folder, name))
    out = tmp_path / "shards"
    out.mkdir()  # an existing folder keeps what it had: nothing
    message = error_line(convert("--ann", dataset.train_annotations, "--images", folder,
                                 "--out", out), CONVERTER)
    assert f"None of the {len(names)} images" in message and "no shards written" in message
    assert TRUNCATED in message and os.path.join(folder, names[0]) in message
    assert os.listdir(out) == []


def test_converter_refuses_an_input_size_that_is_not_a_multiple_of_32(dataset, tmp_path):
    completed = convert("--ann", dataset.train_annotations, "--images", dataset.train_images,
                        "--out", tmp_path / "shards", "--input_size=100x100")
    assert completed.returncode == 1 and "Traceback" not in completed.stderr
    assert "--input_size: input_size must be positive multiples of 32" in completed.stderr
    assert "Received: input_size=(100, 100)" in completed.stderr
    assert not (tmp_path / "shards").exists()


def _short_keypoints(data):
    data["annotations"][0]["keypoints"] = data["annotations"][0]["keypoints"][:5]


def _string_keypoints(data):
    data["annotations"][0]["keypoints"] = ["x"] * 51


def _no_keypoints(data):
    del data["annotations"][0]["keypoints"]


def _no_categories(data):
    del data["categories"]


def _short_joints(entries):
    entries[0]["joints"] = entries[0]["joints"][:3]


@pytest.mark.parametrize("damage", [_short_keypoints, _string_keypoints, _no_keypoints,
                                    _no_categories, "truncated", _short_joints])
def test_converter_refuses_what_training_refuses_with_the_same_message(dataset, tmp_path,
                                                                       damage):
    is_mpii = damage is _short_joints
    source = dataset.mpii_train if is_mpii else dataset.train_annotations
    ann = str(tmp_path / "ann.json")
    with open(source) as f:
        text = f.read()
    if damage == "truncated":
        text = text[: len(text) // 2]
    else:
        data = json.loads(text)
        damage(data)
        text = json.dumps(data)
    with open(ann, "w") as f:
        f.write(text)
    with pytest.raises(ValueError) as raised:  # what train.py's reader says
        if is_mpii:
            mpii.read_mpii(ann, dataset.train_images, SIZE, report=SkipReport())
        else:
            coco.read_coco_keypoints(ann, dataset.train_images, COCO, SIZE, report=SkipReport())
    message = error_line(convert("--ann", ann, "--images", dataset.train_images, "--out",
                                 tmp_path / "shards", "--input_size=64x64",
                                 "--format", "mpii" if is_mpii else "coco"), CONVERTER)
    assert message == cli.one_line(raised.value)
    assert ann in message
    assert not (tmp_path / "shards").exists()


def test_converter_counts_repairs_and_skips_as_training_does(dataset, tmp_path):
    folder, names = _copy_train(dataset, tmp_path)
    grey, png, bad = (os.path.join(folder, name) for name in names[:3])
    image = cv2.imread(grey)
    assert cv2.imwrite(grey, cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))  # a 1-component JPEG
    png_bytes = cv2.imencode(".png", cv2.imread(png))[1].tobytes()
    with open(png, "wb") as f:
        f.write(png_bytes)  # PNG content under a .jpg name
    truncate(bad)
    out = tmp_path / "shards"
    completed = convert("--ann", dataset.train_annotations, "--images", folder, "--out", out,
                        "--shards=2", "--input_size=64x64")
    assert completed.returncode == 0, completed.stderr[-3000:]
    with open(out / "meta.json") as f:
        meta = json.load(f)
    assert meta["num_images"] == len(names) - 1
    assert meta["skipped"] == {TRUNCATED: 1}
    expected = {"grayscale JPEG, decoded and converted to RGB": 1,
                "PNG content in a .jpg file, decoded and converted to RGB": 1}
    assert meta["repaired"] == expected
    assert "repaired: 1 x grayscale JPEG, decoded and converted to RGB" in completed.stdout
    assert f"skipped: 1 x {TRUNCATED}" in completed.stdout
    # The training pipeline repairs the same images.
    report = SkipReport()
    records = coco.read_coco_keypoints(dataset.train_annotations, folder, COCO, SIZE)
    list(pipeline.make_eval_dataset(records, COCO, SIZE, 8, report=report))
    assert report.repaired == expected
    assert sorted(os.listdir(out)) == ["meta.json", "records-00000-of-00002.tfrecord",
                                       "records-00001-of-00002.tfrecord"]


# predict.py on a folder -------------------------------------------------------------------------

def test_predict_images_skips_bad_files_and_keeps_each_image_its_own_people(tmp_path):
    people = [ONE_PERSON, SHIFTED_PERSON]
    good = [write_image(tmp_path / f"good{i}.png", dot_image(p)) for i, p in enumerate(people)]
    _, encoded = cv2.imencode(".jpg", dot_image(people[0]))
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(encoded.tobytes()[:400])
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"not an image at all")
    network = PoolingNetwork(DOTS)
    paths = [str(garbage), good[0], str(truncated), good[1]]
    skipped = []
    predictions = image_prediction.predict_images(network, paths, skipped=skipped)
    assert [p.image_path for p in predictions] == good
    assert skipped == [
        {"image": str(garbage), "reason": "undecodable data (not a known image format)"},
        {"image": str(truncated), "reason": TRUNCATED}]
    alone = image_prediction.predict_images(network, good)
    for prediction, expected in zip(predictions, alone):
        np.testing.assert_array_equal(prediction.keypoints, expected.keypoints)
    skipped = []
    assert image_prediction.predict_images(network, [str(truncated)], skipped=skipped) == []
    assert skipped == [{"image": str(truncated), "reason": TRUNCATED}]


def test_predict_command_on_a_folder_with_a_truncated_jpeg(dataset, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(dataset.val_images, images)
    names = sorted(os.listdir(images))
    bad = str(images / names[1])
    truncate(bad)
    run_dir = str(tmp_path / "run")
    save_tiny_model(run_dir)
    out = tmp_path / "out"
    completed = run_script("predict.py", f"--weights={run_dir}", f"--image={images}",
                           f"--out_dir={out}")
    assert completed.returncode == 0, completed.stderr[-3000:]
    with open(out / "predictions.json") as f:
        payload = json.load(f)
    assert [os.path.basename(e["image"]) for e in payload["images"]] == [names[0], names[2]]
    assert payload["skipped"] == [{"image": bad, "reason": TRUNCATED}]
    assert f"{bad}: skipped ({TRUNCATED})" in completed.stdout
    assert f"images: 2 of {len(names)} predicted, 1 skipped" in completed.stdout
    assert all(os.path.exists(e["drawing"]) for e in payload["images"])
    assert not os.path.exists(out / f"{os.path.splitext(names[1])[0]}_pose.png")

    # A bad image given by name, and a folder of bad images only: one line, status 1.
    message = error_line(run_script("predict.py", f"--weights={run_dir}", f"--image={bad}",
                                    f"--out_dir={tmp_path / 'out2'}"), "predict.py")
    assert message == f"Cannot read image {bad}: {TRUNCATED}."
    for name in names:
        truncate(images / name)
    message = error_line(run_script("predict.py", f"--weights={run_dir}", f"--image={images}",
                                    f"--out_dir={tmp_path / 'out3'}"), "predict.py")
    assert message.startswith(f"None of the {len(names)} images in {images} could be read")
    assert not (tmp_path / "out2").exists() and not (tmp_path / "out3").exists()


# train.py with unreadable validation images -----------------------------------------------------

def test_the_validation_subset_passes_over_unreadable_images(tmp_path):
    good = write_image(tmp_path / "good.png", dot_image(ONE_PERSON))
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(cv2.imencode(".jpg", dot_image(ONE_PERSON))[1].tobytes()[:400])
    paths = [str(truncated), str(tmp_path / "gone.jpg"), good, good]

    def record(image_id, path):
        zeros = np.zeros((3,), np.float32)
        return PersonRecord(image_path=path, image_id=image_id, image_size=(120, 160),
                            box=np.zeros(4, np.float32), center=zeros[:2], scale=zeros[:2],
                            keypoints=np.zeros((3, 2), np.float32), visibility=zeros)

    records = [record(i, path) for i, path in enumerate(paths)]
    report = SkipReport()
    assert first_images(records, 1, report) == [records[2]]
    assert report.skipped == {TRUNCATED: 1, "missing image file": 1}
    assert first_images(records, 1) == [records[0]]  # without a report: the first image



def _train(run_dir, data_dir, *flags):
    command = small_train_command(run_dir, data_dir, 1, 1, "--batch_size=2",
                                  "--tiny_topology=true", "--val_every_epochs=1", *flags)
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES=""))


def test_train_passes_over_unreadable_first_validation_images(tmp_path):
    paths = generate_dataset(str(tmp_path / "data"), 6, 6, seed=0, image_size=(160, 120))
    with open(paths.val_annotations) as f:
        data = json.load(f)
    people = {}
    for annotation in data["annotations"]:
        people[annotation["image_id"]] = people.get(annotation["image_id"], 0) + 1
    # Damage the first images until they hold the whole validation subset (2 people).
    damaged = 0
    for image in data["images"]:
        if damaged >= 2:
            break
        truncate(os.path.join(paths.val_images, image["file_name"]))
        damaged += people.get(image["id"], 0)
    assert sum(people.values()) > damaged + 1  # readable people are left
    run_dir = tmp_path / "run"
    completed = _train(run_dir, paths.root, "--val_max_people=2")
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "validation after epoch 1: AP" in completed.stdout
    with open(run_dir / "summary.json") as f:
        summary = json.load(f)
    assert f"x {TRUNCATED}" in summary["skipped_validation"]
    with open(run_dir / "validation.jsonl") as f:
        assert len(f.read().splitlines()) == 1

    for image in data["images"]:
        truncate(os.path.join(paths.val_images, image["file_name"]))
    message = error_line(_train(tmp_path / "run2", paths.root), "train.py")
    assert message.startswith(f"None of the validation images in {paths.val_images} could be "
                              "read")
    assert TRUNCATED in message
