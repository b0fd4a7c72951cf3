"""CLI commands of the `model` area (imports that load torch stay inside the command bodies)."""

from __future__ import annotations

from pathlib import Path

import typer

from neuro_caduceus.alphabet import clean_sequence
from neuro_caduceus.io import OVERWRITE_HELP, check_output_not_input, output_dir, write_parquet
from neuro_caduceus.model.config import preset_config
from neuro_caduceus.model.rc import RCWindow, check_windows
from neuro_caduceus.tiling import tile

SHA_HELP = "Pinned sha256 of the weights file: a checkpoint that does not match is refused"


def _read_fasta(path: Path) -> list[tuple[str, str]]:
    """The records (id, sequence) of a FASTA, checked: unique ids, no empty record, the DNA alphabet
    (IUPAC codes other than N read as N, reported on stderr)."""
    import pysam

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such FASTA file")
    with pysam.FastxFile(str(path)) as fh:
        records = [(r.name, r.sequence or "") for r in fh]
    if not records:
        raise ValueError(f"{path}: the FASTA file holds no records")
    empty = [name for name, seq in records if not seq]
    if empty:
        raise ValueError(f"{path}: record {empty[0]!r} has an empty sequence")
    seen: dict[str, int] = {}
    for n, (name, _) in enumerate(records, 1):
        if name in seen:
            raise ValueError(f"{path}: record {n} repeats the id {name!r} of record {seen[name]}; "
                             "FASTA ids must be unique")
        seen[name] = n
    cleaned, replaced = [], 0
    for n, (name, seq) in enumerate(records, 1):
        seq, count = clean_sequence(seq, f"{path}: record {n} ({name!r})")
        cleaned.append((name, seq))
        replaced += count
    if replaced:
        typer.echo(f"note: {path}: {replaced} IUPAC ambiguity code(s) read as N", err=True)
    return cleaned


def make_checkpoint(
    preset: str = typer.Option(..., help="A public checkpoint's name, tiny-ps / tiny-ph, or tiny-dnabert2"),
    seed: int = typer.Option(0, help="Seed of the random weights"),
    out: Path = typer.Option(..., help="Output checkpoint folder (HF layout)"),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
) -> None:
    """Write a checkpoint with RANDOM weights in the hub layout (for tests and dry runs, not for science).

    tiny-dnabert2: a small DNABERT-2 with the real BPE tokenizer (tokenizer.json) beside its weights.
    """
    from neuro_caduceus.model.dnabert2_random import PRESETS as DNABERT2_PRESETS
    from neuro_caduceus.model.dnabert2_random import random_dnabert2, save_dnabert2
    from neuro_caduceus.model.random_init import random_model
    from neuro_caduceus.model.saving import save_pretrained

    if preset in DNABERT2_PRESETS:
        with output_dir(out, overwrite=overwrite) as tmp:
            model = random_dnabert2(DNABERT2_PRESETS[preset](), seed)
            save_dnabert2(model, tmp)
    else:
        config = preset_config(preset)
        with output_dir(out, overwrite=overwrite) as tmp:
            model = random_model(config, seed)
            save_pretrained(model, tmp)
    n = sum(p.numel() for p in model.parameters())
    typer.secho(f"WARNING: {out} holds RANDOM weights (preset {preset}, seed {seed}, {n:,} parameters); "
                "its embeddings carry no biological signal.", fg=typer.colors.RED, err=True)


def embed_fasta(
    checkpoint: str = typer.Option(..., help="Checkpoint folder or fsspec URL"),
    fasta: Path = typer.Option(..., help="FASTA file"),
    out: Path = typer.Option(..., help="Output Parquet (id, length, embedding)"),
    window: int | None = typer.Option(None, help="Window length (default: whole sequence)", min=1),
    stride: int | None = typer.Option(None, help="Window stride (default: window)", min=1),
    batch_size: int = typer.Option(8, help="Windows per batch (Caduceus: equal lengths; DNABERT-2: padded)",
                                   min=1),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    dtype: str = typer.Option("float32", help="float32 | bfloat16 | float16 (half: CUDA only)"),
    checkpoint_sha256: str | None = typer.Option(None, "--checkpoint-sha256", help=SHA_HELP),
) -> None:
    """Strand-invariant mean embedding of every FASTA record into a Parquet file."""
    import numpy as np
    import pyarrow as pa

    from neuro_caduceus.model.families import load_encoder

    check_output_not_input([out], [fasta, checkpoint])
    if window is not None and stride is not None and stride > window:
        raise ValueError(f"--stride {stride} > --window {window} would leave bases out of every window; "
                         "use a stride <= the window")
    records = _read_fasta(fasta)
    emb = load_encoder(checkpoint, device=device, dtype=dtype, batch_size=batch_size, window=window,
                       stride=stride, expected_sha256=checkpoint_sha256)
    vectors = np.stack([emb.embed(seq) for _, seq in records]).astype(np.float32)
    table = pa.table({
        "id": pa.array([name for name, _ in records], pa.string()),
        "length": pa.array([len(seq) for _, seq in records], pa.int64()),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), pa.float32()), emb.dim)
        .cast(pa.list_(pa.float32())),
    })
    write_parquet(table, out, recipe=emb.recipe())
    typer.echo(f"wrote {len(records)} embeddings of width {emb.dim} to {out}")


def verify_rc(
    checkpoint: str = typer.Option(..., help="Checkpoint folder or fsspec URL"),
    fasta: Path = typer.Option(..., help="FASTA file"),
    tol: float = typer.Option(1e-5, help="Largest allowed |embed(seq) - embed(revcomp(seq))|", min=0.0),
    window: int | None = typer.Option(None, help="Window length (default: whole sequence)", min=1),
    stride: int | None = typer.Option(None, help="Window stride (default: window)", min=1),
    dtype: str = typer.Option("float32", help="float32 | bfloat16 | float16 (half: CUDA only)"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    checkpoint_sha256: str | None = typer.Option(None, "--checkpoint-sha256", help=SHA_HELP),
) -> None:
    """Check that embeddings are reverse-complement invariant; exit 1 when a record exceeds --tol.

    Columns: name, length, max |e(s) - e(rc(s))|, ok/FAIL and, for encoders that average two strand passes
    (Caduceus PH, DNABERT-2), the relative disagreement of the passes on s and rc(s) before averaging.
    """
    from neuro_caduceus.model.families import encoder_class, load_encoder

    kind = encoder_class(checkpoint)  # config.json: a missing or foreign one fails here, as a load would
    try:
        kind.limits.check(window, kind.family, "--window")
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    emb = load_encoder(checkpoint, device=device, dtype=dtype, window=window, stride=stride,
                       expected_sha256=checkpoint_sha256)
    records = _read_fasta(fasta)
    worst = 0.0
    for name, seq in records:
        parts = [RCWindow(name, name, a, seq[a:b]) for a, b in tile(len(seq), window, stride)]
        rec = check_windows(emb, parts)
        dev = rec["max_abs_deviation"]
        worst = max(worst, dev)
        ph = rec["ph_pass_disagreement"]
        ph = "" if ph is None else f"\t{emb.label} passes differ {ph:.3e}"
        typer.echo(f"{name}\t{len(seq)}\t{dev:.3e}\t{'ok' if dev <= tol else 'FAIL'}{ph}")
    if worst > tol:
        typer.secho(f"max deviation {worst:.3e} > tolerance {tol:.1e}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    typer.echo(f"all records RC-invariant within {tol:.1e} (max {worst:.3e}; window {window or 'whole'}, "
               f"dtype {dtype}, device {emb.device})")


def register(app: typer.Typer) -> None:
    """Attach this area's commands to the top-level app."""
    app.command("make-checkpoint")(make_checkpoint)
    app.command("embed-fasta")(embed_fasta)
    app.command("verify-rc")(verify_rc)
