"""The Triton scan kernel on CPU, under Triton's interpreter, in a separate process.

TRITON_INTERPRET must be set before a kernel is defined and would leak into every later import of triton
(and into Ray workers) if set here, so the cases (tests/triton_interpreter_cases.py) run in a child pytest.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")  # in the dev extra: the CPU wheel brings the interpreter


def test_triton_kernel_under_the_interpreter() -> None:
    tests = Path(__file__).parent
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(tests / "triton_interpreter_cases.py")],
                          cwd=tests.parent, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout, proc.stdout[-2000:]
