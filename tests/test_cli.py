"""The one way to fail of every entry point (`skelpose_tf.cli`): a user error is one line and
exit status 1, a bug keeps its traceback, `--traceback` shows it for user errors too."""

import os
import subprocess
import sys

import pytest

from pose_fixtures import REPO_ROOT

SCRIPT = """
import sys
from skelpose_tf import cli

def main(argv):
    kind = argv[1]
    if kind == "value":
        raise ValueError("annotations.json: annotation #3 field 'keypoints' must hold 51 "
                         "numbers. Received 50.")
    if kind == "missing":
        open("/nonexistent/annotations.json")
    if kind == "user":
        raise cli.UserError("runs/x holds results but no checkpoint:\\n  pass --restart")
    if kind == "bug":
        {}["image_id"]
    print("done")

cli.run(main, "tool")
"""


def run(*args, **environment):
    return subprocess.run([sys.executable, "-c", SCRIPT, *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **environment})


@pytest.mark.parametrize("kind, message", [
    ("value", "tool: error: annotations.json: annotation #3 field 'keypoints' must hold 51"),
    ("missing", "tool: error: [Errno 2] No such file or directory: '/nonexistent/annotations"),
    ("user", "tool: error: runs/x holds results but no checkpoint: pass --restart"),
])
def test_a_user_error_is_one_line_and_status_1(kind, message):
    completed = run(kind)
    assert completed.returncode == 1
    assert completed.stderr.strip().splitlines() == [completed.stderr.strip()]
    assert completed.stderr.startswith(message)
    assert "Traceback" not in completed.stderr
    shown = run(kind, "--traceback")
    assert shown.returncode == 1 and "Traceback" in shown.stderr and message in shown.stderr
    assert "Traceback" in run(kind, SKELPOSE_TRACEBACK="1").stderr


def test_a_bug_keeps_its_traceback_and_says_so():
    completed = run("bug")
    assert completed.returncode == 70
    assert "Traceback" in completed.stderr and "KeyError: 'image_id'" in completed.stderr
    assert "internal error (a bug, not your input)" in completed.stderr


def test_success_and_usage_errors_are_unchanged():
    completed = run("fine")
    assert (completed.returncode, completed.stdout.strip()) == (0, "done")
    assert run("fine", "--no_such_flag").returncode == 1  # absl's own usage message
