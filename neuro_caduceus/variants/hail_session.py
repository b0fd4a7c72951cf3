"""One local Hail per process, and reference genome registration.

Why a helper: `hl.init` starts a JVM (seconds, hundreds of MB) and may run only once per process; the test
session, the CLI and every Ray worker that reads a MatrixTable all need Hail, so they share this idempotent
entry point. Each Ray worker process gets its own small JVM (local[1], 1 GiB driver memory by default).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from types import ModuleType

BUILTIN_REFERENCES = ("GRCh37", "GRCh38", "GRCm38", "CanFam3")


def init_hail(
    tmp_dir: str | None = None,
    cores: int | None = None,
    quiet: bool = True,
    driver_memory: str = "1g",
) -> ModuleType:
    """Start Hail on Spark local[cores] once per process and return the `hail` module.

    Later calls return at once. The Hail log goes to a per-process file in the temp folder (not the working
    directory); SPARK_LOCAL_IP defaults to 127.0.0.1 so no network interface is needed.
    """
    import hail as hl

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    if _initialized():
        return hl
    tmp = tmp_dir or tempfile.mkdtemp(prefix="hail_")
    cores = cores or min(2, os.cpu_count() or 1)
    hl.init(
        master=f"local[{cores}]",
        tmp_dir=tmp,
        local_tmpdir=tmp,
        log=str(Path(tmp) / f"hail-{os.getpid()}.log"),
        quiet=quiet,
        append=True,
        idempotent=True,
        spark_conf={
            "spark.driver.memory": driver_memory,
            "spark.ui.enabled": "false",
            "spark.ui.showConsoleProgress": "false",
            "spark.driver.bindAddress": os.environ["SPARK_LOCAL_IP"],
        },
    )
    return hl


def _initialized() -> bool:
    """True when this process already has a Hail context (ours, or one the user made with hl.init)."""
    from hail.utils.java import Env

    return Env._hc is not None


def load_reference(name_or_json: str | Path):
    """The Hail ReferenceGenome for a built-in name (GRCh38) or a Hail reference JSON file.

    Idempotent: a JSON whose genome name is already registered returns the registered genome.
    """
    hl = init_hail()
    text = str(name_or_json)
    if text in BUILTIN_REFERENCES:
        return hl.get_reference(text)
    path = Path(text)
    if not path.is_file():
        raise FileNotFoundError(
            f"reference {text!r} is neither a built-in Hail genome {BUILTIN_REFERENCES} nor a JSON file"
        )
    try:
        name = json.loads(path.read_text())["name"]
    except (json.JSONDecodeError, KeyError) as err:
        raise ValueError(f"{path}: not a Hail ReferenceGenome JSON (needs 'name', 'contigs'): {err}") from err
    try:
        return hl.get_reference(name)  # already registered (by us, or by reading a MatrixTable that uses it)
    except KeyError:
        return hl.ReferenceGenome.read(str(path))
