"""Train a skeletal-heatmap pose model.

    python train.py --flagfile=configs/demo.cfg                  # synthetic data, CPU, minutes
    python train.py --flagfile=configs/coco_w32.cfg --train_ann=... --batch_size=16

Flags given after `--flagfile` override the file. The run's own flags (this file's, not
those TensorFlow defines) are written to `<run_dir>/flags.cfg`; rerunning the same command, or
`python train.py --flagfile=<run_dir>/flags.cfg`, resumes the run from its newest intact
checkpoint. `--restart` moves an existing run directory aside and starts over.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dataclasses  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402

from absl import app, flags, logging  # noqa: E402

from skelpose_tf import cli  # noqa: E402
from skelpose_tf.models.pose_model import parse_input_size  # noqa: E402
from skelpose_tf.training.config import TrainConfig  # noqa: E402


def _input_size_text(size):
    return "x".join(str(side) for side in size)


def _weights_path(text):
    return "" if text.lower() == "none" else text


def _tuple_of(element):
    """Converts a `DEFINE_list` value (strings) to a tuple of `element`."""
    return lambda values: tuple(element(value) for value in values)


def _define_config_flags():
    """One flag per `TrainConfig` field: same name, default and help; `DEFINE_enum` for a field
    with `choices`. Returns `{name: (FlagHolder, flag value -> field value)}`.

    A table of holders rather than one `_NAME = flags.DEFINE_...` line each: the field list is
    the single statement of the settings, so the flags cannot drift from it.
    """
    defined = {}
    for field in dataclasses.fields(TrainConfig):
        name, default, help_text = field.name, field.default, field.metadata["help"]
        convert = None
        if "choices" in field.metadata:
            holder = flags.DEFINE_enum(name, default, field.metadata["choices"], help_text)
        elif name == "input_size":
            holder = flags.DEFINE_string(name, _input_size_text(default), help_text)
            convert = parse_input_size
        elif isinstance(default, tuple):
            holder = flags.DEFINE_list(name, [str(e) for e in default], help_text)
            convert = _tuple_of(type(default[0]))
        elif isinstance(default, bool):
            holder = flags.DEFINE_bool(name, default, help_text)
        elif isinstance(default, int):
            holder = flags.DEFINE_integer(name, default, help_text)
        elif isinstance(default, float):
            holder = flags.DEFINE_float(name, default, help_text)
        else:
            holder = flags.DEFINE_string(name, default, help_text)
            convert = _weights_path if name == "backbone_weights" else None
        defined[name] = (holder, convert)
    return defined


_CONFIG_FLAGS = _define_config_flags()
_RESTART = flags.DEFINE_bool("restart", False, "Move an existing run directory aside "
                             "(<run_dir>.replaced-<time>) and start from step 0 instead of "
                             "resuming. Never written to flags.cfg.")


def build_config() -> TrainConfig:
    """The `TrainConfig` of the parsed flags (`ValueError` for a bad value)."""
    return TrainConfig(**{name: convert(holder.value) if convert else holder.value
                          for name, (holder, convert) in _CONFIG_FLAGS.items()})


def run_flags_text() -> str:
    """The `TrainConfig` flags as `--name=value` lines: not the ones TensorFlow's imports define
    (a later `--flagfile` would refuse them), not `--restart` (it must not repeat)."""
    return ("# python train.py --flagfile=<this file> resumes or reproduces the run.\n"
            + "".join(holder.serialize() + "\n"
                      for _, (holder, _) in sorted(_CONFIG_FLAGS.items())))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]} (flags are --name=value).")
    logging.set_verbosity(logging.WARNING)
    try:
        config = build_config()
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    from skelpose_tf.training.loop import train

    import tensorflow as tf

    try:
        summary = train(config, restart=_RESTART.value, flags_text=run_flags_text())
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
            tf.errors.AbortedError) as error:
        if config.strategy != "multi_worker":
            raise
        cause = " ".join(str(error.message).split())[:300]
        sys.exit(f"train.py: error: lost contact with another worker ({type(error).__name__}: "
                 f"{cause}). Every worker stops. When all machines are back, rerun the same "
                 f"command on every worker: the run resumes from its last checkpoint in "
                 f"{config.run_dir}/checkpoints.")
    # Bad data, paths, a damaged run or a diverged run: one line from cli.run (checkpoints
    # are kept).
    print("\nsummary:", json.dumps(
        {k: v for k, v in summary.items() if k not in ("ground_truth_boxes", "detector_boxes")},
        indent=2, default=str))


if __name__ == "__main__":
    cli.run(main)
