"""ablation.py and skelpose_tf.ablation_table: the paper's Table III from checkpoints."""

import json
import os

import pytest

from pose_fixtures import (DOTS, PoolingNetwork, pycocotools_stats, run_script, save_tiny_model,
                           write_dots_dataset)
from skelpose_tf import ablation_table
from skelpose_tf.data import sources
from skelpose_tf.data.synthetic import generate_dataset
from skelpose_tf.evaluation.report import coco_table_row
from skelpose_tf.keypoints import get_keypoint_set

PAPER_ROWS = [("HRNet baseline", "baseline", "quarter"),
              ("+ skeletal attention", "skeletal", "quarter"),
              ("+ weighted inference", "skeletal", "weighted")]


def test_ablation_command_writes_the_table_iii_rows_as_markdown_and_json(
        synthetic_eval_dir, tmp_path):
    save_tiny_model(str(tmp_path / "baseline"), skeletal_attention=False)
    save_tiny_model(str(tmp_path / "skeletal"), skeletal_attention=True)
    out_dir = tmp_path / "out"
    completed = run_script("ablation.py", f"--baseline_weights={tmp_path / 'baseline'}",
                           f"--skeletal_weights={tmp_path / 'skeletal'}",
                           f"--data_dir={synthetic_eval_dir}", f"--out_dir={out_dir}",
                           "--decoders=quarter,weighted,dark", "--batch_size=4")
    assert completed.returncode == 0, completed.stderr
    with open(out_dir / "ablation.json") as f:
        table = json.load(f)
    rows = [(row["method"], row["role"], row["decoder"]) for row in table["rows"]]
    assert rows == PAPER_ROWS + [("HRNet baseline, weighted decoder", "baseline", "weighted"),
                                 ("HRNet baseline, dark decoder", "baseline", "dark"),
                                 ("skeletal attention, dark decoder", "skeletal", "dark")]
    assert [row["paper_row"] for row in table["rows"]] == [True] * 3 + [False] * 3
    assert table["columns"] == ["mAP", "AP .5", "AP .75", "AP (M)", "AP (L)", "mAR"]
    assert table["data"]["box_source"] == "ground-truth boxes"
    assert table["models"]["baseline"]["skeletal_attention"] is False
    for row in table["rows"]:
        results = row["files"]["results"]
        assert results.startswith(str(out_dir / row["role"]))
        direct = pycocotools_stats(table["data"]["annotation_file"], results)
        expected = coco_table_row(dict(zip(("AP", "AP .5", "AP .75", "AP (M)", "AP (L)", "AR"),
                                           direct[:6])))
        assert row["values"] == expected
    markdown = (out_dir / "ablation.md").read_text()
    assert "| Method | Decoder | mAP | AP .5 | AP .75 | AP (M) | AP (L) | mAR |" in markdown
    assert "| + weighted inference | weighted |" in markdown
    assert "+ skeletal attention" in completed.stdout


def test_the_better_model_is_bold_and_rows_follow_the_paper(tmp_path):
    dots = write_dots_dataset(str(tmp_path / "dots"))
    source = sources.resolve_data_source("coco", annotation_file=dots["ann"],
                                              image_dir=dots["images"])
    models = {"baseline": (PoolingNetwork(DOTS, shift=(0.0, 2.0)), "base.keras"),
              "skeletal": (PoolingNetwork(DOTS, skeletal_attention=True), "skel.keras")}
    result = ablation_table.run_ablation(models, source, ["quarter", "weighted"],
                                       out_dir=str(tmp_path / "out"), log_every=0)
    values = [result.values(row) for row in result.rows]
    assert [row.method for row in result.rows] == [m for m, _, _ in PAPER_ROWS] + [
        "HRNet baseline, weighted decoder"]
    assert values[1]["mAP"] == 100.0 and values[0]["mAP"] < 100.0
    markdown = result.format_table("markdown").splitlines()
    assert markdown[-4].startswith(f"| HRNet baseline | quarter | {values[0]['mAP']:.1f} |")
    assert markdown[-3].startswith("| + skeletal attention | quarter | **100.0** |")
    text = result.format_table("text")
    assert "Person boxes" not in text and "person boxes: ground-truth boxes" in text
    assert "skeletal attention model: W0 64x48 dots, skeletal attention (skel.keras)" in text


def test_mpii_ablation_reports_pckh_at_0_5_and_0_1(tmp_path):
    root = str(tmp_path / "synthetic")
    generate_dataset(root, 0, 3, seed=0)
    mpii = get_keypoint_set("mpii")
    source = sources.resolve_data_source("mpii", data_dir=root)
    skeletal = PoolingNetwork(mpii, input_size=(64, 64), skeletal_attention=True)
    result = ablation_table.run_ablation({"skeletal": (skeletal, "skel.keras")}, source,
                                       ["weighted", "quarter"], out_dir=str(tmp_path / "out"),
                                       log_every=0)
    assert [row.method for row in result.rows] == ["+ skeletal attention", "+ weighted inference"]
    assert result.to_dict()["columns"] == ["PCKh@0.5", "PCKh@0.1 (official, thr 0.11)",
                                           "PCKh@0.1 (exact)"]
    weighted = result.rows[1].evaluation
    metric = weighted.metric
    assert result.values(result.rows[1]) == {
        "PCKh@0.5": round(100 * metric.mean, 1),
        "PCKh@0.1 (official, thr 0.11)": round(100 * metric.mean_at_0_1, 1),
        "PCKh@0.1 (exact)": round(100 * metric.mean_at_exact_0_1, 1)}
    assert os.path.isfile(weighted.files["pred_mat"])


def test_swapped_or_mismatched_checkpoints_are_refused():
    coco = get_keypoint_set("coco")
    skeletal = PoolingNetwork(coco, skeletal_attention=True)
    baseline = PoolingNetwork(coco, skeletal_attention=False)
    with pytest.raises(ValueError, match="Are the two checkpoints swapped"):
        ablation_table.check_models({"baseline": (skeletal, "a"), "skeletal": (baseline, "b")})
    with pytest.raises(ValueError, match="different keypoint sets"):
        ablation_table.check_models({"baseline": (baseline, "a"),
                                   "skeletal": (PoolingNetwork(DOTS, skeletal_attention=True),
                                                "b")})
    with pytest.raises(ValueError, match="must map some of"):
        ablation_table.check_models({})
