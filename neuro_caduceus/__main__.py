"""`python -m neuro_caduceus <command> ...`: the `neuro-caduceus` command line without the installed script.

The form a Ray cluster runs: `ray job submit --working-dir . -- python -m neuro_caduceus <command> ...`
(the uploaded checkout is the job's working directory, so the package is importable from it).
"""

from __future__ import annotations

import sys

try:
    from neuro_caduceus.cli import app
except ImportError as err:  # the head's Python lacks the project's dependencies
    sys.exit(f"error: {sys.executable} cannot import the project ({err}); run it in the project's "
             "environment (source .venv/bin/activate; for a Ray job, start the Ray head from it) or install "
             "the package in the node image")

if __name__ == "__main__":
    app(prog_name="neuro-caduceus")
