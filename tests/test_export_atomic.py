"""All-or-nothing exports and the atomic file helpers they rest on.

An export interrupted at any point (an exception, Ctrl-C, a real SIGKILL of the process, a
kill between the two renames of the directory swap) must leave the previous export
byte-identical, with an `export_report.json` that still describes it; a finished one replaces
the directory as a whole and leaves no staging or `.being-replaced` sibling.

The "previous export" is written once per module (one float32 keypoint model, weighted
decoder) with a path relative to the working directory, then copied into each test's
directory, so its report names the copy's files. The new exports use another decoder
(`dark`), so a report that describes the new export instead of the old one is caught.
"""

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest
from pose_fixtures import TESTS_DIR, TINY_INPUT_SIZE

import skelpose_tf.export.bundle as export_module
from skelpose_tf.atomic_files import (DamagedFileError, atomic_write, check_keras_file,
                                      keras_file_metadata, recover_directory, save_keras_atomic)
from skelpose_tf.export import (KILL_AT_ENV, REPORT_FILE, RejectedExportError, Tolerance,
                                dataset_crops, export_all, open_runner, read_metadata)
from skelpose_tf.keypoints import COCO

INPUT_SIZE = TINY_INPUT_SIZE
OLD_DECODER, NEW_DECODER = "weighted", "dark"
FAST = dict(quantizations=("float32",), heatmap_quantizations=(), saved_model=False)


# `network` (the He-initialised tiny model) is a conftest.py fixture.
@pytest.fixture(scope="module")
def crops(tmp_path_factory):
    """Three val crops of a smaller synthetic set than conftest.py's `data` (these tests export
    and verify many times)."""
    from skelpose_tf.data.synthetic import generate_dataset

    data = generate_dataset(str(tmp_path_factory.mktemp("synthetic")), 1, 2, seed=0,
                            image_size=(160, 120))
    return dataset_crops(data.val_annotations, data.val_images, COCO, INPUT_SIZE, 3)


@pytest.fixture(scope="module")
def previous_template(tmp_path_factory, network, crops):
    """A finished export at `<root>/export` whose report names `export/...` (relative)."""
    root = tmp_path_factory.mktemp("previous")
    with contextlib.chdir(root):
        export_all(network, "export", None, crops, decoder=OLD_DECODER, out=_Quiet(), **FAST)
    return root / "export"


@pytest.fixture
def previous(tmp_path, monkeypatch, previous_template):
    """This test's copy of the previous export, as the relative path "export" (cwd: tmp_path)."""
    shutil.copytree(previous_template, tmp_path / "export")
    monkeypatch.chdir(tmp_path)
    return "export"


class _Quiet:
    def write(self, text):
        return len(text)

    def flush(self):
        pass


def tree_hashes(directory) -> dict:
    """{relative path: sha256} of every file under `directory`."""
    hashes = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as file:
                hashes[os.path.relpath(path, directory)] = hashlib.sha256(file.read()).hexdigest()
    return hashes


def json_texts(directory) -> dict:
    """{relative path: text} of every JSON file under `directory`."""
    texts = {}
    for root, _, names in os.walk(directory):
        for name in (n for n in names if n.endswith(".json")):
            with open(os.path.join(root, name)) as file:
                texts[os.path.relpath(os.path.join(root, name), directory)] = file.read()
    return texts


def assert_consistent(out_dir, decoder, names_dir=None):
    """`out_dir`'s report names `names_dir` (default `out_dir`) and `decoder`, every artifact
    it lists exists there with that decoder in its JSON, and no JSON names a staging dir."""
    names_dir = os.path.normpath(names_dir or out_dir)
    with open(os.path.join(out_dir, REPORT_FILE)) as file:
        report = json.load(file)
    assert os.path.normpath(report["out_dir"]) == names_dir
    assert report["decoder"] == decoder
    assert report["artifacts"]
    for artifact in report["artifacts"]:
        path = os.path.join(out_dir, os.path.relpath(artifact["path"], names_dir))
        assert os.path.dirname(os.path.normpath(artifact["path"])) == names_dir
        assert os.path.exists(path), artifact["path"]
        assert read_metadata(path)["decoder"]["method"] == decoder
    for name, text in json_texts(out_dir).items():
        assert ".partial-" not in text, name
    return report


def leftovers(out_dir) -> list:
    """Staging (`.<name>.partial-*`) and `<name>.being-replaced` siblings of `out_dir`."""
    parent, name = os.path.split(os.path.abspath(out_dir))
    return sorted(entry for entry in os.listdir(parent)
                  if entry.startswith(f".{name}.partial-") or entry == f"{name}.being-replaced")


def dead_pid() -> int:
    """The id of a process that has exited (for a stale staging directory's name)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


# Interrupted exports ---------------------------------------------------------------------------
def test_interrupted_export_leaves_the_previous_one(previous, network, crops, monkeypatch):
    before = tree_hashes(previous)
    real_export = export_module.export_verified_tflite
    written = []

    def interrupted_on_the_second(exporter, path, *args, **kwargs):
        assert ".export.partial-" in path  # nothing is written into the export directory
        written.append(path)
        if len(written) == 2:
            raise KeyboardInterrupt
        return real_export(exporter, path, *args, **kwargs)

    monkeypatch.setattr(export_module, "export_verified_tflite", interrupted_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        export_all(network, previous, None, crops, decoder=NEW_DECODER, out=_Quiet(),
                   quantizations=("float32",), heatmap_quantizations=("float32",),
                   saved_model=False)
    assert len(written) == 2
    assert tree_hashes(previous) == before
    assert_consistent(previous, OLD_DECODER)
    assert leftovers(previous) == []  # the half-written staging directory was deleted


KILLED_EXPORT = """
import sys
import numpy as np
sys.path.insert(0, {tests_dir!r})
from pose_fixtures import he_initialised_tiny_model
from skelpose_tf.export import export_all
export_all(he_initialised_tiny_model({input_size!r}), "export", None, np.load("crops.npy"),
           decoder={decoder!r}, quantizations=("float32",), heatmap_quantizations=("float32",),
           saved_model=False)
"""


@pytest.mark.parametrize("kill_at", ["artifact-1", "swap"])
def test_sigkill_inside_the_export_leaves_the_previous_one(previous, crops, kill_at):
    """A real process SIGKILLs itself (`KILL_AT_ENV`) after the first model / just before the
    swap; then `recover_directory` deletes its staging directory."""
    before = tree_hashes(previous)
    np.save("crops.npy", crops)
    script = KILLED_EXPORT.format(tests_dir=TESTS_DIR, input_size=INPUT_SIZE,
                                  decoder=NEW_DECODER)
    environment = {**os.environ, KILL_AT_ENV: kill_at, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True,
                            text=True, timeout=300, env=environment)
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    assert tree_hashes(previous) == before
    assert_consistent(previous, OLD_DECODER)
    (staged,) = leftovers(previous)  # a kill cannot clean up after itself
    if kill_at == "swap":  # complete, and its report already names the final directory
        assert_consistent(staged, NEW_DECODER, names_dir=previous)
    assert recover_directory(previous)
    assert leftovers(previous) == []
    assert tree_hashes(previous) == before


def _first_rename_of_a_swap(out_dir):
    """The state a kill between `replace_directory`'s two renames leaves: the old export
    renamed to `.being-replaced`, the new one still under its staging name (of a dead process)."""
    shutil.copytree(out_dir, f".{out_dir}.partial-{dead_pid()}")
    os.replace(out_dir, f"{out_dir}.being-replaced")
    assert not os.path.exists(out_dir)


def test_kill_between_the_renames_is_repaired(previous, network, crops):
    before = tree_hashes(previous)
    # A reader repairs it.
    _first_rename_of_a_swap(previous)
    runner = open_runner(os.path.join(previous, "pose_float32.tflite"), num_threads=1)
    assert runner.predict(crops)["keypoints"].shape == (len(crops), COCO.num_keypoints, 2)
    assert leftovers(previous) == [] and tree_hashes(previous) == before
    # recover_directory repairs it and deletes the stale staging directory.
    _first_rename_of_a_swap(previous)
    assert recover_directory(previous)
    assert leftovers(previous) == [] and tree_hashes(previous) == before
    assert_consistent(previous, OLD_DECODER)
    # So does the next export, which then installs itself.
    _first_rename_of_a_swap(previous)
    report = export_all(network, previous, None, crops, decoder=NEW_DECODER, out=_Quiet(),
                        **FAST)
    assert report.passed and leftovers(previous) == []
    assert_consistent(previous, NEW_DECODER)


# Finished and failed exports ------------------------------------------------------------------
def test_reexport_with_saved_model_replaces_everything(previous, network, crops):
    with open(os.path.join(previous, "notes.txt"), "w") as file:
        file.write("not part of the new export")
    report = export_all(network, previous, None, crops, decoder=NEW_DECODER, out=_Quiet(),
                        quantizations=("float32",), heatmap_quantizations=(), saved_model=True)
    assert report.passed and report.out_dir == previous
    assert {os.path.relpath(a.path, previous) for a in report.artifacts} == {
        "saved_model", "pose_float32.tflite"}
    assert set(os.listdir(previous)) == {"saved_model", "pose_float32.tflite",
                                         "pose_float32.json", REPORT_FILE}
    written = assert_consistent(previous, NEW_DECODER)
    assert written == json.loads(json.dumps(report.to_dict()))
    assert leftovers(previous) == []


# Fails every model: a score error is never negative.
IMPOSSIBLE = Tolerance(keypoint_max_px=0.0, keypoint_mean_px=0.0, score=-1.0, heatmap=0.0)


def test_failed_verification_keeps_the_previous_export(previous, network, crops):
    before = tree_hashes(previous)
    failed = f"{previous}.failed"
    os.makedirs(failed)
    with open(os.path.join(failed, "older.txt"), "w") as file:
        file.write("an older rejected export")
    with pytest.raises(RejectedExportError) as raised:
        export_all(network, previous, None, crops, decoder=NEW_DECODER, out=_Quiet(),
                   tolerances={"float32": IMPOSSIBLE}, **FAST)
    message = str(raised.value)
    assert "pose_float32.tflite" in message and "FAILED" in message
    assert f"rejected export is in {failed}" in message
    assert f"previous export in {previous} is kept" in message
    assert tree_hashes(previous) == before
    assert_consistent(previous, OLD_DECODER)
    assert raised.value.report.out_dir == failed and not raised.value.report.passed
    assert not assert_consistent(failed, NEW_DECODER)["passed"]
    assert "older.txt" not in os.listdir(failed)
    assert leftovers(previous) == [] and leftovers(failed) == []
    # Without raise_on_failure the caller takes the verdict: the export is installed as it is.
    report = export_all(network, previous, None, crops, decoder=NEW_DECODER, out=_Quiet(),
                        tolerances={"float32": IMPOSSIBLE}, raise_on_failure=False, **FAST)
    assert report.out_dir == previous and not report.passed
    assert not assert_consistent(previous, NEW_DECODER)["passed"]


# atomic_files ---------------------------------------------------------------------------------
def test_atomic_write_keeps_the_old_file_on_an_exception(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="cut short"), atomic_write(path) as temporary:
        with open(temporary, "w") as file:
            file.write("new, half")
        raise RuntimeError("cut short")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["summary.json"]  # the temporary file is gone
    with atomic_write(path) as temporary, open(temporary, "w") as file:
        file.write("new")
    assert path.read_text() == "new" and os.listdir(tmp_path) == ["summary.json"]


@pytest.fixture
def keras_file(tmp_path):
    """(path, model, metadata) of a small model saved by `save_keras_atomic`."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")])
    metadata = {"epoch": 7, "val_ap": 0.625, "note": "best"}
    path = str(tmp_path / "best.keras")
    save_keras_atomic(model, path, metadata)
    return path, model, metadata


def test_save_keras_atomic_round_trip(keras_file):
    path, model, metadata = keras_file
    assert os.listdir(os.path.dirname(path)) == ["best.keras"]
    check_keras_file(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    for expected, actual in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(expected, actual)
    assert keras_file_metadata(path) == metadata
    assert keras_file_metadata(path + ".missing") is None


def test_check_keras_file_names_a_truncated_or_missing_file(keras_file, tmp_path):
    path = keras_file[0]
    truncated = str(tmp_path / "truncated.keras")
    with open(path, "rb") as file:
        content = file.read()
    with open(truncated, "wb") as file:
        file.write(content[: len(content) // 2])
    with pytest.raises(DamagedFileError, match=re.escape(truncated) + ".*corrupt"):
        check_keras_file(truncated)
    missing = str(tmp_path / "missing.keras")
    with pytest.raises(FileNotFoundError, match=re.escape(missing)):
        check_keras_file(missing)


def test_a_png_that_cannot_be_written_keeps_the_previous_one(tmp_path):
    import cv2

    from skelpose_tf.atomic_files import write_png_atomic

    path = tmp_path / "pose.png"
    image = np.zeros((4, 6, 3), np.uint8)
    image[..., 0] = 200  # red in RGB
    write_png_atomic(str(path), image)
    np.testing.assert_array_equal(cv2.imread(str(path))[..., ::-1], image)
    with pytest.raises(ValueError, match="Cannot write"):
        write_png_atomic(str(path), np.zeros((0, 6, 3), np.uint8))  # nothing to encode
    np.testing.assert_array_equal(cv2.imread(str(path))[..., ::-1], image)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pose.png"]
