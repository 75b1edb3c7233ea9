"""The seeded ablation: pairing of the variants of one seed, the swap and joint-group metrics on
hand-made poses, the statistics, the resume of an interrupted ablation, synthetic --same_sides."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from pose_fixtures import REPO_ROOT
from skelpose_tf import ablation_runs, ablation_stats
from skelpose_tf.cli import UserError
from skelpose_tf.evaluation import pose_errors
from skelpose_tf.keypoints import COCO, MPII

# A standing person facing the camera (image pixels): its left side is on the image's right.
POSE = {
    "nose": (50, 20), "l_eye": (53, 18), "r_eye": (47, 18), "l_ear": (56, 20),
    "r_ear": (44, 20), "l_shoulder": (62, 35), "r_shoulder": (38, 35), "l_elbow": (66, 55),
    "r_elbow": (34, 55), "l_wrist": (68, 75), "r_wrist": (32, 75), "l_hip": (58, 80),
    "r_hip": (42, 80), "l_knee": (59, 105), "r_knee": (41, 105), "l_ankle": (60, 130),
    "r_ankle": (40, 130),
}  # fmt: skip
TRUTH = np.array([POSE[name] for name in COCO.keypoint_names], np.float64)
AREA = 1500.0


def _exchange(points, names):
    """`points` with each named left keypoint exchanged with its right partner."""
    out = points.copy()
    for name in names:
        left, right = COCO.index(f"l_{name}"), COCO.index(f"r_{name}")
        out[[left, right]] = points[[right, left]]
    return out


def _swap(pred, labelled=None):
    labelled = np.ones(17, bool) if labelled is None else labelled
    return pose_errors.swap_rate(pred[None], TRUTH[None], labelled[None], [AREA], COCO)


def test_swap_rate_of_a_perfect_a_fully_swapped_and_a_one_arm_swapped_pose():
    perfect = _swap(TRUTH)
    assert (perfect["people"], perfect["swapped"], perfect["pairs"],
            perfect["pairs_swapped"]) == (1, 0, 6, 0)
    # Every flip pair exchanged (eyes and ears too): the prediction of a mirrored person.
    fully = _swap(TRUTH[list(COCO.flip_index)])
    assert (fully["swapped"], fully["rate"], fully["pairs_swapped"]) == (1, 1.0, 6)
    # Only the limbs exchanged: the face plays no part in the decision.
    limbs = _swap(_exchange(TRUTH, ["shoulder", "elbow", "wrist", "hip", "knee", "ankle"]))
    assert limbs["swapped"] == 1
    # One arm swapped (elbows and wrists exchanged, shoulders right): 4 of 12 limb keypoints
    # fit better exchanged, 8 worse -> the person is not swapped; 2 of 6 limb pairs are.
    one_arm = _swap(_exchange(TRUTH, ["elbow", "wrist"]))
    assert (one_arm["people"], one_arm["swapped"]) == (1, 0)
    assert (one_arm["pairs"], one_arm["pairs_swapped"]) == (6, 2)
    # A person with no limb pair labelled on both sides is not counted.
    labelled = np.zeros(17, bool)
    labelled[[COCO.index("l_elbow"), COCO.index("r_knee")]] = True
    lonely = _swap(TRUTH[list(COCO.flip_index)], labelled)
    assert (lonely["people"], lonely["rate"], lonely["pairs"]) == (0, None, 0)


def test_joint_groups_follow_the_links():
    names = lambda indices, ks: [ks.keypoint_names[i] for i in indices]  # noqa: E731
    coco = pose_errors.joint_groups(COCO)
    assert names(coco["head"], COCO) == ["nose", "l_eye", "r_eye", "l_ear", "r_ear"]
    assert sorted(names(coco["arms"], COCO)) == sorted(
        ["l_shoulder", "r_shoulder", "l_elbow", "r_elbow", "l_wrist", "r_wrist"])
    assert sorted(names(coco["legs"], COCO)) == sorted(
        ["l_hip", "r_hip", "l_knee", "r_knee", "l_ankle", "r_ankle"])
    mpii = pose_errors.joint_groups(MPII)
    assert sorted(names(mpii["head"], MPII)) == ["head_top", "pelvis", "thorax", "upper_neck"]
    assert pose_errors.limb_flip_pairs(COCO) == ((5, 6), (7, 8), (9, 10), (11, 12), (13, 14),
                                                 (15, 16))


def test_group_errors_are_distances_over_the_box_size():
    pred = TRUTH.copy()
    arms = pose_errors.joint_groups(COCO)["arms"]
    pred[arms] += (3.0, 4.0)  # 5 px off
    labelled = np.ones(17, bool)
    labelled[COCO.index("l_wrist")] = False  # unlabelled: not averaged
    errors = pose_errors.group_errors(pred[None], TRUTH[None], labelled[None], [50.0], COCO)
    assert errors["arms"] == pytest.approx(10.0)  # 5 / 50 in percent
    assert errors["head"] == 0.0 and errors["legs"] == 0.0
    assert errors["all"] == pytest.approx(10.0 * 5 / 16)


def test_pose_error_report_matches_people_to_results_in_any_order(tmp_path):
    other = TRUTH + (100.0, 0.0)
    annotations = [
        {"id": 1, "image_id": 7, "keypoints": np.c_[TRUTH, np.full(17, 2)].ravel().tolist(),
         "area": AREA, "bbox": [30, 15, 40, 120], "iscrowd": 0},
        {"id": 2, "image_id": 7, "keypoints": np.c_[other, np.full(17, 2)].ravel().tolist(),
         "area": AREA, "bbox": [130, 15, 40, 120], "iscrowd": 0},
        {"id": 3, "image_id": 8, "keypoints": np.c_[TRUTH, np.full(17, 1)].ravel().tolist(),
         "area": AREA, "bbox": [30, 15, 40, 120], "iscrowd": 0},  # no result: unmatched
        {"id": 4, "image_id": 8, "keypoints": [0] * 51, "area": 0, "bbox": [0, 0, 1, 1],
         "iscrowd": 0},  # nothing labelled: not a person of the metric
    ]
    results = [  # the second person first, predicted mirrored; the first person exact
        {"image_id": 7, "category_id": 1, "score": 0.9,
         "keypoints": np.c_[other[list(COCO.flip_index)], np.ones(17)].ravel().tolist()},
        {"image_id": 7, "category_id": 1, "score": 0.8,
         "keypoints": np.c_[TRUTH, np.ones(17)].ravel().tolist()},
    ]
    ann_file, res_file = tmp_path / "ann.json", tmp_path / "res.json"
    ann_file.write_text(json.dumps({"annotations": annotations}))
    res_file.write_text(json.dumps(results))
    report = pose_errors.pose_error_report(str(ann_file), str(res_file), COCO)
    assert (report["people"], report["matched"], report["unmatched"]) == (3, 2, 1)
    assert (report["swap"]["people"], report["swap"]["swapped"]) == (2, 1)
    assert report["errors"]["head"] > 0.0  # the mirrored person's eyes and ears are off


def test_summary_means_sds_and_paired_differences():
    def numbers(ap):
        return {"AP": ap, "AR": ap + 0.1, "swap": {"rate": 0.1, "pair_rate": 0.05},
                "errors": {"head": 1.0, "arms": 2.0, "legs": 3.0}}

    aps = {"baseline": (0.50, 0.52, 0.54), "skeletal": (0.51, 0.55, 0.55)}
    scores = {(variant, seed): {"quarter": numbers(ap), "weighted": numbers(ap + 0.01 * seed)}
              for variant, values in aps.items() for seed, ap in enumerate(values)}
    summary = ablation_stats.summarize(scores, ("baseline", "skeletal"),
                                       ("quarter", "weighted"))
    base = summary["groups"]["baseline"]["quarter"]["AP"]
    assert (base["n"], base["mean"], base["sd"]) == (3, pytest.approx(52.0), pytest.approx(2.0))
    diff = summary["vs_baseline"]["skeletal"]["quarter"]["AP"]  # 1, 3, 1 points
    assert diff["mean"] == pytest.approx(5.0 / 3)
    assert diff["se"] == pytest.approx(np.std([1, 3, 1], ddof=1) / np.sqrt(3))
    assert diff["resolved"] is True  # 1.67 > 2 x 0.67
    decoder = summary["vs_quarter"]["baseline"]["weighted"]["AP"]  # 0, 1, 2 points
    assert (decoder["mean"], decoder["se"]) == (pytest.approx(1.0), pytest.approx(1 / np.sqrt(3)))
    physical = {("physical_links", seed): {"quarter": numbers(ap - 0.02), "weighted":
                                          numbers(ap)} for seed, ap in enumerate((0.5, 0.5, 0.6))}
    with_physical = ablation_stats.summarize({**scores, **physical},
                                             ("baseline", "skeletal", "physical_links"),
                                             ("quarter", "weighted"))
    to_skeletal = with_physical["vs_skeletal"]["physical_links"]["quarter"]["AP"]
    assert to_skeletal["differences"] == pytest.approx({0: -3.0, 1: -7.0, 2: 3.0})
    assert set(with_physical["vs_skeletal"]) == {"physical_links"}
    markdown = ablation_stats.format_markdown(summary, "t")
    assert "| + skeletal attention | quarter | 3 | +1.7 +- 0.7 * |" in markdown
    assert "| HRNet baseline | weighted - quarter | 3 | +1.0 +- 0.6 |" in markdown


def _recipe(tmp_path, data_dir):
    recipe = tmp_path / "recipe.cfg"
    recipe.write_text("\n".join([
        "--dataset=synthetic", f"--data_dir={data_dir}", "--width=8", "--tiny_topology=true",
        "--input_size=64x64", "--batch_size=4", "--epochs=1", "--steps_per_epoch=2",
        "--mixed_precision=float32", "--backbone_weights=none", "--verbose=0"]) + "\n")
    return str(recipe)


def test_plan_gives_every_variant_of_a_seed_its_flags(tmp_path):
    recipe = _recipe(tmp_path, "data")
    specs = ablation_runs.plan_runs(recipe, ablation_runs.parse_variants(["all"]), (3, 1),
                                    str(tmp_path / "out"))
    assert [(s.variant, s.seed) for s in specs] == [
        (v, seed) for seed in (3, 1) for v in ablation_runs.VARIANTS]
    physical = next(s for s in specs if s.variant == "physical_links")
    path = next(f for f in physical.flags if f.startswith("--keypoint_set="))[15:]
    with open(path) as f:
        reduced = json.load(f)
    assert len(reduced["links"]) == 10
    assert all(link["kind"] == "physical" for link in reduced["links"])
    assert reduced["flip_pairs"] == [list(p) for p in COCO.flip_pairs]
    no_loss = next(s for s in specs if s.variant == "no_skeletal_loss")
    assert "--skeletal_loss_weight=0" in no_loss.flags
    for spec in specs:
        assert f"--seed={spec.seed}" in spec.flags and "--deterministic_data=true" in spec.flags
    with pytest.raises(ValueError, match="--variants must name some of"):
        ablation_runs.parse_variants(["baseline", "skeletl"])


def test_variants_of_one_seed_see_the_same_batches_and_shared_initial_weights(
        synthetic_train_dir, tmp_path):
    """Through train.py's own flag parsing (tests/resolve_configs.py) and training's own
    builders: the shared layers start equal, the batches are identical."""
    from skelpose_tf.keypoints import get_keypoint_set
    from skelpose_tf.training.config import TrainConfig
    from skelpose_tf.training.loop import TrainingData, _train_dataset, build_trainer

    recipe = _recipe(tmp_path, synthetic_train_dir)
    specs = ablation_runs.plan_runs(recipe, ("baseline", "skeletal", "physical_links"), (5,),
                                    str(tmp_path / "out"))
    argument_lists = [[f"--flagfile={recipe}", *spec.flags] for spec in specs]
    completed = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "tests",
                                                             "resolve_configs.py"),
                                json.dumps(argument_lists)], capture_output=True, text=True,
                               cwd=REPO_ROOT, timeout=300)
    assert completed.returncode == 0, completed.stderr
    configs = []
    for result in json.loads(completed.stdout)["results"]:
        fields = result["config"]
        fields["input_size"] = tuple(fields["input_size"])
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
        configs.append(TrainConfig(**fields))
    assert [c.skeletal_attention for c in configs] == [False, True, True]
    assert {c.seed for c in configs} == {5}
    weights, batches = [], []
    for config in configs:
        keypoint_set = get_keypoint_set(config.keypoint_set)
        network, *_ = build_trainer(config, keypoint_set, 2, config.batch_size, "float32",
                                    sys.stdout)
        weights.append({w.path: w.numpy() for w in network.weights})
        data = TrainingData(config, keypoint_set, out=open(os.devnull, "w"))
        dataset = _train_dataset(config, data, keypoint_set, None, config.batch_size,
                                 config.seed)
        batches.append([_flat(batch) for batch in dataset.take(2)])
    baseline, skeletal, physical = weights
    shared = set(baseline) & set(skeletal)
    assert len(shared) == len(baseline)  # the module adds, it replaces nothing
    assert any(p.startswith("stage4") for p in shared)
    for path in sorted(shared):
        np.testing.assert_array_equal(baseline[path], skeletal[path], err_msg=path)
        np.testing.assert_array_equal(baseline[path], physical[path], err_msg=path)
    assert skeletal["skeletal_attention/kernel"].shape[-1] == 16
    assert physical["skeletal_attention/kernel"].shape[-1] == 10
    for other in batches[1:]:
        assert len(other) == len(batches[0]) == 2
        for a, b in zip(batches[0], other):
            assert len(a) == len(b)
            for x, y in zip(a, b):
                np.testing.assert_array_equal(x, y)


def _flat(structure):
    """Every array of a (nested) batch, in a fixed order."""
    import tensorflow as tf

    return [np.asarray(t) for t in tf.nest.flatten(structure)]


FAKE_TRAIN = """
import json, os, sys
run_dir = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--run_dir="))
with open(os.environ["CALLS"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
os.makedirs(run_dir, exist_ok=True)
with open(os.path.join(run_dir, "summary.json"), "w") as f:
    f.write("{}")
"""


def test_an_interrupted_ablation_trains_only_the_unfinished_runs(tmp_path, monkeypatch):
    """A finished run (summary.json) is skipped; an unfinished one (a checkpoint, no summary)
    is rerun with its own flags and run directory, which train.py resumes (test_resume.py)."""
    recipe = _recipe(tmp_path, "data")
    specs = ablation_runs.plan_runs(recipe, ("baseline", "skeletal"), (0, 1),
                                    str(tmp_path / "out"))
    finished, unfinished = specs[0], specs[1]
    os.makedirs(finished.run_dir)
    (tmp_path / "out" / "runs" / finished.name / "summary.json").write_text("{}")
    os.makedirs(os.path.join(unfinished.run_dir, "checkpoints"))
    fake = tmp_path / "fake_train.py"
    fake.write_text(FAKE_TRAIN)
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("CALLS", str(calls))
    log_dir = str(tmp_path / "out" / "logs")
    outcomes = [ablation_runs.train_run(spec, recipe, str(fake), log_dir,
                                        out=open(os.devnull, "w")) for spec in specs]
    assert outcomes == ["skipped", "trained", "trained", "trained"]
    argvs = [json.loads(line) for line in calls.read_text().splitlines()]
    assert [argv[1:] for argv in argvs] == [list(spec.flags) for spec in specs[1:]]
    assert all(argv[0] == f"--flagfile={recipe}" for argv in argvs)
    # Everything finished now: a second invocation trains nothing.
    again = [ablation_runs.train_run(spec, recipe, str(fake), log_dir, out=open(os.devnull, "w"))
             for spec in specs]
    assert again == ["skipped"] * 4
    assert len(calls.read_text().splitlines()) == 3


def test_a_failing_run_names_its_log(tmp_path):
    recipe = _recipe(tmp_path, "data")
    spec = ablation_runs.plan_runs(recipe, ("baseline",), (0,), str(tmp_path / "out"))[0]
    fake = tmp_path / "fail.py"
    fake.write_text("import sys\nprint('boom: bad data')\nsys.exit(2)\n")
    with pytest.raises(UserError, match=r"(?s)exit code 2.*baseline_seed0\.log:\n.*boom"):
        ablation_runs.train_run(spec, recipe, str(fake), str(tmp_path / "logs"),
                                out=open(os.devnull, "w"))


def test_same_sides_draws_both_sides_alike_with_the_same_people():
    from skelpose_tf.data import synthetic, synthetic_figures

    rng = np.random.default_rng(3)
    state = rng.bit_generator.state
    usual = synthetic_figures.make_figure(rng, 200.0, (100, 120))
    rng.bit_generator.state = state
    alike = synthetic_figures.make_figure(rng, 200.0, (100, 120), same_sides=True)

    def capsules(figure):
        return {p.part: p for p in figure.parts if hasattr(p, "banded")}

    usual_parts, alike_parts = capsules(usual), capsules(alike)
    for limb in ("upper_arm", "forearm", "thigh", "shank"):
        assert usual_parts[f"l_{limb}"].rgb != usual_parts[f"r_{limb}"].rgb
        assert usual_parts[f"r_{limb}"].banded
        assert alike_parts[f"l_{limb}"].rgb == alike_parts[f"r_{limb}"].rgb
        assert not alike_parts[f"r_{limb}"].banded
    assert usual.keypoints.keys() == alike.keypoints.keys()
    for name, point in usual.keypoints.items():
        np.testing.assert_array_equal(point, alike.keypoints[name])
    image_a, people_a = synthetic.render_scene(0, "val", 3, (160, 120))
    image_b, people_b = synthetic.render_scene(0, "val", 3, (160, 120), same_sides=True)
    assert len(people_a) == len(people_b) > 0 and not np.array_equal(image_a, image_b)
    for a, b in zip(people_a, people_b):
        np.testing.assert_array_equal(a.keypoints, b.keypoints)  # visibility included
        assert (a.bbox, a.area) == (b.bbox, b.area)


@pytest.mark.slow
def test_a_killed_ablation_resumes_the_unfinished_run_and_skips_the_finished_one(
        synthetic_train_dir, tmp_path):
    """ablation.py --train really killed (SIGKILL to its process group) once the second run has
    a checkpoint; the rerun skips the first run and resumes the second from its checkpoint."""
    import signal
    import time

    recipe = tmp_path / "recipe.cfg"
    recipe.write_text(open(_recipe(tmp_path, synthetic_train_dir)).read()
                      + "--steps_per_epoch=8\n--backup_every_steps=2\n--val_max_people=4\n")
    out_dir = tmp_path / "out"
    command = [sys.executable, os.path.join(REPO_ROOT, "ablation.py"), "--train",
               f"--recipe={recipe}", "--seeds=0", f"--out_dir={out_dir}", "--batch_size=4"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    index = out_dir / "runs" / "skeletal_seed0" / "checkpoints" / "checkpoint"
    deadline = time.time() + 400
    while not index.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert index.exists(), "the skeletal run never wrote a checkpoint"
    assert (out_dir / "runs" / "baseline_seed0" / "summary.json").exists()
    assert not (out_dir / "runs" / "skeletal_seed0" / "summary.json").exists()
    completed = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                               timeout=600)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "baseline_seed0 finished earlier, skipped" in completed.stdout
    assert "resuming skeletal_seed0" in completed.stdout
    baseline_log = (out_dir / "logs" / "baseline_seed0.log").read_text()
    assert baseline_log.count("\n$ ") == 1  # trained once
    skeletal_log = (out_dir / "logs" / "skeletal_seed0.log").read_text()
    assert "resuming at step" in skeletal_log.split("\n$ ")[-1]
    with open(out_dir / "ablation.json") as f:
        table = json.load(f)
    assert table["seeds"] == {"baseline": [0], "skeletal": [0]}


def test_training_refuses_a_synthetic_set_made_with_other_sides(synthetic_eval_dir):
    from skelpose_tf.data.sources import ensure_synthetic_dataset

    assert ensure_synthetic_dataset(synthetic_eval_dir, same_sides=False).exists()
    assert ensure_synthetic_dataset(synthetic_eval_dir).exists()  # evaluation: either
    with pytest.raises(ValueError, match="generated with same_sides=False.*--data_dir"):
        ensure_synthetic_dataset(synthetic_eval_dir, same_sides=True)


@pytest.mark.slow
def test_the_mpii_ablation_trains_and_reports_pckh(synthetic_train_dir, tmp_path):
    """`ablation.py --train --dataset mpii` end to end on the synthetic set's MPII files: two
    variants of one seed trained for 3 steps, scored with PCKh@0.5 and both PCKh@0.1."""
    root = synthetic_train_dir
    recipe = tmp_path / "mpii_tiny.cfg"
    recipe.write_text("\n".join([
        "--flagfile=configs/mpii_base.cfg", f"--run_dir={tmp_path / 'unused'}",
        f"--train_ann={root}/annotations/mpii_train.json", f"--train_images={root}/images/train",
        f"--val_ann={root}/annotations/mpii_val.json", f"--val_images={root}/images/val",
        f"--val_head_boxes={root}/annotations/mpii_gt_val.mat", "--width=8",
        "--input_size=64x64", "--tiny_topology=true", "--batch_size=4", "--epochs=1",
        "--steps_per_epoch=3", "--val_max_people=8", "--export=false",
        "--mixed_precision=float32"]) + "\n")
    out_dir = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "ablation.py"), "--train",
         f"--recipe={recipe}", "--dataset=mpii", f"--ann={root}/annotations/mpii_val.json",
         f"--images={root}/images/val", f"--head_boxes={root}/annotations/mpii_gt_val.mat",
         "--seeds=0", f"--out_dir={out_dir}"], cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = (out_dir / "ablation.md").read_text()
    assert "PCKh@0.5" in table and "PCKh@0.1" in table and "PCKh@0.1 exact" in table
    assert "| HRNet baseline | weighted | 1 |" in table
    assert "| + skeletal attention | dark | 1 |" in table
