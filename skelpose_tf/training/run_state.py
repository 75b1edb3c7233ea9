"""The resumable state of a training run: one `tf.train.Checkpoint`, complete or absent.

A checkpoint holds the network's weights, the optimizer (slots, `iterations` = the step) and the
run's `RunProgress`: epochs whose end-of-epoch work (validation, `last.keras`) is done, the best
validation metric, the validation history, the data seed and the model's fingerprint. They are
one object, written by `tf.train.CheckpointManager`, which writes the data files first and
updates its index (`checkpoints/checkpoint`) last: a kill at any instant leaves the previous
checkpoint listed and intact. The same mechanism works under every `tf.distribute` strategy.

`RunState.restore` falls back to the newest intact checkpoint when the newest is truncated,
missing or not indexed, reports each damaged file by name and moves it to
`checkpoints/damaged/`. It refuses (`RunStateError`) to start from zero over existing results,
and gives a short message when the flags build another architecture than the checkpoint's.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import sys

import tensorflow as tf

from skelpose_tf.cli import UserError

CHECKPOINT_DIR = "checkpoints"
DAMAGED_DIR = "damaged"
# Files whose presence means the run directory holds results that a fresh start would overwrite.
RESULT_FILES = ("best.keras", "last.keras", "validation.jsonl", "summary.json", "history.csv")
LEGACY_BACKUP_DIR = "backup"
_PREFIX = re.compile(r"^ckpt-(\d+)\.index$")


class RunStateError(UserError, RuntimeError):
    """The run directory cannot be resumed as it is; the message says what to do."""


class RunProgress(tf.train.experimental.PythonState):
    """JSON-serialisable progress stored inside the checkpoint (`values` dict).

    Keys: `step` (optimizer step when saved), `epochs_closed` (epochs whose end-of-epoch work
    is done), `best` ({"metric", "value", "epoch"} or absent), `validations` (list of
    per-epoch metric dicts), `data_seed`, `fingerprint` (see `model_fingerprint`).
    """

    def __init__(self, values=None):
        self.values = dict(values or {})

    def serialize(self):
        return json.dumps(self.values, default=float)

    def deserialize(self, string_value):
        self.values = json.loads(string_value)


def model_fingerprint(network) -> dict:
    """What must not change across a resume: the name, input size, outputs and variables.

    Returns `{"name", "input_size", "outputs", "variables", "digest"}`, where `digest` is a
    hash of every weight's path and shape (a changed architecture changes it).
    """
    shapes = [f"{w.path}:{tuple(w.shape)}" for w in network.weights]
    return {
        "name": network.name,
        "input_size": list(getattr(network, "input_size", ()) or ()),
        "outputs": {name: list(t.shape[1:]) for name, t in network.output.items()}
        if isinstance(network.output, dict) else None,
        "variables": len(shapes),
        "digest": hashlib.sha256("\n".join(shapes).encode()).hexdigest()[:16],
    }


def _describe(fingerprint) -> str:
    outputs = fingerprint.get("outputs") or {}
    heads = ", ".join(f"{name} {'x'.join(map(str, shape))}" for name, shape in outputs.items())
    size = "x".join(map(str, fingerprint.get("input_size") or [])) or "?"
    return f"{fingerprint.get('name')} (input {size}; {heads}; {fingerprint.get('variables')} " \
           f"variables)"


def checkpoint_numbers(directory) -> list:
    """Numbers N of the `ckpt-N.index` files in `directory`, newest first."""
    numbers = []
    for path in glob.glob(os.path.join(glob.escape(directory), "ckpt-*.index")):
        match = _PREFIX.match(os.path.basename(path))
        if match:
            numbers.append(int(match.group(1)))
    return sorted(numbers, reverse=True)


def existing_results(run_dir) -> list:
    """Names of the result files in `run_dir` that a fresh start would overwrite."""
    found = [name for name in RESULT_FILES if os.path.exists(os.path.join(run_dir, name))]
    if os.path.isdir(os.path.join(run_dir, LEGACY_BACKUP_DIR)):
        found.append(f"{LEGACY_BACKUP_DIR}/ (an older version's backup)")
    return found


class RunState:
    """Saves and restores the trainer and the run's progress in `<run_dir>/checkpoints`.

    Args:
        trainer: the compiled `PoseTrainer` (its optimizer variables built).
        directory: the checkpoint directory (`<run_dir>/checkpoints`; a temporary directory on
            the non-chief workers of a multi-worker run, which must save too).
        max_to_keep: checkpoints kept (older ones are deleted after a successful save).
        out: stream for the report of what was restored or found damaged (stdout).

    Attributes:
        progress: the `RunProgress` (read it after `restore`, update it before `save`).
    """

    def __init__(self, trainer, directory, max_to_keep=3, out=None):
        self.trainer = trainer
        self.directory = directory
        self.out = sys.stdout if out is None else out
        self.progress = RunProgress()
        self.checkpoint = self._new_checkpoint()
        self.max_to_keep = int(max_to_keep)
        self.manager = None

    def _new_checkpoint(self):
        checkpoint = tf.train.Checkpoint(network=self.trainer.network,
                                         optimizer=self.trainer.optimizer, progress=self.progress)
        checkpoint.save_counter  # noqa: B018 - created now, so no restore is left pending
        return checkpoint

    @property
    def step(self) -> int:
        return int(self.trainer.optimizer.iterations.numpy())

    def _manager(self):
        if self.manager is None:
            self.manager = tf.train.CheckpointManager(
                self.checkpoint, self.directory, max_to_keep=self.max_to_keep)
        return self.manager

    def save(self, **updates):
        """Write a new checkpoint (the step is read from the optimizer); returns its path."""
        self.progress.values.update(updates, step=self.step)
        return self._manager().save()

    def restore(self, fingerprint, read_only=False) -> bool:
        """Restore the newest intact checkpoint; False when there is none (a fresh run).

        Args:
            fingerprint: `model_fingerprint` of the network just built from the flags.
            read_only: only read (a non-chief worker reading the chief's directory): damaged
                files are skipped, not moved, and the index is not rewritten.

        Raises:
            RunStateError: the checkpoint's architecture differs from `fingerprint`, or no
                checkpoint is intact (each damaged file is named).
        """
        indexed, problems = self._indexed_prefixes()
        numbers = checkpoint_numbers(self.directory)
        candidates = sorted(set(numbers) | set(indexed), reverse=True)
        if not candidates:
            self.progress.values = {"fingerprint": fingerprint}
            return False
        damaged = []
        for number in candidates:
            prefix = os.path.join(self.directory, f"ckpt-{number}")
            problem = self._check_files(prefix) or self._try_restore(prefix, fingerprint)
            if problem is None:
                break
            damaged.append((number, problem))
        else:
            for line in problems:
                print(f"checkpoint: {line}", file=self.out, flush=True)
            raise RunStateError(
                f"No intact checkpoint in {self.directory}: "
                + "; ".join(f"ckpt-{n}: {p}" for n, p in damaged)
                + ". Pass --restart to move the run's files aside and start over.")
        for line in problems:
            print(f"checkpoint: {line}", file=self.out, flush=True)
        # The next save gets a number above every file on disk, damaged ones included.
        self.checkpoint.save_counter.assign(max(candidates))
        if read_only:
            return True
        for bad_number, problem in damaged:
            where = self._quarantine(bad_number)
            print(f"checkpoint: ckpt-{bad_number} in {self.directory} is damaged ({problem}); "
                  f"moved to {where}. Resuming from ckpt-{number} instead.",
                  file=self.out, flush=True)
        for orphan in sorted(self._orphans(candidates)):
            print(f"checkpoint: {orphan} has no index (a save cut off by a kill); moved to "
                  f"{self._quarantine_path(orphan)}.", file=self.out, flush=True)
        if damaged or problems or number not in indexed:
            self._rewrite_index(number)
        return True

    def _indexed_prefixes(self):
        """Checkpoint numbers listed in the index file, and lines describing index problems."""
        index = os.path.join(self.directory, "checkpoint")
        if not os.path.exists(index):
            if checkpoint_numbers(self.directory):
                return [], [f"the index file {index} is missing; using the checkpoint files "
                            "found beside it."]
            return [], []
        try:
            state = tf.train.get_checkpoint_state(self.directory)
        except (tf.errors.OpError, ValueError, UnicodeDecodeError) as error:
            return [], [f"the index file {index} is unreadable ({type(error).__name__}); "
                        "using the checkpoint files found beside it."]
        if state is None:
            return [], [f"the index file {index} is empty; using the checkpoint files found "
                        "beside it."]
        numbers, problems = [], []
        for path in state.all_model_checkpoint_paths:
            match = re.search(r"ckpt-(\d+)$", path)
            if match:
                numbers.append(int(match.group(1)))
        for number in numbers:
            if not os.path.exists(os.path.join(self.directory, f"ckpt-{number}.index")):
                problems.append(f"the index file {index} lists ckpt-{number}, whose files are "
                                "missing.")
        return numbers, problems

    def _check_files(self, prefix):
        if not os.path.exists(prefix + ".index"):
            return f"{prefix}.index is missing"
        if not glob.glob(glob.escape(prefix) + ".data-*"):
            return f"{prefix}.data-* is missing"
        return None

    def _try_restore(self, prefix, fingerprint):
        """Restore `prefix`; None on success, else a one-line problem. Checks the fingerprint
        first, so another architecture is a short message, not a list of layers."""
        try:
            saved = RunProgress()
            tf.train.Checkpoint(progress=saved).read(prefix).expect_partial()
        except Exception as error:  # noqa: BLE001 - any failure to read means a damaged file

            return _first_line(error)
        saved_fingerprint = saved.values.get("fingerprint")
        if saved_fingerprint and saved_fingerprint.get("digest") != fingerprint["digest"]:
            raise RunStateError(
                f"The checkpoints in {self.directory} belong to another architecture:\n"
                f"  checkpoint: {_describe(saved_fingerprint)}\n"
                f"  flags:      {_describe(fingerprint)}\n"
                "Resume with the run's own flags (--flagfile=<run_dir>/flags.cfg), choose "
                "another --run_dir, or pass --restart to move this run aside.")
        # A fresh object per attempt: a failed read must leave no deferred restore behind.
        self.checkpoint = self._new_checkpoint()
        try:
            status = self.checkpoint.read(prefix)
            status.assert_existing_objects_matched()
        except Exception as error:  # noqa: BLE001 - as above
            return _first_line(error)
        return None

    def _orphans(self, numbers):
        """Checkpoint files and `_temp` directories of saves that never got their index."""
        known = {f"ckpt-{n}" for n in numbers}
        for path in glob.glob(os.path.join(glob.escape(self.directory), "ckpt-*")):
            stem = os.path.basename(path).split(".")[0]
            if stem.endswith("_temp") or stem not in known:
                yield path

    def _quarantine_path(self, path):
        damaged_dir = os.path.join(self.directory, DAMAGED_DIR)
        os.makedirs(damaged_dir, exist_ok=True)
        target = os.path.join(damaged_dir, os.path.basename(path))
        if os.path.isdir(target):
            shutil.rmtree(target)
        shutil.move(path, target)
        return damaged_dir

    def _quarantine(self, number):
        damaged_dir = os.path.join(self.directory, DAMAGED_DIR)
        for path in glob.glob(os.path.join(glob.escape(self.directory), f"ckpt-{number}.*")):
            self._quarantine_path(path)
        return damaged_dir

    def _rewrite_index(self, newest):
        """Point the index at the intact checkpoints (the newest last), as the manager would."""
        from tensorflow.python.checkpoint import checkpoint_management

        numbers = [n for n in sorted(checkpoint_numbers(self.directory)) if n <= newest]
        paths = [os.path.join(self.directory, f"ckpt-{n}") for n in numbers]
        # With their times, so that the manager deletes them in turn as new ones arrive.
        times = [os.path.getmtime(path + ".index") for path in paths]
        checkpoint_management.update_checkpoint_state_internal(
            self.directory, paths[-1], all_model_checkpoint_paths=paths,
            all_model_checkpoint_timestamps=times, save_relative_paths=True)


def _first_line(error) -> str:
    text = str(getattr(error, "message", None) or error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0][:300] if text else ''}"
