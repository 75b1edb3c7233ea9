"""Files and directories that are either complete or absent: written aside, then renamed.

A kill at any instant (SIGKILL, preemption, power loss) leaves either the previous version or
the new one under the final name, never a mixture or a truncated file. Each writer writes a
sibling temporary name in the same directory (same file system, so `os.replace` is one atomic
rename), flushes it to disk, renames it into place and syncs the directory entry.

- `atomic_write(path)`: a context manager yielding a temporary path to write.
- `write_text_atomic(path, text)`, `write_json_atomic(path, payload)`.
- `save_keras_atomic(model, path, metadata)`: a `.keras` file, with an optional JSON member
  (`KERAS_METADATA_MEMBER`) that travels inside the same zip (e.g. the validation AP of
  `best.keras`), read back by `keras_file_metadata`.
- `check_keras_file(path)`: a clear error naming the file when it is missing or corrupt.
- `replace_directory(staged, final)`: swaps a completely written directory in for the old one;
  `recover_directory(final)` finishes or undoes a swap that a kill interrupted.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import zipfile

KERAS_METADATA_MEMBER = "skelpose_metadata.json"
# The old version of a directory during `replace_directory` (a name nobody else uses).
PREVIOUS_SUFFIX = ".being-replaced"


def _temporary_name(path) -> str:
    directory, name = os.path.split(os.fspath(path))
    stem, dot, extension = name.partition(".")
    # Keep the extension last: Keras insists on `.keras` / `.weights.h5` endings.
    return os.path.join(directory, f".{stem}.partial-{os.getpid()}{dot}{extension}")


def _sync_directory(directory):
    try:
        descriptor = os.open(directory or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _sync_file(path):
    with open(path, "rb") as file:
        os.fsync(file.fileno())


@contextlib.contextmanager
def atomic_write(path):
    """Yields a temporary path beside `path`; on success it is synced and renamed to `path`.

    On an exception the temporary file is removed and `path` keeps its previous content.

    Example:
        with atomic_write("run/summary.json") as temporary:
            with open(temporary, "w") as f:
                json.dump(summary, f)
    """
    path = os.fspath(path)
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    temporary = _temporary_name(path)
    try:
        yield temporary
        _sync_file(temporary)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise
    _sync_directory(directory)


def write_png_atomic(path, image_rgb):
    """Write RGB uint8 [H, W, 3] (or grey [H, W]) `image_rgb` as the PNG `path`, atomically.

    Raises:
        ValueError: OpenCV could not encode or write it (the previous `path` is kept).
    """
    import cv2
    import numpy as np

    image = np.asarray(image_rgb)
    bgr = np.ascontiguousarray(image[..., ::-1]) if image.ndim == 3 else image
    with atomic_write(path) as temporary:
        try:
            written = cv2.imwrite(temporary, bgr)
        except cv2.error as error:
            raise ValueError(f"Cannot write {path}: {str(error).strip()}") from None
        if not written:
            raise ValueError(f"Cannot write {path}.")


def write_text_atomic(path, text):
    """Write `text` into `path`, complete or not at all."""
    with atomic_write(path) as temporary:
        with open(temporary, "w") as file:
            file.write(text)


def write_json_atomic(path, payload, **json_options):
    """`json.dump(payload)` into `path`, complete or not at all."""
    write_text_atomic(path, json.dumps(payload, **{"indent": 2, "default": str, **json_options}))


def save_keras_atomic(model, path, metadata=None):
    """`model.save(path)` under a temporary name, then renamed into place.

    Args:
        model: a Keras model.
        path: the `.keras` file.
        metadata: optional JSON-serialisable dict stored in the same zip as
            `KERAS_METADATA_MEMBER` (Keras ignores the member when loading), so a file and
            the facts about it (its validation AP, its epoch) can never disagree.
    """
    with atomic_write(path) as temporary:
        model.save(temporary)
        if metadata is not None:
            with zipfile.ZipFile(temporary, "a") as archive:
                archive.writestr(KERAS_METADATA_MEMBER, json.dumps(metadata, default=str))


class DamagedFileError(ValueError):
    """A file that exists but cannot be read: truncated, corrupt or of the wrong kind."""


def check_keras_file(path):
    """Raise `FileNotFoundError` or `DamagedFileError` naming `path` unless it is a whole
    `.keras` archive (a zip whose members all pass their CRC check)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist.")
    try:
        with zipfile.ZipFile(path) as archive:
            broken = archive.testzip()
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise DamagedFileError(
            f"{path} is corrupt ({os.path.getsize(path)} bytes, not a complete .keras zip "
            f"archive: {error}). It was probably cut off while being written by an older "
            "version; use another checkpoint of the run.") from None
    if broken is not None:
        raise DamagedFileError(f"{path} is corrupt: its member {broken!r} fails its checksum.")
    if "config.json" not in names:
        raise DamagedFileError(f"{path} is not a Keras model file (no config.json inside).")


def keras_file_metadata(path) -> dict | None:
    """The `metadata` stored by `save_keras_atomic` in `path`, or None (none stored / no file).

    Raises `DamagedFileError` when the file exists but is not a readable zip archive.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            if KERAS_METADATA_MEMBER not in archive.namelist():
                return None
            return json.loads(archive.read(KERAS_METADATA_MEMBER))
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        raise DamagedFileError(f"{path} is corrupt ({error}).") from None


def staging_directory(final) -> str:
    """A fresh, empty sibling directory of `final` to write a new version into."""
    final = os.path.normpath(os.fspath(final))
    parent, name = os.path.split(final)
    staged = os.path.join(parent, f".{name}.partial-{os.getpid()}")
    shutil.rmtree(staged, ignore_errors=True)
    os.makedirs(staged)
    return staged


def recover_directory(final):
    """Finish or undo a `replace_directory` that a kill interrupted.

    Between its two renames `final` is absent and `final.being-replaced` holds the old, complete
    version: it is put back. When both exist the swap had completed and the old version is
    left-over garbage: it is removed. Stale `.partial-*` siblings (half-written versions of
    a killed process) are removed too. Returns True when something was repaired.
    """
    final = os.path.normpath(os.fspath(final))
    parent, name = os.path.split(final)
    previous = final + PREVIOUS_SUFFIX
    repaired = False
    if not os.path.isdir(parent or "."):
        return repaired
    if os.path.isdir(previous):
        if os.path.exists(final):
            shutil.rmtree(previous, ignore_errors=True)
        else:
            os.replace(previous, final)
        repaired = True
    return bool(remove_stale_partials(parent or ".", name)) or repaired


def remove_stale_partials(directory, name=None) -> list:
    """Delete what killed writers left in `directory`: the `.<stem>.partial-<pid>*` files and
    directories of processes that no longer run (all of them, or only the staging directories
    `.<name>.partial-<pid>` of `name`); returns their entry names."""
    pattern = (rf"^\.{re.escape(name)}\.partial-(\d+)$" if name else r"^\..+\.partial-(\d+)")
    removed = []
    if not os.path.isdir(directory):
        return removed
    for entry in os.listdir(directory):
        match = re.match(pattern, entry)
        if not match or int(match.group(1)) == os.getpid() or _process_alive(int(match.group(1))):
            continue
        path = os.path.join(directory, entry)
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.remove(path)
        removed.append(entry)
    return removed


def _process_alive(pid) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def replace_directory(staged, final):
    """Put the completely written directory `staged` in place of `final`.

    The old `final` is renamed to `final.being-replaced`, `staged` to `final`, then the old
    version is deleted. A kill between the renames leaves `final.being-replaced` complete, which
    `recover_directory` (called here first, and by every reader that cares) puts back.
    """
    final = os.path.normpath(os.fspath(final))
    recover_directory(final)
    previous = final + PREVIOUS_SUFFIX
    had_old = os.path.exists(final)
    for root, _, names in os.walk(staged):
        for file_name in names:
            _sync_file(os.path.join(root, file_name))
    if had_old:
        os.replace(final, previous)
    os.replace(staged, final)
    _sync_directory(os.path.dirname(final))
    if had_old:
        shutil.rmtree(previous, ignore_errors=True)
