"""The model carries its codec: sigma, decoder, N and pixel convention travel with a trained model
into evaluation, prediction and every export, and the export JSON states its own mapping."""

import json
import os
import subprocess

import numpy as np
import pytest

from pose_fixtures import (REPO_ROOT, he_initialise, he_initialised_tiny_model, run_script,
                           small_train_command, tiny_pose_model)
from skelpose_tf.codec import HeatmapCodec
from skelpose_tf.data.coco import read_coco_keypoints
from skelpose_tf.data.synthetic import dataset_paths
from skelpose_tf.model_evaluation import evaluate_coco_decoders
from skelpose_tf.export import export_saved_model, read_metadata
from skelpose_tf.export.runtime import SavedModelRunner
from skelpose_tf.export.verify import crops_from_records
from skelpose_tf.inference import PosePredictor
from skelpose_tf.model_loading import load_pose_model
from skelpose_tf.models.pose_model import PoseHRNet, build_pose_model


def test_codec_settings_are_part_of_the_config_and_survive_a_save(tmp_path):
    network = tiny_pose_model("mpii", input_size=(64, 64), sigma=3.0, decoder="dark", top_n=7)
    config = network.get_config()
    assert (config["sigma"], config["decoder"], config["top_n"], config["heatmap_stride"],
            config["pixel_convention"]) == (3.0, "dark", 7, 4, "centered")
    network.set_decoding(decoder="quarter")  # an inference choice; sigma stays
    path = str(tmp_path / "model.keras")
    network.save(path)
    loaded, _ = load_pose_model(path)
    assert loaded.codec.get_config() == network.codec.get_config()
    assert (loaded.codec.sigma, loaded.codec.decoder, loaded.codec.top_n) == (3.0, "quarter", 7)
    # The official default sigma follows the input size (HRNet: 3 for 384x288).
    assert PoseHRNet.from_config(dict(config, input_size=[384, 288], sigma=None)).codec.sigma == 3
    assert build_pose_model(8, (64, 64), "mpii", **_tiny()).codec.sigma == 2.0
    with pytest.raises(ValueError, match="sigma=2.0 was requested"):
        load_pose_model(path, sigma=2.0)
    with pytest.raises(ValueError, match="heatmaps have stride 4"):
        PoseHRNet.from_config(dict(config, heatmap_stride=2))
    with pytest.raises(ValueError, match="top_n must be an integer in"):
        tiny_pose_model("mpii", input_size=(64, 64), top_n=10_000)


def _tiny():
    from skelpose_tf.models.pose_model import TOPOLOGIES

    return TOPOLOGIES["tiny"]


def test_a_model_trained_with_sigma_3_evaluates_exports_and_decodes_with_sigma_3(
        tmp_path, synthetic_train_dir):
    synthetic = synthetic_train_dir
    run_dir = str(tmp_path / "run")
    command = small_train_command(run_dir, synthetic, 1, 1, "--batch_size=4",
                                  "--val_every_epochs=1", "--sigma=3", "--decoder=dark")
    completed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True,
                               timeout=900)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    summary = json.load(open(os.path.join(run_dir, "summary.json")))
    assert (summary["decoding"]["sigma"], summary["decoding"]["method"]) == (3.0, "dark")

    network, _ = load_pose_model(run_dir)  # best.keras
    assert (network.codec.sigma, network.codec.decoder) == (3.0, "dark")
    paths, images = dataset_paths(synthetic).val_annotations, dataset_paths(synthetic).val_images
    (evaluation,) = evaluate_coco_decoders(network, paths, images, out_dir=str(tmp_path / "e"),
                                           log_every=0).values()
    assert (evaluation.decoder, evaluation.decoding["sigma"]) == ("dark", 3.0)

    # Peaked heatmaps (He-initialised weights on the trained model's config), on which the
    # dark decoder's blur, and so its sigma, changes the keypoints.
    he_initialise(network)
    export_dir = export_saved_model(network, str(tmp_path / "saved_model"))
    assert read_metadata(export_dir)["decoder"]["sigma"] == 3.0
    runner = SavedModelRunner(export_dir)
    assert (runner.codec.sigma, runner.codec.decoder) == (3.0, "dark")

    # Decoding uses sigma 3: the dark decoder blurs with it, and sigma 2 would move keypoints.
    records = read_coco_keypoints(paths, images, network.keypoint_set, network.input_size)
    crops = crops_from_records(records, network.keypoint_set, network.input_size, 8)
    # Each model's keypoints against its own heatmaps, decoded with sigma 3 and with sigma 2.
    for name, outputs in (("keras", PosePredictor(network).predict(crops)),
                          ("saved_model", runner.predict(crops))):
        for codec_sigma, same in ((3.0, True), (2.0, False)):
            codec = HeatmapCodec(network.input_size, network.keypoint_set, sigma=codec_sigma,
                                 decoder="dark")
            keypoints, _ = codec.decode(outputs["heatmaps"])
            difference = np.abs(np.asarray(keypoints) - outputs["keypoints"]).max()
            assert (difference < 1e-3) == same, (name, codec_sigma, difference)


@pytest.mark.parametrize("convention, offset", [("hrnet", 0.0), ("centered", 1.5)])
def test_an_export_states_its_own_pixel_convention_and_a_client_lands_on_keras_pixels(
        tmp_path, convention, offset):
    network = he_initialised_tiny_model(input_size=(64, 64), pixel_convention=convention)
    path = export_saved_model(network, str(tmp_path / convention), flip_test=False)
    mapping = read_metadata(path)["decoder"]["heatmap_to_crop"]
    assert (mapping["scale"], mapping["offset"]) == (4.0, offset)
    assert (convention == "hrnet") == ("x_crop = x_heatmap * stride," in mapping["formula"])
    crops = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    heatmaps = SavedModelRunner(path).predict(crops)["heatmaps"]
    # A client: argmax of each exported heatmap, then the JSON's mapping to crop pixels.
    flat = heatmaps.reshape(3, -1, heatmaps.shape[-1]).argmax(axis=1)
    rows, columns = np.divmod(flat, heatmaps.shape[2])
    client = np.stack([columns, rows], axis=-1) * mapping["scale"] + mapping["offset"]
    keras_argmax = PosePredictor(network, network.codec.replace(decoder="argmax"),
                                 flip_test=False).predict(crops)
    found = keras_argmax["keypoint_scores"] > 0
    np.testing.assert_allclose(client[found], keras_argmax["keypoints"][found], atol=1e-4)


def test_every_script_loads_a_weights_file_with_the_same_architecture_and_codec_flags(
        tmp_path, synthetic_eval_dir):
    synthetic = synthetic_eval_dir
    """evaluate.py and export_tflite.py (and predict.py / ablation.py, which share the module)
    build a .weights.h5 file from the shared flags and decode it as told."""
    weights = str(tmp_path / "tiny.weights.h5")
    he_initialised_tiny_model(input_size=(64, 64)).save_weights(weights)
    shared = [f"--weights={weights}", "--width=8", "--input_size=64x64", "--topology=tiny",
              "--sigma=3", "--decoder=dark", "--top_n=5"]
    completed = run_script("evaluate.py", *shared, f"--data_dir={synthetic}", "--max_people=4",
                           f"--out_dir={tmp_path / 'evaluate'}")
    assert completed.returncode == 0, completed.stderr[-3000:]
    metrics = json.load(open(tmp_path / "evaluate" / "metrics.json"))
    assert (metrics["decoder"], metrics["decoding"]["sigma"], metrics["decoding"]["top_n"]) == (
        "dark", 3.0, 5)
    export_dir = tmp_path / "saved_model"
    completed = run_script("export_tflite.py", *shared, "--format=saved_model",
                           f"--out={export_dir}", f"--data_dir={synthetic}",
                           "--num_verification=4")
    assert completed.returncode == 0, completed.stderr[-3000:]
    decoding = read_metadata(str(export_dir))["decoder"]
    assert (decoding["method"], decoding["sigma"], decoding["top_n"]) == ("dark", 3.0, 5)
    for script in ("predict.py", "ablation.py"):
        help_text = run_script(script, "--helpfull").stdout
        section = help_text[help_text.index("skelpose_tf.model_flags:"):]
        assert all(f"--{name}" in section for name in ("topology", "sigma", "top_n", "width"))
