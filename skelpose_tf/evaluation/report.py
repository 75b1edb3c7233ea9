"""Metric tables in the paper's layout, as plain text, markdown or JSON-ready dicts.

- COCO (paper Table I): mAP, AP .5, AP .75, AP (M), AP (L), mAR, as percentages with one
  decimal, always with the person boxes the predictions used.
- MPII (the official HRNet PCKh table; paper Tables II/III report its Mean and Mean@0.1):
  Head, Shoulder, Elbow, Wrist, Hip, Knee, Ankle, Mean, "Mean@0.1 (thr 0.11)" (the official
  code's Mean@0.1, whose threshold is 0.11: the paper-comparable value) and "Mean@0.1 (exact)"
  (threshold 0.1).

Inputs are fractions in [0, 1] (as pycocotools and `compute_pckh` return them); a negative
value (pycocotools' -1: no ground truth in that area range) or NaN prints as "n/a" and becomes
None in the dicts.

Example:
    print(format_coco_table(result.stats, result.box_source, title="COCO val2017, W32 256x192"))
"""

from __future__ import annotations

import math

# (table column, COCOeval stat name).
COCO_TABLE_COLUMNS = (
    ("mAP", "AP"), ("AP .5", "AP .5"), ("AP .75", "AP .75"), ("AP (M)", "AP (M)"),
    ("AP (L)", "AP (L)"), ("mAR", "AR"),
)  # fmt: skip
# The official code's "Mean@0.1" (threshold 0.11, as the paper) and the mean at exactly 0.1.
MEAN_AT_0_1_COLUMN = "Mean@0.1 (thr 0.11)"
MEAN_AT_EXACT_0_1_COLUMN = "Mean@0.1 (exact)"
PCKH_TABLE_COLUMNS = (
    "Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean", MEAN_AT_0_1_COLUMN,
    MEAN_AT_EXACT_0_1_COLUMN,
)  # fmt: skip
STYLES = ("text", "markdown")


def _percent(value):
    """A fraction as a percentage with one decimal; None for missing values."""
    if value is None:
        return None
    value = float(value)
    if math.isnan(value) or value < 0:
        return None
    return round(100.0 * value, 1)


def coco_table_row(stats) -> dict:
    """JSON-ready Table I row: {"mAP": 76.5, ...} from COCOeval stats named as `COCO_STAT_NAMES`."""
    missing = [name for _, name in COCO_TABLE_COLUMNS if name not in stats]
    if missing:
        raise ValueError(f"COCO stats lack {missing}. Received keys: {sorted(stats)}")
    return {column: _percent(stats[name]) for column, name in COCO_TABLE_COLUMNS}


def pckh_table_row(values) -> dict:
    """JSON-ready PCKh row: {"Head": 97.1, ..., "Mean@0.1 (thr 0.11)": 37.7, ...} from
    fractions."""
    missing = [name for name in PCKH_TABLE_COLUMNS if name not in values]
    if missing:
        raise ValueError(f"PCKh values lack {missing}. Received keys: {sorted(values)}")
    return {name: _percent(values[name]) for name in PCKH_TABLE_COLUMNS}


def _render(title: str, notes, row_label: str, row: dict, style: str) -> str:
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}. Received: style={style!r}")
    header = ["Method", *row]
    cells = [row_label, *("n/a" if v is None else f"{v:.1f}" for v in row.values())]
    if style == "markdown":
        lines = [f"**{title}**", ""]
        if notes:
            lines += [f"- {note}" for note in notes] + [""]
        lines += [
            "| " + " | ".join(header) + " |",
            "|:--" + "|--:" * len(row) + "|",
            "| " + " | ".join(cells) + " |",
        ]
        return "\n".join(lines)
    widths = [max(len(h), len(c)) for h, c in zip(header, cells)]
    first = lambda items: items[0].ljust(widths[0])
    rest = lambda items: [item.rjust(width) for item, width in zip(items[1:], widths[1:])]
    lines = [title, *notes]
    lines.append("  ".join([first(header), *rest(header)]))
    lines.append("  ".join([first(cells), *rest(cells)]))
    return "\n".join(lines)


def format_coco_table(
    stats, box_source: str, title: str = "COCO keypoints", row_label: str = "result",
    style: str = "text",
) -> str:
    """Paper Table I layout (percentages, one decimal) with the box source.

    Args:
        stats: COCOeval stats by name (`CocoKeypointResult.stats`), fractions in [0, 1].
        box_source: which person boxes were used, e.g. "ground-truth boxes".
        title: the table's title line.
        row_label: the "Method" cell.
        style: "text" (aligned columns) or "markdown".
    """
    return _render(title, [f"Person boxes: {box_source}"], row_label, coco_table_row(stats), style)


def format_pckh_table(
    values, title: str = "MPII PCKh@0.5", row_label: str = "result", style: str = "text",
) -> str:
    """Official MPII PCKh table layout (percentages, one decimal), plus the exact-0.1 mean.

    Args:
        values: fractions by column name (`PckhResult.table_values()`): Head, Shoulder, Elbow,
            Wrist, Hip, Knee, Ankle, Mean, "Mean@0.1 (thr 0.11)", "Mean@0.1 (exact)".
        title: the table's title line.
        row_label: the "Method" cell.
        style: "text" (aligned columns) or "markdown".
    """
    note = ("Mean excludes pelvis and thorax. Mean@0.1 (thr 0.11) is the official HRNet code's "
            "Mean@0.1 (its threshold is 0.11), as in the paper; Mean@0.1 (exact) is at 0.1.")
    return _render(title, [note], row_label, pckh_table_row(values), style)
