"""Bad input, one row per case: the command line, the damage, the exit code and a fragment of the message.

Every row also asserts that no traceback reaches the terminal and that nothing is left behind: the paths in
`absent` do not exist after the run and the files in `unchanged` keep their bytes (inputs are never
overwritten, unknown files never deleted). docs/errors.md lists the same cases for users.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pysam
import pytest
from typer.testing import CliRunner

from neuro_caduceus.cli import DEBUG_ENV, app, reporting_errors
from neuro_caduceus.io import MARKER, RECIPE_KEY

GOLDEN_CHECKPOINT = Path(__file__).parent / "data" / "golden" / "ph_d32_l2"
runner = CliRunner()


# ------------------------------------------------------------------------------------------ the damage


def _bgzip(text: str, path: Path) -> None:
    plain = path.with_suffix("")  # x.vcf.gz -> x.vcf
    plain.write_text(text)
    pysam.tabix_index(str(plain), preset="vcf", force=True)


def _vcf_text(d: Path) -> str:
    with gzip.open(d / "cohort.vcf.gz", "rt") as fh:
        return fh.read()


def truncated_vcf(d: Path) -> None:
    """Cut inside a data block; the index of the whole file stays, older than the cut file."""
    shutil.copy(d / "cohort.vcf.gz", d / "t.vcf.gz")
    shutil.copy(d / "cohort.vcf.gz.tbi", d / "t.vcf.gz.tbi")
    with open(d / "t.vcf.gz", "r+b") as fh:
        fh.truncate(os.path.getsize(d / "t.vcf.gz") // 2)
    old = os.path.getmtime(d / "t.vcf.gz") - 3600
    os.utime(d / "t.vcf.gz.tbi", (old, old))


def stale_index(d: Path) -> None:
    """The VCF rewritten (same bytes) after its index was built."""
    old = os.path.getmtime(d / "cohort.vcf.gz") - 3600
    os.utime(d / "cohort.vcf.gz.tbi", (old, old))


def duplicated_sample(d: Path) -> None:
    lines = _vcf_text(d).split("\n")
    header = next(i for i, line in enumerate(lines) if line.startswith("#CHROM"))
    cols = lines[header].split("\t")
    cols[10] = cols[9]
    lines[header] = "\t".join(cols)
    _bgzip("\n".join(lines), d / "dup.vcf.gz")


def gtf_start_after_end(d: Path) -> None:
    with gzip.open(d / "genes.gtf.gz", "rt") as fh:
        lines = fh.read().split("\n")
    n = next(i for i, line in enumerate(lines) if "\texon\t" in line)
    cols = lines[n].split("\t")
    cols[3], cols[4] = cols[4], cols[3]
    lines[n] = "\t".join(cols)
    (d / "bad.gtf").write_text("\n".join(lines))


def fasta_edited_after_index(d: Path) -> None:
    text = (d / "genome.fa").read_text().split("\n")
    text[1] = "A" + text[1]  # one base more in the first sequence line; the .fai is not rebuilt
    (d / "genome.fa").write_text("\n".join(text))


def fasta_repeated_id(d: Path) -> None:
    text = (d / "genome.fa").read_text()
    first = text[: text.index(">", 1)]
    (d / "dup.fa").write_text(text + first)  # the first record again, at the end
    pysam.faidx(str(d / "dup.fa"))  # htslib keeps the first and only warns


def records(d: Path) -> None:
    (d / "records.fa").write_text(">r1\nACGTACGTAC\n>r2\nGGGCCCAAAT\n")


def records_repeated_id(d: Path) -> None:
    (d / "records.fa").write_text(">r1\nACGTACGTAC\n>r2\nGGGCCCAAAT\n>r1\nTTTT\n")


def evil_checkpoint(d: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (Path.touch, (d / "pwned",))

    (d / "evil").mkdir()
    shutil.copy(GOLDEN_CHECKPOINT / "config.json", d / "evil" / "config.json")
    (d / "evil" / "pytorch_model.bin").write_bytes(pickle.dumps({"x": Evil()}, protocol=2))
    records(d)


def empty_checkpoint(d: Path) -> None:
    (d / "nockpt").mkdir()
    records(d)


def shards_one_gene(d: Path) -> None:
    """Embedding shards of G1 only; the recipe's gene list names G1 and G2 (G2 was never embedded)."""
    recipe = {"recipe_id": "r", "gene_list": ["G1", "G2"]}
    meta = {RECIPE_KEY: json.dumps(recipe).encode()}
    (d / "emb" / "shards").mkdir(parents=True)
    subjects = [f"S{i}" for i in range(6)]
    emb = np.ones((6, 4), dtype=np.float32)
    table = pa.table({"subject_id": subjects, "gene_id": ["G1"] * 6, "gene_name": ["A1"] * 6,
                      "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), 4)})
    pq.write_table(table.replace_schema_metadata(meta), d / "emb" / "shards" / "G1.parquet")


def features_and_bad_covariates(d: Path) -> None:
    (d / "feat").mkdir()
    x = np.arange(24, dtype=np.float32)
    table = pa.table({"subject_id": [f"S{i}" for i in range(6)],
                      "features": pa.FixedSizeListArray.from_arrays(pa.array(x), 4)})
    pq.write_table(table, d / "feat" / "part-0.parquet")
    (d / "cov.tsv").write_text("sid\tage\n" + "".join(f"S{i}\t{40 + i}\n" for i in range(6)))


def foreign_folder(d: Path) -> None:
    (d / "x.mt").mkdir()
    (d / "x.mt" / "notes.txt").write_text("mine")


def marked_folder_with_foreign_file(d: Path) -> None:
    (d / "x.mt").mkdir()
    (d / "x.mt" / "rows").mkdir()
    (d / "x.mt" / MARKER).write_text(json.dumps({"entries": ["rows"]}))
    (d / "x.mt" / "notes.txt").write_text("mine")


def qc_unknown_key(d: Path) -> None:
    (d / "qc.yaml").write_text("min_gq: 20\nmin_qd: 3\n")


def qc_good(d: Path) -> None:
    (d / "qc.yaml").write_text("min_gq: 20\n")


def nothing(d: Path) -> None:
    return None


# ------------------------------------------------------------------------------------------ the table


@dataclass(frozen=True)
class Case:
    name: str
    damage: Callable[[Path], None]
    argv: str  # {d}: the case folder; {golden}: a golden checkpoint
    code: int
    message: str
    absent: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    forbidden: str | None = None  # a text the message must not hold
    ray: bool = False


PERSONALIZE = ("personalize --fasta {d}/genome.fa --gtf {d}/genes.gtf.gz --genes {d}/geneset.yaml "
               "--strategy diploid")
GENES = "genes --gtf {d}/genes.gtf.gz --genes {d}/geneset.yaml"

CASES = [
    Case("personalize: bgzipped VCF truncated inside a data block, old .tbi", truncated_vcf,
         PERSONALIZE + " --vcf {d}/t.vcf.gz --out {d}/out/p.fa", 2, "truncated or not bgzip-compressed",
         absent=["out"]),
    Case("personalize: index older than the VCF", stale_index,
         PERSONALIZE + " --vcf {d}/cohort.vcf.gz --out {d}/out/p.fa", 2, "is older than", absent=["out"]),
    Case("personalize: a sample id twice in the header", duplicated_sample,
         PERSONALIZE + " --vcf {d}/dup.vcf.gz --out {d}/out/p.fa", 2, "appears twice in the #CHROM line",
         absent=["out"]),
    Case("personalize: --out is the VCF", nothing,
         PERSONALIZE + " --vcf {d}/cohort.vcf.gz --out {d}/cohort.vcf.gz", 2, "would overwrite the input",
         unchanged=["cohort.vcf.gz"]),
    Case("genes: --out PREFIX writes over the FASTA", nothing,
         GENES + " --fasta {d}/genome.fa --out {d}/genome", 2, "would overwrite the input",
         absent=["genome.tsv"], unchanged=["genome.fa"]),
    Case("genes: GTF feature with start > end", gtf_start_after_end,
         "genes --gtf {d}/bad.gtf --genes {d}/geneset.yaml --fasta {d}/genome.fa --out {d}/r", 2,
         "> end", absent=["r.tsv", "r.fa"]),
    Case("genes: FASTA edited after its .fai", fasta_edited_after_index,
         GENES + " --fasta {d}/genome.fa --out {d}/r", 2, "does not match its index",
         absent=["r.tsv", "r.fa"]),
    Case("genes: FASTA repeats a record id", fasta_repeated_id,
         GENES + " --fasta {d}/dup.fa --out {d}/r", 2, "repeats a record id", absent=["r.tsv", "r.fa"]),
    Case("genes: GTF missing", nothing,
         "genes --gtf {d}/none.gtf --genes {d}/geneset.yaml --fasta {d}/genome.fa --out {d}/r", 2,
         "GTF {d}/none.gtf does not exist", absent=["r.tsv", "r.fa"]),
    Case("embed-fasta: stride > window", records,
         "embed-fasta --checkpoint {golden} --fasta {d}/records.fa --out {d}/e.parquet --window 100 "
         "--stride 250", 2, "--stride 250 > --window 100", absent=["e.parquet"]),
    Case("embed-fasta: repeated FASTA id", records_repeated_id,
         "embed-fasta --checkpoint {golden} --fasta {d}/records.fa --out {d}/e.parquet", 2,
         "record 3 repeats the id 'r1'", absent=["e.parquet"]),
    Case("embed-fasta: --out is the FASTA", records,
         "embed-fasta --checkpoint {golden} --fasta {d}/records.fa --out {d}/records.fa", 2,
         "would overwrite the input", unchanged=["records.fa"]),
    Case("verify-rc: checkpoint folder without config.json", empty_checkpoint,
         "verify-rc --checkpoint {d}/nockpt --fasta {d}/records.fa", 2, "no config.json"),
    Case("verify-rc: pickle that builds objects", evil_checkpoint,
         "verify-rc --checkpoint {d}/evil --fasta {d}/records.fa", 2,
         "refused by torch.load(weights_only=True)", absent=["pwned"], forbidden="weights_only=False"),
    Case("subject-matrix: --on-missing-gene drop, a gene never embedded", shards_one_gene,
         "subject-matrix --input {d}/emb --out {d}/sm --on-missing-gene drop", 2,
         "are in no shard (never embedded, e.g. ['G2'])", absent=["sm"], ray=True),
    Case("subject-matrix: a gene never embedded (default: error)", shards_one_gene,
         "subject-matrix --input {d}/emb --out {d}/sm", 2, "1 gene(s) of the gene list are in no shard",
         absent=["sm"], ray=True),
    Case("pca: input folder missing", nothing,
         "pca --input {d}/none --out {d}/pca", 2, "no such folder", absent=["pca"], ray=True),
    Case("residualize: covariates without subject_id", features_and_bad_covariates,
         "residualize --input {d}/feat --covariates {d}/cov.tsv --out {d}/res", 2,
         "{d}/cov.tsv has no subject id column 'subject_id'", absent=["res"], ray=True),
    Case("import-vcf: truncated VCF", truncated_vcf,
         "import-vcf --vcf {d}/t.vcf.gz --out {d}/x.mt", 2, "truncated or not bgzip-compressed",
         absent=["x.mt"]),
    Case("import-vcf: --out is the VCF", nothing,
         "import-vcf --vcf {d}/cohort.vcf.gz --out {d}/cohort.vcf.gz", 2, "would overwrite the input",
         unchanged=["cohort.vcf.gz"]),
    Case("import-vcf: --overwrite on a folder it did not write", foreign_folder,
         "import-vcf --vcf {d}/cohort.vcf.gz --out {d}/x.mt --overwrite", 2,
         "was not written by neuro-caduceus", unchanged=["x.mt/notes.txt"]),
    Case("import-vcf: --overwrite with a foreign file inside its output", marked_folder_with_foreign_file,
         "import-vcf --vcf {d}/cohort.vcf.gz --out {d}/x.mt --overwrite", 2,
         "1 entries neuro-caduceus did not write (notes.txt)", unchanged=["x.mt/notes.txt"]),
    Case("variant-qc: unknown config key", qc_unknown_key,
         "variant-qc --mt {d}/none.mt --config {d}/qc.yaml --out {d}/qc.json", 2,
         "{d}/qc.yaml: min_qd: Extra inputs are not permitted", absent=["qc.json"]),
    Case("variant-qc: --mt is not a MatrixTable", qc_good,
         "variant-qc --mt {d}/none.mt --config {d}/qc.yaml --out {d}/qc.json", 2,
         "is not a MatrixTable folder", absent=["qc.json"]),
    Case("logo: --out is the features file", nothing,
         "logo --features {d}/brain.parquet --phenotype {d}/phenotype.tsv --out {d}/brain.parquet --serial",
         2, "would overwrite the input", unchanged=["brain.parquet"]),
]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    from neuro_caduceus.synthetic import make_cohort

    out = tmp_path_factory.mktemp("bad_inputs") / "cohort"
    make_cohort(out, n_samples=12, n_genes=2, seed=0, brain_dim=4)
    return out


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(case: Case, d: Path, *extra: str, env: dict | None = None):
    argv = case.argv.format(d=d, golden=GOLDEN_CHECKPOINT).split()
    return runner.invoke(app, [*extra, *argv], env=env)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gets_one_clear_line_and_leaves_nothing(case: Case, cohort, tmp_path, request):
    if case.ray:
        request.getfixturevalue("ray_session")
    d = tmp_path / "case"
    shutil.copytree(cohort, d)
    case.damage(d)
    before = {p: _digest(d / p) for p in case.unchanged}
    result = _run(case, d)
    out = result.output
    assert result.exit_code == case.code, out
    assert case.message.format(d=d) in out, out
    assert "Traceback" not in out and out.count("error: ") == 1, out
    assert not (case.forbidden and case.forbidden in out), out
    for p in case.absent:
        assert not (d / p).exists(), f"{p} left behind"
    assert {p: _digest(d / p) for p in case.unchanged} == before
    assert not list(d.glob(".*.tmp*")), "a temporary file was left behind"


def test_debug_option_and_variable_show_the_traceback(cohort, tmp_path):
    d = tmp_path / "case"
    shutil.copytree(cohort, d)
    case = CASES[0]
    case.damage(d)
    plain = _run(case, d)
    assert plain.exit_code == 2 and isinstance(plain.exception, SystemExit)
    debug = _run(case, d, "--debug")
    assert isinstance(debug.exception, ValueError) and "truncated" in str(debug.exception)
    by_env = _run(case, d, env={DEBUG_ENV: "1"})
    assert isinstance(by_env.exception, ValueError)


def test_a_bug_is_one_line_with_exit_code_1(capsys, monkeypatch):
    import click

    from neuro_caduceus import cli

    def broken() -> None:
        raise TypeError("unsupported operand")

    monkeypatch.setitem(cli._state, "debug", False)
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    with pytest.raises(click.exceptions.Exit) as exit_info:
        reporting_errors(broken)()
    assert exit_info.value.exit_code == 1
    err = capsys.readouterr().err
    assert err.startswith("internal error: TypeError: unsupported operand") and "--debug" in err
    assert err.count("\n") == 1


def test_an_error_inside_a_ray_data_task_is_reported_by_its_own_message(ray_session, capsys, monkeypatch):
    """Ray Data wraps a task's error twice (RayTaskError, UserCodeException) and keeps it only as text."""
    import click

    from neuro_caduceus import cli

    def read_only(batch):
        raise OSError(30, "Read-only file system", "/out/part-0.parquet")

    monkeypatch.setitem(cli._state, "debug", False)
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    with pytest.raises(click.exceptions.Exit) as exit_info:
        reporting_errors(lambda: ray_session.data.range(4).map_batches(read_only).take_all())()
    assert exit_info.value.exit_code == 2
    err = capsys.readouterr().err  # Ray Data's own log lines come first
    assert err.splitlines()[-1] == "error: [Errno 30] Read-only file system: '/out/part-0.parquet'"
    assert "Traceback" not in err
