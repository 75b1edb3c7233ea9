"""Seeded ablation results: mean +- standard deviation over seeds and paired differences.

Input: `scores[(variant, seed)][decoder]` = the numbers of one run and decoder
(`ablation_runs.run_scores`). Output (`summarize`):

- per (variant, decoder): the number of seeds, mean and sample standard deviation (ddof 1;
  None for one seed) of each metric;
- per (variant, decoder), variant != baseline: the paired difference to the baseline of the
  same seed and decoder, its mean and standard error (sd of the differences / sqrt(n)); pairing
  removes what the seed does to both runs (data order, augmentation, shared initial weights);
- the same to the `skeletal` model for the variants of the module (`physical_links`,
  `no_skeletal_loss`): what the virtual links and the skeletal loss add;
- per (variant, decoder), decoder != quarter: the paired difference to the quarter decoder of
  the same run (HRNet's own decoding), the decoder claim of Table III.

An effect is called resolved when |mean| > 2 standard errors (about a 95% interval that
excludes 0 for normal differences; with 3 seeds the t-quantile is 4.3, so this is lenient and
the tables give the numbers). Metrics: COCO AP and AR in percent, the left/right swap rates in
percent of people / limb pairs, keypoint errors in percent of sqrt(box area)
(`evaluation.pose_errors`); MPII PCKh@0.5 and @0.1 in percent.

Example:
    summary = summarize(scores, ("baseline", "skeletal"), ("quarter", "weighted", "dark"))
    print(format_markdown(summary))
"""

from __future__ import annotations

import math

import numpy as np

from skelpose_tf.ablation_runs import BASELINE, SKELETAL, VARIANTS
from skelpose_tf.atomic_files import atomic_write

REFERENCE_DECODER = "quarter"
# (key, label, how to get it from a run's numbers, higher is better)
COCO_METRICS = (
    ("AP", "AP", lambda n: 100.0 * n["AP"], True),
    ("AR", "AR", lambda n: 100.0 * n["AR"], True),
    ("swap", "swap % people", lambda n: _percent(n["swap"]["rate"]), False),
    ("pair_swap", "swap % pairs", lambda n: _percent(n["swap"]["pair_rate"]), False),
    ("err_head", "err head", lambda n: n["errors"]["head"], False),
    ("err_arms", "err arms", lambda n: n["errors"]["arms"], False),
    ("err_legs", "err legs", lambda n: n["errors"]["legs"], False),
)
MPII_METRICS = (
    ("PCKh", "PCKh@0.5", lambda n: n["PCKh"], True),
    ("PCKh@0.1", "PCKh@0.1", lambda n: n["PCKh@0.1 (official, thr 0.11)"], True),
    ("PCKh@0.1 exact", "PCKh@0.1 exact", lambda n: n["PCKh@0.1 (exact)"], True),
)


def _percent(value):
    return None if value is None else 100.0 * value


def metrics_for(dataset: str) -> tuple:
    return MPII_METRICS if dataset == "mpii" else COCO_METRICS


def mean_sd(values) -> dict:
    """{"n", "mean", "sd", "values"} of the non-None values (sd: ddof 1, None below 2)."""
    values = [float(v) for v in values if v is not None]
    n = len(values)
    return {"n": n, "mean": float(np.mean(values)) if n else None,
            "sd": float(np.std(values, ddof=1)) if n > 1 else None, "values": values}


def paired(values, reference) -> dict:
    """Mean and standard error of `values[s] - reference[s]` over the seeds both have.

    Args:
        values, reference: {seed: number or None}.

    Returns:
        {"n", "mean", "se", "differences": {seed: difference}, "resolved": |mean| > 2 se}.
    """
    seeds = sorted(s for s in values if values[s] is not None and reference.get(s) is not None)
    differences = {s: float(values[s] - reference[s]) for s in seeds}
    n = len(seeds)
    mean = float(np.mean(list(differences.values()))) if n else None
    se = float(np.std(list(differences.values()), ddof=1) / math.sqrt(n)) if n > 1 else None
    return {"n": n, "mean": mean, "se": se, "differences": differences,
            "resolved": bool(se is not None and mean is not None and abs(mean) > 2 * se)}


def summarize(scores: dict, variants, decoders, dataset: str = "coco") -> dict:
    """Statistics of `scores[(variant, seed)][decoder]` (module docstring).

    Returns:
        {"metrics": [[key, label, higher_is_better]], "per_seed": {variant: {decoder: {metric:
        {seed: value}}}}, "groups": {variant: {decoder: {metric: mean_sd}}}, "vs_baseline":
        {variant: {decoder: {metric: paired}}}, "vs_skeletal": the same against the
        skeletal model, "vs_quarter": {variant: {decoder: {metric:
        paired}}}, "seeds": {variant: [seeds]}}.
    """
    metrics = metrics_for(dataset)
    per_seed = {}
    for variant in variants:
        per_seed[variant] = {}
        for decoder in decoders:
            table = {}
            for key, _, get, _ in metrics:
                table[key] = {seed: get(runs[decoder])
                              for (v, seed), runs in sorted(scores.items())
                              if v == variant and decoder in runs}
            per_seed[variant][decoder] = table
    groups = {v: {d: {m: mean_sd(values.values()) for m, values in per_seed[v][d].items()}
                  for d in decoders} for v in variants}
    vs_baseline = {}
    if BASELINE in variants:
        vs_baseline = {v: {d: {m: paired(per_seed[v][d][m], per_seed[BASELINE][d][m])
                               for m in per_seed[v][d]} for d in decoders}
                       for v in variants if v != BASELINE}
    vs_skeletal = {}
    if SKELETAL in variants:
        vs_skeletal = {v: {d: {m: paired(per_seed[v][d][m], per_seed[SKELETAL][d][m])
                               for m in per_seed[v][d]} for d in decoders}
                       for v in variants if v not in (BASELINE, SKELETAL)}
    vs_quarter = {}
    if REFERENCE_DECODER in decoders:
        vs_quarter = {v: {d: {m: paired(per_seed[v][d][m], per_seed[v][REFERENCE_DECODER][m])
                              for m in per_seed[v][d]}
                          for d in decoders if d != REFERENCE_DECODER} for v in variants}
    seeds = {v: sorted({seed for (name, seed) in scores if name == v}) for v in variants}
    return {"dataset": dataset, "metrics": [[k, label, up] for k, label, _, up in metrics],
            "per_seed": per_seed, "groups": groups, "vs_baseline": vs_baseline,
            "vs_skeletal": vs_skeletal, "vs_quarter": vs_quarter, "seeds": seeds}


def _number(value, digits=1):
    return "n/a" if value is None else f"{value:.{digits}f}"


def _plus_minus(stats, spread_key, digits=1):
    if stats["mean"] is None:
        return "n/a"
    spread = stats[spread_key]
    sign = "+" if spread_key == "se" and stats["mean"] > 0 else ""
    text = f"{sign}{stats['mean']:.{digits}f}"
    return text if spread is None else f"{text} +- {spread:.{digits}f}"


def format_markdown(summary: dict, title: str = "", notes=()) -> str:
    """Markdown tables: mean +- sd per (variant, decoder); paired difference +- standard error
    to the baseline, to the skeletal model (its variants), and to the quarter decoder.
    A difference marked * has |mean| > 2 SE."""
    metrics = summary["metrics"]
    labels = [label for _, label, _ in metrics]
    keys = [key for key, _, _ in metrics]
    lines = [f"**{title}**", ""] if title else []
    lines += [f"- {note}" for note in notes]
    lines += ["", "Mean +- standard deviation over seeds.", "",
              "| Variant | Decoder | seeds | " + " | ".join(labels) + " |",
              "|:--|:--|--:" + "|--:" * len(labels) + "|"]
    for variant, decoders in summary["groups"].items():
        for decoder, stats in decoders.items():
            n = stats[keys[0]]["n"]
            lines.append(f"| {VARIANTS.get(variant, variant)} | {decoder} | {n} | "
                         + " | ".join(_plus_minus(stats[k], "sd") for k in keys) + " |")

    def differences(block, heading, reference_label):
        if not block:
            return []
        rows = ["", heading, "",
                "| Variant | Decoder | pairs | " + " | ".join(f"d {label}" for label in labels)
                + " |", "|:--|:--|--:" + "|--:" * len(labels) + "|"]
        for variant, decoders in block.items():
            for decoder, stats in decoders.items():
                cells = [_plus_minus(stats[k], "se") + (" *" if stats[k]["resolved"] else "")
                         for k in keys]
                compared = f"{decoder} {reference_label}".strip()
                rows.append(f"| {VARIANTS.get(variant, variant)} | {compared} | "
                            f"{stats[keys[0]]['n']} | " + " | ".join(cells) + " |")
        return rows

    lines += differences(summary["vs_baseline"], "Paired difference to the HRNet baseline of "
                         "the same seed and decoder: mean +- standard error (* : |mean| > 2 SE).",
                         "")
    lines += differences(summary.get("vs_skeletal"), "Paired difference to the skeletal "
                         "attention model (all 16 links, skeletal loss) of the same seed and "
                         "decoder: mean +- standard error (* : |mean| > 2 SE).", "")
    lines += differences(summary["vs_quarter"], "Paired difference to the quarter decoder of "
                         "the same run: mean +- standard error (* : |mean| > 2 SE).",
                         f"- {REFERENCE_DECODER}")
    return "\n".join(lines).strip() + "\n"


_DECODER_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40),
                    (148, 103, 189)]


def plot_per_seed(summary: dict, path: str, metric: str = None, size=(720, 420)) -> str:
    """A PNG of each seed's value of `metric` (default: the first, AP or PCKh) by variant:
    one column per variant, one colour per decoder, the seeds of one decoder joined across the
    variants (a line per seed shows the paired effect). Written atomically; returns `path`."""
    import cv2

    metric = metric or summary["metrics"][0][0]
    label = {key: text for key, text, _ in summary["metrics"]}[metric]
    variants = list(summary["per_seed"])
    decoders = list(next(iter(summary["per_seed"].values()), {}))
    values = [v for variant in variants for decoder in decoders
              for v in summary["per_seed"][variant][decoder][metric].values() if v is not None]
    width, height = size
    image = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 70, 150, 30, 60
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    pad = max(0.5, 0.1 * (high - low))
    low, high = low - pad, high + pad

    def y_of(value):
        return int(round(top + (high - value) / (high - low) * (height - top - bottom)))

    def x_of(column, offset=0.0):
        span = (width - left - right) / max(1, len(variants))
        return int(round(left + span * (column + 0.5) + offset))

    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.line(image, (left, top), (left, height - bottom), (0, 0, 0), 1)
    cv2.line(image, (left, height - bottom), (width - right, height - bottom), (0, 0, 0), 1)
    for tick in np.linspace(low, high, 5):
        y = y_of(tick)
        cv2.line(image, (left - 4, y), (left, y), (0, 0, 0), 1)
        cv2.putText(image, f"{tick:.1f}", (8, y + 4), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(image, f"{label} per seed", (left, 20), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    for column, variant in enumerate(variants):
        cv2.putText(image, variant, (x_of(column) - 4 * len(variant), height - bottom + 20),
                    font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    for d, decoder in enumerate(decoders):
        colour = _DECODER_COLOURS[d % len(_DECODER_COLOURS)]
        offset = (d - (len(decoders) - 1) / 2) * 10
        seeds = sorted({s for v in variants
                        for s in summary["per_seed"][v][decoder][metric]})
        for seed in seeds:
            points = [(x_of(c, offset), y_of(summary["per_seed"][v][decoder][metric][seed]))
                      for c, v in enumerate(variants)
                      if summary["per_seed"][v][decoder][metric].get(seed) is not None]
            for a, b in zip(points, points[1:]):
                cv2.line(image, a, b, tuple(int(0.5 * c + 127) for c in colour), 1, cv2.LINE_AA)
            for point in points:
                cv2.circle(image, point, 4, colour, -1, cv2.LINE_AA)
        y = top + 20 * d + 10
        cv2.circle(image, (width - right + 20, y), 4, colour, -1, cv2.LINE_AA)
        cv2.putText(image, decoder, (width - right + 30, y + 4), font, 0.4, (0, 0, 0), 1,
                    cv2.LINE_AA)
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"Could not encode the plot {path}.")
    with atomic_write(path) as temporary:
        with open(temporary, "wb") as f:
            f.write(encoded.tobytes())
    return path
