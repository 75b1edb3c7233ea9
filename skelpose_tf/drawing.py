"""Pictures of poses: skeletons on images, heatmap overlays and captioned grids (OpenCV, numpy).

Used by the contact sheet of the synthetic data, `predict.py` and the TensorBoard image logs;
`pose_panels` / `maps_panel` draw a model's maps (heatmaps, skeletal heatmaps, body attention).
Images are RGB uint8 [H, W, 3]; keypoints are (x, y) pixels with pixel centres at integers (the
project's convention), drawn with sub-pixel precision. The side of a keypoint comes from its name
in the keypoint set ("l_"/"left" = left, "r_"/"right" = right, anything else = centre), so any
keypoint set with such names is coloured by side; an edge takes the side of its two ends when
they agree and the centre colour otherwise.
"""

from __future__ import annotations

import cv2
import numpy as np

from skelpose_tf.keypoints import KeypointSet

LEFT_RGB = (255, 230, 0)  # yellow
RIGHT_RGB = (255, 0, 220)  # magenta
CENTRE_RGB = (0, 255, 140)  # spring green
_SHIFT = 4
_ONE = 1 << _SHIFT


def keypoint_sides(keypoint_set: KeypointSet) -> tuple:
    """"left", "right" or "centre" for each keypoint, from its name."""
    sides = []
    for name in keypoint_set.keypoint_names:
        lower = name.lower()
        if lower.startswith(("l_", "left")):
            sides.append("left")
        elif lower.startswith(("r_", "right")):
            sides.append("right")
        else:
            sides.append("centre")
    return tuple(sides)


def _check_image(image, name="image"):
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"{name} must be RGB uint8 [H, W, 3]. "
            f"Received: dtype={image.dtype}, shape={image.shape}"
        )
    return image


def _fixed(point) -> tuple:
    return (int(round(float(point[0]) * _ONE)), int(round(float(point[1]) * _ONE)))


def draw_pose(image, keypoints, scores_or_visibility, keypoint_set: KeypointSet, threshold=0.5,
              color=None, hollow=None, radius=None, thickness=None):  # fmt: skip
    """Draw one person's skeleton on a copy of `image`.

    Args:
        image: RGB uint8 [H, W, 3].
        keypoints: float [K, 2], (x, y) pixels, pixel centres at integers.
        scores_or_visibility: float [K]; a keypoint is drawn when its value exceeds `threshold`
            (pass COCO visibility with threshold 0 to draw every labelled keypoint), an edge when
            both ends are drawn.
        keypoint_set: gives K, the side of each keypoint and the edges (`keypoint_set.edges`).
        threshold: see above.
        color: None colours by side (LEFT_RGB, RIGHT_RGB, CENTRE_RGB); an RGB triple draws the
            whole skeleton in that colour (e.g. to tell predictions from ground truth).
        hollow: optional bool [K]; True draws that keypoint as a ring instead of a disc (e.g.
            COCO v=1, labelled but not visible).
        radius, thickness: joint radius and edge thickness in pixels; default from the image size.

    Returns:
        The drawn RGB uint8 [H, W, 3] image (the input is not modified).
    """
    canvas = _check_image(image).copy()
    points = np.asarray(keypoints, np.float64)
    values = np.asarray(scores_or_visibility, np.float64)
    k = keypoint_set.num_keypoints
    if points.shape != (k, 2) or values.shape != (k,):
        raise ValueError(
            f"draw_pose expects keypoints [{k}, 2] and scores [{k}] for keypoint set "
            f"{keypoint_set.name!r}. Received: keypoints {points.shape}, scores {values.shape}"
        )
    hollow = np.zeros(k, bool) if hollow is None else np.asarray(hollow, bool)
    size = min(canvas.shape[:2])
    radius = radius if radius is not None else max(2.0, size / 100.0)
    thickness = thickness if thickness is not None else max(1, int(round(size / 160.0)))
    palette = {"left": LEFT_RGB, "right": RIGHT_RGB, "centre": CENTRE_RGB}
    sides = keypoint_sides(keypoint_set)
    shown = (values > threshold) & np.all(np.isfinite(points), axis=1)
    for a, b in keypoint_set.edges:
        if shown[a] and shown[b]:
            side = sides[a] if sides[a] == sides[b] else "centre"
            rgb = color if color is not None else palette[side]
            cv2.line(canvas, _fixed(points[a]), _fixed(points[b]), rgb, thickness, cv2.LINE_AA,
                     _SHIFT)  # fmt: skip
    for i in np.flatnonzero(shown):
        rgb = color if color is not None else palette[sides[i]]
        centre, r = _fixed(points[i]), int(round(radius * _ONE))
        if hollow[i]:
            cv2.circle(canvas, centre, r, rgb, max(1, thickness), cv2.LINE_AA, _SHIFT)
        else:
            cv2.circle(canvas, centre, r, (0, 0, 0), -1, cv2.LINE_AA, _SHIFT)
            cv2.circle(canvas, centre, max(1, r - _ONE // 2 - _ONE // 4), rgb, -1, cv2.LINE_AA,
                       _SHIFT)  # fmt: skip
    return canvas


def draw_box(image, box_xywh, color=(255, 255, 0), thickness=1, label=None):
    """Draw a [x, y, w, h] box (pixels) and an optional text label on a copy of `image`."""
    canvas = _check_image(image).copy()
    x, y, w, h = (float(v) for v in box_xywh)
    cv2.rectangle(canvas, _fixed((x, y)), _fixed((x + w, y + h)), color, thickness, cv2.LINE_8,
                  _SHIFT)  # fmt: skip
    if label:
        origin = (int(round(x)) + 2, max(10, int(round(y)) + 10))
        for rgb, width in (((0, 0, 0), 2), (color, 1)):  # outlined text
            cv2.putText(canvas, label, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.35, rgb, width,
                        cv2.LINE_AA)  # fmt: skip
    return canvas


def draw_people(image, people, keypoint_set: KeypointSet, threshold=0.3, boxes=True):
    """Every person's skeleton and, with `boxes`, its box labelled with the instance score and
    the track id ("#3 0.87"), on a copy of `image`.

    Args:
        image: RGB uint8 [H, W, 3].
        people: `person_pose.PersonPose`s (keypoints [K, 3] (x, y, score) image pixels).
        threshold: keypoints scoring above it are drawn.
        boxes: draw the person boxes (False for a whole-image box).
    """
    canvas = _check_image(image)
    for person in people:
        canvas = draw_pose(canvas, person.keypoints[:, :2], person.keypoints[:, 2], keypoint_set,
                           threshold=threshold)
        if boxes:
            track = "" if person.track_id is None else f"#{person.track_id} "
            canvas = draw_box(canvas, person.box, label=f"{track}{person.score:.2f}")
    return canvas


def colorize_heatmap(heatmap, value_range=(0.0, 1.0), colormap=cv2.COLORMAP_JET):
    """Map a float [h, w] heatmap to RGB uint8 [h, w, 3].

    Args:
        heatmap: float [h, w].
        value_range: (low, high) mapped to the ends of the colour map (values outside are
            clipped); None stretches the heatmap's own min..max.
        colormap: an OpenCV colour map id.
    """
    values = np.asarray(heatmap, np.float32)
    if values.ndim != 2:
        raise ValueError(f"heatmap must be [h, w]. Received shape {values.shape}")
    low, high = (float(values.min()), float(values.max())) if value_range is None else value_range
    scaled = (values - low) / max(high - low, 1e-12)
    grey = np.round(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(grey, colormap), cv2.COLOR_BGR2RGB)


def heatmap_overlay(image, heatmap, alpha=0.5, value_range=(0.0, 1.0)):
    """Blend a colourised heatmap over `image`.

    The heatmap is resized to the image with OpenCV's bilinear resize, whose pixel-centre
    alignment matches the project's heatmap convention x_h = (x + 0.5) / stride - 0.5.

    Args:
        image: RGB uint8 [H, W, 3].
        heatmap: float [h, w] (any resolution; typically H/4 x W/4).
        alpha: weight of the heatmap colours (0 = image only, 1 = heatmap only).
        value_range: see `colorize_heatmap`.

    Returns:
        RGB uint8 [H, W, 3].
    """
    canvas = _check_image(image)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]. Received: alpha={alpha}")
    height, width = canvas.shape[:2]
    resized = cv2.resize(np.asarray(heatmap, np.float32), (width, height),
                         interpolation=cv2.INTER_LINEAR)  # fmt: skip
    colours = colorize_heatmap(resized, value_range)
    return cv2.addWeighted(canvas, 1.0 - alpha, colours, alpha, 0.0)


def tile_images(images, cols, captions=None, pad=2, caption_height=14, background=(32, 32, 32)):
    """Arrange images in a grid of `cols` columns, each cell optionally captioned above.

    Cells are as large as the largest image (smaller images sit at the cell's top left). The
    output is `rows * (cell_h + caption_h) + (rows + 1) * pad` high and `cols * cell_w +
    (cols + 1) * pad` wide, with caption_h = `caption_height` when captions are given, else 0.

    Args:
        images: non-empty sequence of RGB uint8 [h_i, w_i, 3].
        cols: number of columns (>= 1).
        captions: optional sequence of strings, one per image.
        pad: pixels between cells and around the grid.
        caption_height: height of a caption strip in pixels.
        background: RGB of the padding.

    Returns:
        RGB uint8 grid image.
    """
    images = [_check_image(im, f"images[{i}]") for i, im in enumerate(images)]
    if not images:
        raise ValueError("tile_images needs at least one image.")
    if cols < 1:
        raise ValueError(f"cols must be >= 1. Received: cols={cols}")
    if captions is not None and len(captions) != len(images):
        raise ValueError(
            f"captions must have one entry per image. Received {len(captions)} captions "
            f"for {len(images)} images"
        )
    rows = -(-len(images) // cols)
    cell_h = max(im.shape[0] for im in images)
    cell_w = max(im.shape[1] for im in images)
    text_h = caption_height if captions is not None else 0
    grid_h = rows * (cell_h + text_h) + (rows + 1) * pad
    grid_w = cols * cell_w + (cols + 1) * pad
    grid = np.empty((grid_h, grid_w, 3), np.uint8)
    grid[:] = background
    for i, im in enumerate(images):
        row, col = divmod(i, cols)
        y = pad + row * (cell_h + text_h + pad)
        x = pad + col * (cell_w + pad)
        if captions is not None:
            scale = 0.35 * caption_height / 14.0
            cv2.putText(grid, str(captions[i]), (x + 1, y + text_h - 4), cv2.FONT_HERSHEY_SIMPLEX,
                        scale, (235, 235, 235), 1, cv2.LINE_AA)  # fmt: skip
        grid[y + text_h:y + text_h + im.shape[0], x:x + im.shape[1]] = im
    return grid


# Panels of the model's maps (TensorBoard pictures, `predict.py --show_maps`) ---------------------
MIN_PANEL_CROP_WIDTH = 160
PANEL_CAPTION_HEIGHT = 20
PANEL_CAPTIONS = {
    "crop": "(a) crop, pose",
    "skeletal_heatmaps": "(b) skeletal",
    "keypoint_heatmaps": "(f) keypoints",
    "attention": "(c-e) body attention maps",
}


def body_maps(skeletal_heatmaps, keypoint_set: KeypointSet) -> tuple:
    """Upper-, lower- and full-body attention maps (paper Eq. 2-3) of skeletal heatmaps.

    Args:
        skeletal_heatmaps: float [B, h, w, S].
        keypoint_set: names the links of the upper and lower body.

    Returns:
        (upper, lower, full), each float32 [B, h, w].
    """
    from skelpose_tf.models.skeletal_attention import body_attention_maps

    maps = body_attention_maps(np.asarray(skeletal_heatmaps, np.float32),
                               keypoint_set.upper_link_indices, keypoint_set.lower_link_indices)
    return tuple(np.asarray(m)[..., 0] for m in maps)


def pose_panels(crops, keypoints, scores, heatmaps, keypoint_set: KeypointSet,
                skeletal_heatmaps=None, threshold=0.2) -> dict:
    """Pictures of a model's outputs on person crops, one column (or row) per crop.

    Args:
        crops: uint8 [B, H, W, 3] input crops.
        keypoints: float [B, K, 2] decoded keypoints in crop pixels; scores: float [B, K].
        heatmaps: float [B, h, w, K] keypoint heatmaps.
        keypoint_set: the model's keypoint set.
        skeletal_heatmaps: float [B, h, w, S], for a model with the skeletal module.
        threshold: keypoints scoring above it are drawn.

    Returns:
        Dict of RGB uint8 panels: `skeletons` (poses on the crops), `keypoint_heatmaps` (max
        over keypoints) and, with skeletal heatmaps, `skeletal_heatmaps` (max over links) and
        `attention` (upper | lower | full-body maps, one row per crop; paper Fig. 1-2).
    """
    crops = np.asarray(crops)
    heatmaps = np.asarray(heatmaps)
    panels = {
        "skeletons": tile_images(
            [draw_pose(img, kp, sc, keypoint_set, threshold=threshold)
             for img, kp, sc in zip(crops, np.asarray(keypoints), np.asarray(scores))],
            cols=len(crops)),
        "keypoint_heatmaps": tile_images(
            [heatmap_overlay(img, hm.max(axis=-1)) for img, hm in zip(crops, heatmaps)],
            cols=len(crops)),
    }
    if skeletal_heatmaps is not None:
        skeletal = np.asarray(skeletal_heatmaps)
        upper, lower, full = body_maps(skeletal, keypoint_set)
        panels["skeletal_heatmaps"] = tile_images(
            [heatmap_overlay(img, sk.max(axis=-1)) for img, sk in zip(crops, skeletal)],
            cols=len(crops))
        tiles, captions = [], []
        for i, img in enumerate(crops):
            for name, maps in (("upper", upper), ("lower", lower), ("full", full)):
                peak = max(float(maps[i].max()), 1e-6)
                tiles.append(heatmap_overlay(img, maps[i], value_range=(0.0, peak)))
                captions.append(name)
        panels["attention"] = tile_images(tiles, cols=3, captions=captions)
    return panels


def maps_panel(crop, keypoints, scores, heatmaps, keypoint_set: KeypointSet,
               skeletal_heatmaps=None, threshold=0.3) -> np.ndarray:
    """The paper's Fig. 1-2 panel of one person crop, RGB uint8.

    Top row: (a) the crop with its pose, (b) skeletal heatmaps, (f) keypoint heatmaps; bottom
    row, for a model with the skeletal module: (c-e) the upper-, lower- and full-body
    attention maps. Crops narrower than `MIN_PANEL_CROP_WIDTH` are shown enlarged by an
    integer factor, so that the maps and captions stay readable.

    Args:
        crop: uint8 [H, W, 3]; keypoints: float [K, 2] crop pixels; scores: float [K].
        heatmaps: float [h, w, K]; skeletal_heatmaps: float [h, w, S] or None.
        keypoint_set: the model's keypoint set.
        threshold: keypoints scoring above it are drawn.
    """
    crop = np.asarray(crop)
    panels = pose_panels(crop[None], np.asarray(keypoints)[None], np.asarray(scores)[None],
                         np.asarray(heatmaps)[None], keypoint_set,
                         None if skeletal_heatmaps is None else np.asarray(skeletal_heatmaps)[None],
                         threshold=threshold)
    panels["crop"] = panels.pop("skeletons")
    factor = max(1, -(-MIN_PANEL_CROP_WIDTH // crop.shape[1]))
    panels = {name: cv2.resize(panel, None, fx=factor, fy=factor, interpolation=cv2.INTER_LINEAR)
              for name, panel in panels.items()}
    top = [name for name in ("crop", "skeletal_heatmaps", "keypoint_heatmaps") if name in panels]
    rows = [tile_images([panels[name] for name in top], cols=len(top),
                        captions=[PANEL_CAPTIONS[name] for name in top],
                        caption_height=PANEL_CAPTION_HEIGHT)]
    captions = [""]
    if "attention" in panels:
        rows.append(panels["attention"])
        captions.append(PANEL_CAPTIONS["attention"])
    return tile_images(rows, cols=1, captions=captions, caption_height=PANEL_CAPTION_HEIGHT)
