"""Output safety shared by every command: never write over an input, never leave a failed run's files.

Why one module: each command that takes `--out` must refuse an output that is (or holds, or lies inside)
one of its inputs, write files under a temporary name renamed into place, and leave nothing behind when
it fails; doing that in one place keeps the rules the same for every command.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO


def _local(path: str | Path | None) -> Path | None:
    """The real path (symlinks resolved) of a local path; None for URLs and absent options."""
    if path is None or "://" in str(path):
        return None
    return Path(path).expanduser().resolve()


def check_output_not_input(outputs: Iterable[str | Path], inputs: Iterable[str | Path | None]) -> None:
    """Refuse (ValueError) an output that is an input, lies inside an input folder, or contains an input.

    Symlinks are resolved, so a link to the input is caught too; URLs are not checked.
    """
    real_inputs = [(p, _local(p)) for p in inputs if _local(p) is not None]
    for out in outputs:
        real_out = _local(out)
        if real_out is None:
            continue
        for given, real_in in real_inputs:
            if real_out == real_in or real_in in real_out.parents or real_out in real_in.parents:
                raise ValueError(
                    f"output {out} would overwrite the input {given}; choose another --out"
                )


@contextlib.contextmanager
def atomic_writer(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """A handle on a temp file beside `path`, renamed onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def output_dir(out: str | Path, inputs: Iterable[str | Path | None] = ()) -> Iterator[Path]:
    """An output folder checked against the inputs; when the block fails, what it created there is removed.

    Entries present before the run are left alone (a failed run never deletes data it did not write); a
    folder the run created is removed whole, so a failed run leaves nothing behind.
    """
    out = Path(out)
    check_output_not_input([out], inputs)
    existed = out.exists()
    before = set(os.listdir(out)) if existed and out.is_dir() else set()
    try:
        yield out
    except BaseException:
        if not existed:
            shutil.rmtree(out, ignore_errors=True)
        elif out.is_dir():
            for name in set(os.listdir(out)) - before:
                target = out / name
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        target.unlink()
        raise


MARKER = ".neuro-caduceus-output.json"  # in an output folder: the entries this project wrote there


def check_replaceable(out: str | Path, overwrite: bool) -> None:
    """Before any work: `out` must be absent or empty, or (with `overwrite`) hold only what we wrote there.

    Why a marker: `--overwrite` must never delete a user's files; the folder's marker lists the entries a
    neuro-caduceus command wrote, and anything else in the folder blocks the replacement.
    """
    out = Path(out)
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    marker = out / MARKER
    if not out.is_dir() or not marker.is_file():
        raise FileExistsError(
            f"{out} exists and was not written by neuro-caduceus (no {MARKER} in it); "
            "move it away or choose another --out"
        )
    if not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    unknown = sorted(set(os.listdir(out)) - set(_marked(marker)) - {MARKER})
    if unknown:
        raise FileExistsError(
            f"{out} holds {len(unknown)} entries neuro-caduceus did not write ({', '.join(unknown[:5])}); "
            "move them away, then rerun with --overwrite"
        )


def _marked(marker: Path) -> list[str]:
    import json

    try:
        entries = json.loads(marker.read_text())["entries"]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{marker}: unreadable output marker ({err}); move the folder away") from err
    return [e for e in entries if isinstance(e, str) and "/" not in e and e not in ("", ".", "..")]


def replace_output(tmp: str | Path, out: str | Path, overwrite: bool) -> None:
    """Move the finished folder `tmp` onto `out` (checked again), marking the entries as ours."""
    import json

    tmp, out = Path(tmp), Path(out)
    (tmp / MARKER).write_text(json.dumps({"entries": sorted(os.listdir(tmp))}, indent=1))
    check_replaceable(out, overwrite)
    if out.exists():
        for name in _marked(out / MARKER) if (out / MARKER).exists() else []:
            target = out / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
        with contextlib.suppress(FileNotFoundError):
            (out / MARKER).unlink()
        out.rmdir()
    os.replace(tmp, out)


def read_yaml_model(path: str | Path, model: type):
    """A YAML file (safe_load) validated by a pydantic model; errors name the file and each bad key."""
    import yaml
    from pydantic import ValidationError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from err
    try:
        return model.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in err.errors()
        )
        raise ValueError(f"{path}: {problems}") from err
