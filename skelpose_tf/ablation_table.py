"""The ablation of the paper's Table III on any data set, from two checkpoints.

Rows in the paper's order, each a (model, decoder) pair scored on the same people:

    HRNet baseline          baseline model (no skeletal module), `quarter` decoder (HRNet's
                            own post-processing: argmax + 0.25 px towards the higher neighbour)
    + skeletal attention    skeletal-attention model, `quarter` decoder
    + weighted inference    skeletal-attention model, `weighted` decoder (paper Eq. 4-5)

followed by every other decoder evaluated for either model (e.g. "skeletal attention, dark
decoder"). Each model runs one flip-tested forward pass; all its decoders read the same
heatmaps. Columns: MPII PCKh@0.5 and PCKh@0.1 (the means, as Table III; PCKh@0.1 at the
official code's threshold 0.11, which the paper's numbers come from, then at exactly 0.1),
COCO mAP, AP .5, AP .75, AP (M), AP (L), mAR (as Table I). The best value of each column is
bold in markdown, as in the paper.

Example:
    result = run_ablation({"baseline": (base, "runs/base/best.keras"),
                           "skeletal": (skel, "runs/demo/best.keras")}, source, out_dir="abl")
    print(result.format_table(style="markdown"))
"""

from __future__ import annotations

import dataclasses
import os
import sys

from skelpose_tf.codec import DECODERS
from skelpose_tf.data.sources import COCO, DataSource
from skelpose_tf.model_evaluation import evaluate_model
from skelpose_tf.evaluation.report import (
    COCO_TABLE_COLUMNS,
    MEAN_AT_0_1_COLUMN,
    MEAN_AT_EXACT_0_1_COLUMN,
)
from skelpose_tf.model_loading import describe_model, model_summary

BASELINE = "baseline"
SKELETAL = "skeletal"
ROLES = (BASELINE, SKELETAL)
BASELINE_DECODER = "quarter"
PAPER_ROWS = (
    ("HRNet baseline", BASELINE, BASELINE_DECODER),
    ("+ skeletal attention", SKELETAL, BASELINE_DECODER),
    ("+ weighted inference", SKELETAL, "weighted"),
)
ROLE_NAMES = {BASELINE: "HRNet baseline", SKELETAL: "skeletal attention"}
MPII_COLUMNS = (("PCKh@0.5", "Mean"), ("PCKh@0.1 (official, thr 0.11)", MEAN_AT_0_1_COLUMN),
                ("PCKh@0.1 (exact)", MEAN_AT_EXACT_0_1_COLUMN))


def check_models(models: dict) -> None:
    """Check the roles: baseline without, skeletal with the module, one keypoint set.

    Args:
        models: {"baseline" and/or "skeletal": (network, checkpoint path)}.

    Raises:
        ValueError: no model, an unknown role, a model in the wrong role, or different
            keypoint sets.
    """
    if not models or set(models) - set(ROLES):
        raise ValueError(f"models must map some of {ROLES} to (network, checkpoint). "
                         f"Received roles: {sorted(models)}")
    for role, (network, checkpoint) in models.items():
        if network.skeletal_attention != (role == SKELETAL):
            expected = "with" if role == SKELETAL else "without"
            raise ValueError(
                f"The {role} checkpoint {checkpoint} is a {describe_model(network)} model; the "
                f"{role} row needs a model {expected} the skeletal attention module. Are the "
                "two checkpoints swapped?")
    names = {role: network.keypoint_set.name for role, (network, _) in models.items()}
    if len(set(names.values())) > 1:
        raise ValueError(f"The checkpoints predict different keypoint sets: {names}.")


def table_columns(dataset: str) -> tuple:
    """(column, key of `Evaluation.table_row`) pairs of the ablation table."""
    if dataset == COCO:
        return tuple((column, column) for column, _ in COCO_TABLE_COLUMNS)
    return MPII_COLUMNS


@dataclasses.dataclass(frozen=True)
class AblationRow:
    """One table row.

    Attributes:
        method: the row's name ("+ weighted inference", "HRNet baseline, dark decoder", ...).
        role: "baseline" or "skeletal".
        decoder: the decoder.
        paper_row: whether the row is one of the paper's three.
        evaluation: the `skelpose_tf.model_evaluation.Evaluation`.
    """

    method: str
    role: str
    decoder: str
    paper_row: bool
    evaluation: object


def ablation_rows(evaluations: dict) -> list:
    """Rows from {role: {decoder: Evaluation}}: the paper's rows first, then the others."""
    rows = [AblationRow(method, role, decoder, True, evaluations[role][decoder])
            for method, role, decoder in PAPER_ROWS
            if decoder in evaluations.get(role, {})]
    taken = {(row.role, row.decoder) for row in rows}
    for role in ROLES:
        for decoder in DECODERS:
            if decoder in evaluations.get(role, {}) and (role, decoder) not in taken:
                rows.append(AblationRow(f"{ROLE_NAMES[role]}, {decoder} decoder", role, decoder,
                                        False, evaluations[role][decoder]))
    return rows


@dataclasses.dataclass(frozen=True)
class AblationResult:
    """The ablation table and what it was computed from.

    Attributes:
        source: the `DataSource` evaluated.
        models: {role: {"weights": checkpoint, **architecture}}.
        flip_test: whether heatmaps were flip-averaged.
        rows: the `AblationRow`s.
    """

    source: DataSource
    models: dict
    flip_test: bool
    rows: list

    @property
    def columns(self) -> tuple:
        return table_columns(self.source.dataset)

    def values(self, row: AblationRow) -> dict:
        """{column: percentage or None} of one row."""
        table_row = row.evaluation.table_row
        return {column: table_row[key] for column, key in self.columns}

    def title(self) -> str:
        return (f"Ablation (paper Table III layout): {self.source.describe()} | person boxes: "
                f"{self.source.box_source} | flip test {'on' if self.flip_test else 'off'}")

    def format_table(self, style: str = "markdown") -> str:
        """The table as markdown (best values bold) or aligned text."""
        if style not in ("markdown", "text"):
            raise ValueError(f"style must be 'markdown' or 'text'. Received: style={style!r}")
        header = ["Method", "Decoder", *(column for column, _ in self.columns)]
        values = [self.values(row) for row in self.rows]
        best = {column: max((v[column] for v in values if v[column] is not None), default=None)
                for column, _ in self.columns}
        cells = []
        for row, row_values in zip(self.rows, values):
            numbers = []
            for column, _ in self.columns:
                value = row_values[column]
                text = "n/a" if value is None else f"{value:.1f}"
                if style == "markdown" and value is not None and value == best[column]:
                    text = f"**{text}**"
                numbers.append(text)
            cells.append([row.method, row.decoder, *numbers])
        notes = [f"{ROLE_NAMES[role]} model: {info['description']} ({info['weights']})"
                 for role, info in self.models.items()]
        if style == "markdown":
            lines = [f"**{self.title()}**", "", *(f"- {note}" for note in notes), "",
                     "| " + " | ".join(header) + " |",
                     "|:--|:--" + "|--:" * len(self.columns) + "|"]
            lines += ["| " + " | ".join(row) + " |" for row in cells]
            return "\n".join(lines)
        widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]

        def align(line):
            return "  ".join(item.ljust(width) if i < 2 else item.rjust(width)
                             for i, (item, width) in enumerate(zip(line, widths)))

        return "\n".join([self.title(), *notes, align(header), *(align(c) for c in cells)])

    def to_dict(self) -> dict:
        """JSON-ready: data, models, columns and rows (values in percent, files)."""
        return {
            "data": self.source.to_dict(),
            "flip_test": self.flip_test,
            "models": self.models,
            "columns": [column for column, _ in self.columns],
            "rows": [{"method": row.method, "role": row.role, "decoder": row.decoder,
                      "paper_row": row.paper_row, "values": self.values(row),
                      "files": row.evaluation.files, "notes": list(row.evaluation.notes)}
                     for row in self.rows],
        }


def run_ablation(models: dict, source: DataSource, decoders=DECODERS, *, flip_test=True,
                 batch_size=32, out_dir="ablation", log_every=50,
                 out=sys.stdout) -> AblationResult:
    """Evaluate each model with each decoder and assemble the Table III rows.

    Args:
        models: {"baseline" and/or "skeletal": (network, checkpoint path)}; each is decoded
            with its own codec settings (sigma, N of `weighted`, pixel convention).
        source: the evaluation data (`skelpose_tf.data.sources.resolve_data_source`).
        decoders: the decoders to evaluate (the paper's rows need `quarter` and `weighted`).
        flip_test, batch_size, log_every, out: as `model_evaluation.evaluate_model`.
        out_dir: each model's results files go to `<out_dir>/<role>/`.

    Returns:
        An `AblationResult`.
    """
    check_models(models)
    evaluations, described = {}, {}
    for role in ROLES:
        if role not in models:
            continue
        network, checkpoint = models[role]
        print(f"{ROLE_NAMES[role]}: {describe_model(network)} from {checkpoint}", file=out,
              flush=True)
        evaluations[role] = evaluate_model(
            network, source, decoders, flip_test=flip_test, batch_size=batch_size,
            out_dir=os.path.join(out_dir, role), log_every=log_every, out=out)
        described[role] = {"weights": checkpoint, "description": describe_model(network),
                           **model_summary(network)}
    return AblationResult(source, described, bool(flip_test), ablation_rows(evaluations))
