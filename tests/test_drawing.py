"""Tests of skelpose_tf.drawing: pose drawing, boxes, heatmap colouring/overlay, image grids."""

import numpy as np
import pytest

from skelpose_tf import drawing
from skelpose_tf.keypoints import COCO, MPII, KeypointSet, SkeletalLink


def _blank(height=120, width=160):
    return np.full((height, width, 3), 40, np.uint8)


def _coco_points():
    """COCO keypoints on a grid (6 per row, 25 px apart) inside a 160x120 image."""
    index = np.arange(COCO.num_keypoints)
    return np.stack([12.0 + 25.0 * (index % 6), 15.0 + 35.0 * (index // 6)], axis=1)


def test_keypoint_sides_follow_names():
    sides = drawing.keypoint_sides(COCO)
    assert sides[COCO.index("nose")] == "centre"
    assert sides[COCO.index("l_wrist")] == "left" and sides[COCO.index("r_ankle")] == "right"
    sides = drawing.keypoint_sides(MPII)
    assert sides[MPII.index("pelvis")] == "centre" and sides[MPII.index("l_hip")] == "left"


def test_draw_pose_marks_each_shown_keypoint_in_its_side_colour():
    image = _blank()
    points = _coco_points()
    drawn = drawing.draw_pose(image, points, np.ones(COCO.num_keypoints), COCO, threshold=0.5,
                              radius=3)  # fmt: skip
    assert np.all(image == 40)  # the input is untouched
    for name, rgb in (("l_wrist", drawing.LEFT_RGB), ("r_wrist", drawing.RIGHT_RGB),
                      ("nose", drawing.CENTRE_RGB)):  # fmt: skip
        x, y = points[COCO.index(name)].astype(int)
        assert tuple(drawn[y, x]) == rgb
    far_corner = drawn[115, 155]
    assert np.all(far_corner == 40)


def test_draw_pose_skips_low_scores_and_draws_edges_between_shown_keypoints():
    image = _blank()
    points = _coco_points()
    scores = np.zeros(COCO.num_keypoints)
    assert np.array_equal(drawing.draw_pose(image, points, scores, COCO, threshold=0.3), image)
    a, b = COCO.index("l_shoulder"), COCO.index("l_elbow")
    scores[[a, b]] = 0.9
    drawn = drawing.draw_pose(image, points, scores, COCO, threshold=0.3, radius=2, thickness=3)
    middle = np.round((points[a] + points[b]) / 2).astype(int)
    assert tuple(drawn[middle[1], middle[0]]) == drawing.LEFT_RGB
    other = points[COCO.index("r_knee")].astype(int)
    assert np.all(drawn[other[1], other[0]] == 40)


def test_draw_pose_hollow_and_single_colour():
    image = _blank()
    points = _coco_points()
    hollow = np.zeros(COCO.num_keypoints, bool)
    hollow[COCO.index("l_knee")] = True
    scores = np.zeros(COCO.num_keypoints)
    scores[[COCO.index("l_knee"), COCO.index("r_knee")]] = 1.0  # not joined by an edge
    drawn = drawing.draw_pose(image, points, scores, COCO, color=(1, 2, 3), hollow=hollow,
                              radius=6, thickness=1)  # fmt: skip
    x, y = points[COCO.index("l_knee")].astype(int)
    assert np.all(drawn[y, x] == 40)  # ring: the centre stays
    assert np.all(drawn[y, x + 6] < 12)  # on the ring (anti-aliased towards (1, 2, 3))
    x, y = points[COCO.index("r_knee")].astype(int)
    assert tuple(drawn[y, x]) == (1, 2, 3)


def test_draw_pose_sub_pixel_position():
    """A disc at x = 50.5 covers columns 50 and 51 symmetrically (pixel centres at integers)."""
    names = ("l_a", "r_a")
    keypoint_set = KeypointSet(
        name="pair", keypoint_names=names, flip_pairs=((0, 1),),
        links=(SkeletalLink(0, 1, "virtual", "upper"),), oks_sigmas=(0.1, 0.1),
        upper_body=(0, 1), drawing_edges=(),
    )  # fmt: skip
    image = np.zeros((40, 100, 3), np.uint8)
    points = np.array([[50.5, 20.0], [-100.0, -100.0]])
    drawn = drawing.draw_pose(image, points, np.array([1.0, 0.0]), keypoint_set, radius=4)
    row = drawn[20].astype(int).sum(axis=1)
    covered = np.flatnonzero(row)
    assert covered.min() + covered.max() == 101  # symmetric about 50.5


def test_draw_pose_rejects_wrong_shapes():
    with pytest.raises(ValueError, match="keypoints"):
        drawing.draw_pose(_blank(), np.zeros((3, 2)), np.ones(3), COCO)
    with pytest.raises(ValueError, match="RGB uint8"):
        drawing.draw_pose(np.zeros((10, 10), np.uint8), _coco_points(), np.ones(17), COCO)


def test_draw_box_outlines_the_box():
    drawn = drawing.draw_box(_blank(), [20, 30, 40, 50], color=(9, 8, 7), label="1")
    assert tuple(drawn[30, 40]) == (9, 8, 7) and tuple(drawn[80, 40]) == (9, 8, 7)
    assert tuple(drawn[55, 20]) == (9, 8, 7) and tuple(drawn[55, 60]) == (9, 8, 7)
    assert tuple(drawn[55, 40]) == (40, 40, 40)


def test_colorize_heatmap_ends_of_the_jet_map():
    colours = drawing.colorize_heatmap(np.array([[0.0, 1.0, 2.0]]))
    assert colours.shape == (1, 3, 3) and colours.dtype == np.uint8
    assert tuple(colours[0, 0]) == (0, 0, 128)  # dark blue
    assert tuple(colours[0, 1]) == (128, 0, 0)  # dark red
    assert tuple(colours[0, 2]) == (128, 0, 0)  # clipped
    stretched = drawing.colorize_heatmap(np.array([[2.0, 4.0]]), value_range=None)
    assert tuple(stretched[0, 0]) == (0, 0, 128) and tuple(stretched[0, 1]) == (128, 0, 0)


def test_heatmap_overlay_blends_and_aligns_with_pixel_centres():
    image = _blank(64, 48)
    heatmap = np.zeros((16, 12), np.float32)
    heatmap[5, 7] = 1.0  # heatmap pixel (x=7, y=5) covers input pixels 28..31 x 20..23
    assert np.array_equal(drawing.heatmap_overlay(image, heatmap, alpha=0.0), image)
    full = drawing.heatmap_overlay(image, heatmap, alpha=1.0).astype(int)
    redness = full[..., 0] - full[..., 2]
    hottest = np.argwhere(redness == redness.max())
    assert sorted(set(hottest[:, 1])) == [29, 30] and sorted(set(hottest[:, 0])) == [21, 22]
    with pytest.raises(ValueError, match="alpha"):
        drawing.heatmap_overlay(image, heatmap, alpha=1.5)


def test_tile_images_size_and_placement():
    images = [np.full((10, 20, 3), i * 40, np.uint8) for i in range(1, 6)]
    images[4] = np.full((8, 12, 3), 200, np.uint8)  # smaller images sit at the cell's top left
    grid = drawing.tile_images(images, cols=2, pad=3)
    assert grid.shape == (3 * 10 + 4 * 3, 2 * 20 + 3 * 3, 3)
    assert np.all(grid[3:13, 3:23] == 40) and np.all(grid[3:13, 26:46] == 80)
    assert np.all(grid[29:37, 3:15] == 200)
    captioned = drawing.tile_images(images, cols=3, captions=list("abcde"), pad=2,
                                    caption_height=14)  # fmt: skip
    assert captioned.shape == (2 * (10 + 14) + 3 * 2, 3 * 20 + 4 * 2, 3)
    assert np.all(captioned[2 + 14:2 + 24, 2:22] == 40)
    with pytest.raises(ValueError, match="captions"):
        drawing.tile_images(images, cols=2, captions=["a"])
    with pytest.raises(ValueError, match="cols"):
        drawing.tile_images(images, cols=0)
