"""Left/right swaps and keypoint errors by joint group, from a COCO results file (no TensorFlow).

What AP hides: whether a model confuses the left and right limbs, and where its errors are.

Matching. Each labelled ground-truth person (not crowd, at least one labelled keypoint) is
paired with at most one result of its image: all (person, result) pairs are ranked by the
better of their OKS as predicted and their OKS with left and right exchanged (so a swapped
prediction still finds its person), and taken greedily, best first. People without a result
are counted as `unmatched` and left out of the numbers below.

Swap rate (`swap_rate`). The limb keypoints are the keypoints of the flip pairs that lie on
a skeletal link (COCO: shoulders, elbows, wrists, hips, knees, ankles; not eyes and ears).
A matched person counts when at least one limb pair has both keypoints labelled; the person is
*swapped* when the OKS over its labelled limb keypoints is higher with every flip pair of the
prediction exchanged than as predicted. A person with only one arm swapped (its elbow and
wrist exchanged with the other arm's, the rest right) is therefore *not* swapped: 4 of 12
limb keypoints fit better exchanged, 8 fit worse. The pair-level rate counts that case:
each limb pair with both keypoints labelled is swapped when the sum of its two OKS terms is
higher exchanged, so the one-arm case gives 2 swapped pairs of 6.

OKS terms follow pycocotools: `exp(-d^2 / (2 * area * (2 sigma)^2))`, with the annotation's
`area` and the keypoint set's sigmas; d in image pixels.

Keypoint errors by joint group (`joint_groups`): the distance between predicted and labelled
keypoint divided by the square root of the ground-truth box area (`bbox` w x h), in percent,
averaged over the labelled keypoints of matched people. Groups come from the links: `legs` are
the keypoints of lower-body links (hips, knees, ankles), `arms` those of upper-body links that
are not legs (shoulders, elbows, wrists), `head` every other keypoint (COCO: nose, eyes, ears;
MPII: head top, neck, thorax, pelvis).

Example:
    report = pose_error_report("val.json", "keypoints_results_weighted.json", COCO)
    report["swap"]["rate"], report["errors"]["arms"]
"""

from __future__ import annotations

import json

import numpy as np

GROUPS = ("head", "arms", "legs")


def limb_flip_pairs(keypoint_set) -> tuple:
    """The flip pairs (left, right) whose two keypoints both lie on a skeletal link."""
    on_links = {index for link in keypoint_set.links for index in (link.a, link.b)}
    return tuple((a, b) for a, b in keypoint_set.flip_pairs if a in on_links and b in on_links)


def joint_groups(keypoint_set) -> dict:
    """{"head", "arms", "legs": sorted keypoint indices} (module docstring for the rule)."""
    legs = {i for link in keypoint_set.links if link.part == "lower" for i in (link.a, link.b)}
    upper = {i for link in keypoint_set.links if link.part == "upper" for i in (link.a, link.b)}
    arms = upper - legs
    head = set(range(keypoint_set.num_keypoints)) - legs - arms
    return {"head": sorted(head), "arms": sorted(arms), "legs": sorted(legs)}


def oks_terms(pred, truth, area, sigmas) -> np.ndarray:
    """Per-keypoint OKS terms `exp(-d^2 / (2 area (2 sigma)^2))`.

    Args:
        pred, truth: float [..., K, 2] image pixels.
        area: float [...] (broadcast against the keypoint axis).
        sigmas: float [K].
    Returns:
        float [..., K].
    """
    squared = np.sum((np.asarray(pred, np.float64) - truth) ** 2, axis=-1)
    variances = (2.0 * np.asarray(sigmas, np.float64)) ** 2
    return np.exp(-squared / (2.0 * np.maximum(np.asarray(area, np.float64)[..., None],
                                               np.spacing(1)) * variances))


def swap_rate(pred, truth, labelled, areas, keypoint_set) -> dict:
    """Person- and pair-level left/right swap counts of matched people.

    Args:
        pred: float [N, K, 2] predicted keypoints (image pixels).
        truth: float [N, K, 2] ground-truth keypoints.
        labelled: bool [N, K] which ground-truth keypoints are labelled (v > 0).
        areas: float [N] the annotations' `area`.
        keypoint_set: gives the flip pairs, links and sigmas.

    Returns:
        {"people": counted people, "swapped": swapped people, "rate": swapped / people (None
        without people), "pairs": counted pairs, "pairs_swapped", "pair_rate"}.
    """
    pred, truth = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    labelled = np.asarray(labelled, bool)
    pairs = np.asarray(limb_flip_pairs(keypoint_set), int).reshape(-1, 2)
    if len(pred) == 0 or len(pairs) == 0:
        return {"people": 0, "swapped": 0, "rate": None, "pairs": 0, "pairs_swapped": 0,
                "pair_rate": None}
    order = np.arange(pred.shape[1])
    order[pairs[:, 0]], order[pairs[:, 1]] = pairs[:, 1], pairs[:, 0]
    exchanged = pred[:, order]
    sigmas = keypoint_set.oks_sigmas
    straight = oks_terms(pred, truth, areas, sigmas)
    swapped = oks_terms(exchanged, truth, areas, sigmas)
    limbs = pairs.reshape(-1)
    weight = labelled[:, limbs]
    pair_labelled = labelled[:, pairs[:, 0]] & labelled[:, pairs[:, 1]]  # [N, P]
    counted = pair_labelled.any(axis=1)
    better = (swapped[:, limbs] * weight).sum(1) > (straight[:, limbs] * weight).sum(1)
    person_swapped = counted & better
    pair_straight = straight[:, pairs[:, 0]] + straight[:, pairs[:, 1]]
    pair_exchanged = swapped[:, pairs[:, 0]] + swapped[:, pairs[:, 1]]
    pair_swapped = pair_labelled & (pair_exchanged > pair_straight)
    people, num_pairs = int(counted.sum()), int(pair_labelled.sum())
    return {"people": people, "swapped": int(person_swapped.sum()),
            "rate": float(person_swapped.sum() / people) if people else None,
            "pairs": num_pairs, "pairs_swapped": int(pair_swapped.sum()),
            "pair_rate": float(pair_swapped.sum() / num_pairs) if num_pairs else None}


def group_errors(pred, truth, labelled, box_sizes, keypoint_set) -> dict:
    """Mean normalised error (percent of sqrt(box area)) per joint group and over all.

    Args:
        pred, truth, labelled: as `swap_rate`.
        box_sizes: float [N] square roots of the ground-truth boxes' areas (pixels).

    Returns:
        {"head", "arms", "legs", "all": percent or None (no labelled keypoint)}.
    """
    pred, truth = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    labelled = np.asarray(labelled, bool)
    if len(pred) == 0:
        return {name: None for name in (*GROUPS, "all")}
    distance = np.linalg.norm(pred - truth, axis=-1)
    normalised = 100.0 * distance / np.maximum(np.asarray(box_sizes, np.float64)[:, None], 1e-9)
    groups = {**joint_groups(keypoint_set), "all": list(range(keypoint_set.num_keypoints))}
    result = {}
    for name, indices in groups.items():
        mask = labelled[:, indices]
        result[name] = float(normalised[:, indices][mask].mean()) if mask.any() else None
    return result


def _keypoint_array(flat, num_keypoints, where):
    values = np.asarray(flat, np.float64).reshape(-1)
    if values.size != 3 * num_keypoints:
        raise ValueError(f"{where}: 'keypoints' must hold 3 x {num_keypoints} numbers. "
                         f"Received {values.size}")
    return values.reshape(num_keypoints, 3)


def match_people(annotations: list, results: list, keypoint_set) -> dict:
    """Pair ground-truth people with results (module docstring: greedy on the better OKS).

    Args:
        annotations: COCO annotation dicts (`image_id`, `keypoints`, `area`, `bbox`,
            optional `iscrowd`).
        results: COCO result dicts (`image_id`, `keypoints`).

    Returns:
        {"pred", "truth": float [N, K, 2], "labelled": bool [N, K], "areas", "box_sizes":
        float [N], "people": labelled people, "unmatched": people without a result}.
    """
    k = keypoint_set.num_keypoints
    flip = np.asarray(keypoint_set.flip_index)
    by_image = {}
    for n, result in enumerate(results):
        points = _keypoint_array(result["keypoints"], k, f"result #{n}")[:, :2]
        by_image.setdefault(result["image_id"], []).append(points)
    matched = {"pred": [], "truth": [], "labelled": [], "areas": [], "box_sizes": []}
    people = unmatched = 0
    people_by_image = {}
    for n, annotation in enumerate(annotations):
        if annotation.get("iscrowd", 0):
            continue
        points = _keypoint_array(annotation["keypoints"], k, f"annotation #{n}")
        if not (points[:, 2] > 0).any():
            continue
        people += 1
        people_by_image.setdefault(annotation["image_id"], []).append((annotation, points))
    for image_id, persons in people_by_image.items():
        candidates = by_image.get(image_id, [])
        scores = []
        for p, (annotation, points) in enumerate(persons):
            labelled = points[:, 2] > 0
            for c, pred in enumerate(candidates):
                terms = [oks_terms(guess, points[:, :2], annotation["area"],
                                   keypoint_set.oks_sigmas)[labelled].mean()
                         for guess in (pred, pred[flip])]
                scores.append((max(terms), p, c))
        taken_people, taken_results = set(), set()
        for _, p, c in sorted(scores, key=lambda item: -item[0]):
            if p in taken_people or c in taken_results:
                continue
            taken_people.add(p)
            taken_results.add(c)
            annotation, points = persons[p]
            width, height = annotation["bbox"][2], annotation["bbox"][3]
            matched["pred"].append(candidates[c])
            matched["truth"].append(points[:, :2])
            matched["labelled"].append(points[:, 2] > 0)
            matched["areas"].append(float(annotation["area"]))
            matched["box_sizes"].append(float(np.sqrt(max(width * height, 0.0))))
        unmatched += len(persons) - len(taken_people)
    shapes = {"pred": (0, k, 2), "truth": (0, k, 2), "labelled": (0, k), "areas": (0,),
              "box_sizes": (0,)}
    arrays = {name: np.asarray(values) if values else np.zeros(shapes[name])
              for name, values in matched.items()}
    arrays["labelled"] = arrays["labelled"].astype(bool)
    return {**arrays, "people": people, "unmatched": unmatched}


def pose_error_report(annotation_file: str, results_file: str, keypoint_set,
                      image_ids=None) -> dict:
    """Swap rate and joint-group errors of a COCO results file against its annotation file.

    Args:
        annotation_file: COCO keypoint JSON.
        results_file: COCO keypoint results JSON (what `coco_evaluate` wrote).
        keypoint_set: the model's keypoint set (flip pairs, links, sigmas).
        image_ids: only these images (None: all images of the annotation file).

    Returns:
        {"people", "matched", "unmatched", "swap": `swap_rate`, "errors": `group_errors`}.
    """
    with open(annotation_file) as f:
        annotations = json.load(f)["annotations"]
    with open(results_file) as f:
        results = json.load(f)
    if image_ids is not None:
        wanted = set(image_ids)
        annotations = [a for a in annotations if a["image_id"] in wanted]
    matched = match_people(annotations, results, keypoint_set)
    return {
        "people": matched["people"], "matched": len(matched["pred"]),
        "unmatched": matched["unmatched"],
        "swap": swap_rate(matched["pred"], matched["truth"], matched["labelled"],
                          matched["areas"], keypoint_set),
        "errors": group_errors(matched["pred"], matched["truth"], matched["labelled"],
                               matched["box_sizes"], keypoint_set),
    }
