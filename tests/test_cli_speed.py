"""``--help`` and bad usage import none of torch, Ray, MLflow or Optuna.

Those imports take seconds (docs/benchmarks.md has the ``--help`` times); a command parses and checks
its arguments before it imports them. Each case runs a command in a fresh interpreter, which then
reports what got imported: no timing here, so the test holds on a loaded machine too.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "ray", "mlflow", "optuna")

#: Runs ``python -m MODULE ARGS`` in-process and prints its exit code and which of HEAVY it imported.
PROBE = """
import contextlib, io, json, runpy, sys
module, args, heavy = sys.argv[1], sys.argv[2:], {heavy!r}
sys.argv = [module, *args]
code = None
try:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        runpy.run_module(module, run_name="__main__", alter_sys=True)
except SystemExit as stop:
    code = stop.code
print(json.dumps([code, sorted(m for m in heavy if m in sys.modules)]))
"""


@pytest.mark.parametrize(
    ("module", "args", "code"),
    [
        ("worm_tune.run", ["--help"], 0),
        ("worm_tune", ["--help"], 0),
        ("worm_tune.sweep", ["--help"], 0),
        ("worm_tune.final", ["--help"], 0),
        ("analysis", ["--help"], 0),
        ("worm_tune.run", ["--ratio", "2"], 2),
        ("worm_tune.run", ["--out", "/proc/x"], 2),
        ("worm_tune.sweep", ["resnet18", "--no-such-flag"], 2),
        ("worm_tune.sweep", ["resnet18", "--set", "optim.lr=-1"], 2),
        ("worm_tune.sweep", ["resnet18", "--num-samples", "4"], 2),
        ("worm_tune.final", ["s", "--seeds", "a"], 2),
        ("analysis", ["s", "--bootstrap", "5"], 2),
    ],
)
def test_help_and_bad_usage_import_no_heavy_machinery(module: str, args: list[str], code: int) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), module, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(done.stdout.splitlines()[-1]) == [code, []], done.stderr
