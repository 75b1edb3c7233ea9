"""One way to fail, for every entry point (`train.py`, `evaluate.py`, `predict.py`,
`export_tflite.py`, `ablation.py` and the `python -m skelpose_tf...` tools).

`run(main)` is `absl.app.run(main)` with this contract:

- A user error (bad data, a missing or damaged file, an impossible setting: `UserError`,
  `ValueError`, `OSError` and the other types in `USER_ERRORS`) prints one line,
  `<program>: error: <message>`, and exits with status 1. The library's messages name the file
  and the field and say what to do.
- Ctrl-C prints `<program>: interrupted` and exits with status 130.
- Anything else is a bug: the traceback is printed, with one line asking for a report.
- `--traceback` (or `SKELPOSE_TRACEBACK=1`) prints the traceback of user errors too.

Per-item problems (one unreadable image, one broken record) are not errors: the readers skip
them, count them in a `SkipReport` and the run reports the counts.

Example:
```python
from skelpose_tf import cli

def main(argv):
    ...

if __name__ == "__main__":
    cli.run(main)
```
"""

from __future__ import annotations

import os
import sys
import traceback

from absl import app, flags

TRACEBACK_ENV = "SKELPOSE_TRACEBACK"
TRACEBACK_FLAG = "traceback"


class UserError(Exception):
    """A problem with the user's input that the message explains (no traceback is shown)."""


def user_errors() -> tuple:
    """The exception types that report a user's input, not a bug."""
    types = [UserError, ValueError, OSError, MemoryError, FloatingPointError]
    tf = sys.modules.get("tensorflow")  # only a program that imported it can raise its errors
    if tf is not None:  # TensorFlow's own errors for files it cannot read or decode
        types += [tf.errors.NotFoundError, tf.errors.InvalidArgumentError,
                  tf.errors.DataLossError, tf.errors.PermissionDeniedError]
    return tuple(types)


def _show_traceback() -> bool:
    try:
        wanted = TRACEBACK_FLAG in flags.FLAGS and flags.FLAGS[TRACEBACK_FLAG].value
    except flags.UnparsedFlagAccessError:
        wanted = False
    return wanted or os.environ.get(TRACEBACK_ENV, "") not in ("", "0")


def one_line(error: BaseException) -> str:
    """The message of `error` on one line (TensorFlow errors by their message only)."""
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    if isinstance(error, MemoryError):
        message = f"out of memory ({message})"
    return " ".join(str(message).split())


def guarded(main, program: str | None = None):
    """`main` wrapped with the contract of the module docstring (for `absl.app.run`)."""
    program = program or os.path.basename(sys.argv[0])

    def wrapped(argv):
        try:
            return main(argv)
        except (app.UsageError, SystemExit):
            raise
        except KeyboardInterrupt:
            sys.stderr.write(f"{program}: interrupted\n")
            sys.exit(130)
        except user_errors() as error:
            if _show_traceback():
                traceback.print_exc()
            sys.stderr.write(f"{program}: error: {one_line(error)}\n")
            sys.exit(1)
        except Exception:  # noqa: BLE001 - a bug: show everything
            traceback.print_exc()
            sys.stderr.write(f"{program}: internal error (a bug, not your input): please "
                             "report it with the traceback above.\n")
            sys.exit(70)

    return wrapped


def run(main, program: str | None = None) -> None:
    """`absl.app.run` of `main` under the contract of the module docstring (defines
    `--traceback`)."""
    if TRACEBACK_FLAG not in flags.FLAGS:
        flags.DEFINE_boolean(TRACEBACK_FLAG, False, "Print the traceback of user errors too (or "
                             f"set {TRACEBACK_ENV}=1).")
    app.run(guarded(main, program))
