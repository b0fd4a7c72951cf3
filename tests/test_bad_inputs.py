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


def index_of_another_file(d: Path) -> None:
    """The VCF rewritten without its first half of records after its index was built (the index stays)."""
    lines = _vcf_text(d).split("\n")
    header = [line for line in lines if line.startswith("#")]
    data = [line for line in lines if line and not line.startswith("#")]
    (d / "c2").mkdir()
    _bgzip("\n".join(header + data[len(data) // 2:]) + "\n", d / "c2" / "cohort.vcf.gz")
    shutil.copy(d / "c2" / "cohort.vcf.gz", d / "cohort.vcf.gz")  # the index of the whole file stays


def _edit_records(d: Path, edit: Callable[[list[str]], None]) -> None:
    """Rewrite cohort.vcf.gz (and its index) with `edit` applied to the columns of every data line."""
    lines = _vcf_text(d).split("\n")
    for i, line in enumerate(lines):
        if line and not line.startswith("#"):
            cols = line.split("\t")
            edit(cols)
            lines[i] = "\t".join(cols)
    _bgzip("\n".join(lines), d / "cohort.vcf.gz")


def alt_not_dna(d: Path) -> None:
    def edit(cols: list[str]) -> None:
        if len(cols[4]) == 1:
            cols[4] = "Q"
    _edit_records(d, edit)


def gt_beyond_alts(d: Path) -> None:
    def edit(cols: list[str]) -> None:
        if "," not in cols[4]:
            cols[9:] = [c.replace("0/1", "0/3", 1) for c in cols[9:]]
    _edit_records(d, edit)


def fasta_not_dna(d: Path) -> None:
    """Every T of the genome becomes X (the same length: the .fai still fits)."""
    text = (d / "genome.fa").read_text().split("\n")
    (d / "genome.fa").write_text("\n".join(t if t.startswith(">") else t.replace("T", "X") for t in text))


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


def records_not_dna(d: Path) -> None:
    (d / "records.fa").write_text(">r1\nACGTACGTAC\n>r2\nGGGCX!@#AT\n")


def records_iupac(d: Path) -> None:
    (d / "records.fa").write_text(">r1\nACGTRYACGT\n")


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


def _golden_copy(d: Path, name: str) -> Path:
    shutil.copytree(GOLDEN_CHECKPOINT, d / name)
    records(d)
    return d / name / "model.safetensors"


def damaged_safetensors(d: Path) -> None:
    weights = _golden_copy(d, "damaged")
    weights.write_bytes(weights.read_bytes()[:-100])


def nan_weights(d: Path) -> None:
    from safetensors.torch import load_file, save_file

    weights = _golden_copy(d, "nan")
    tensors = load_file(weights)
    key = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[key][0] = float("nan")
    save_file(tensors, weights)


def existing_checkpoint(d: Path) -> None:
    shutil.copytree(GOLDEN_CHECKPOINT, d / "ckpt")


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


def qc_reversed_ac(d: Path) -> None:
    (d / "qc.yaml").write_text("min_ac: 5\nmax_ac: 1\n")


def foreign_output_and_leftover(d: Path) -> None:
    """An output folder holding a user's file, and the temporary folder of an interrupted run beside it."""
    (d / "pca").mkdir()
    (d / "pca" / "thesis.tex").write_text("mine")
    (d / ".pca.tmp-deadbeef").mkdir()
    (d / ".pca.tmp-deadbeef" / "part-0.parquet").write_text("half")


def marked_output_with_foreign_file(d: Path) -> None:
    (d / "exp").mkdir()
    (d / "exp" / "haplotypes").mkdir()
    (d / "exp" / MARKER).write_text(json.dumps({"entries": ["haplotypes"]}))
    (d / "exp" / "results.csv").write_text("mine")


def cohort_config_mt_is_fasta(d: Path) -> None:
    """A cohort job config whose matrix_table is the FASTA (the corrected rerun must not be refused)."""
    config = {"inputs": {"matrix_table": str(d / "genome.fa"), "reference_fasta": str(d / "genome.fa"),
                         "gtf": str(d / "genes.gtf.gz"), "gene_set": str(d / "geneset.yaml")},
              "haplotype_strategy": "diploid",
              "model": {"checkpoint": str(GOLDEN_CHECKPOINT), "window": 256},
              "output": {"dir": str(d / "emb"), "recipe_id": "t"}}
    (d / "job.yaml").write_text(json.dumps(config))


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
    usage: bool = False  # refused by the option parser (a usage message, not an `error:` line)


PERSONALIZE = ("personalize --fasta {d}/genome.fa --gtf {d}/genes.gtf.gz --genes {d}/geneset.yaml "
               "--strategy diploid")
GENES = "genes --gtf {d}/genes.gtf.gz --genes {d}/geneset.yaml"

CASES = [
    Case("personalize: bgzipped VCF truncated inside a data block, old .tbi", truncated_vcf,
         PERSONALIZE + " --vcf {d}/t.vcf.gz --out {d}/out/p.fa", 2, "truncated or not bgzip-compressed",
         absent=["out"]),
    Case("personalize: index of another version of the VCF", index_of_another_file,
         PERSONALIZE + " --vcf {d}/cohort.vcf.gz --out {d}/out/p.fa", 2, "cohort.vcf.gz.tbi does not match",
         absent=["out"]),
    Case("personalize: an ALT outside the DNA alphabet", alt_not_dna,
         PERSONALIZE + " --vcf {d}/cohort.vcf.gz --out {d}/out/p.fa", 2, "ALT 'Q' is not a DNA allele",
         absent=["out"]),
    Case("personalize: a GT allele index beyond the record's ALTs", gt_beyond_alts,
         PERSONALIZE + " --vcf {d}/cohort.vcf.gz --out {d}/out/p.fa", 2,
         "a GT calls allele 3 but the record has 1 ALT(s)", absent=["out"]),
    Case("personalize: --workers 0", nothing,
         PERSONALIZE + " --vcf {d}/cohort.vcf.gz --out {d}/out/p.fa --workers 0", 2, "--workers",
         absent=["out"], usage=True),
    Case("personalize: a negative flank", nothing,
         PERSONALIZE + " --vcf {d}/cohort.vcf.gz --out {d}/out/p.fa --flank -5", 2, "--flank",
         absent=["out"], usage=True),
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
    Case("genes: FASTA bases outside the DNA alphabet", fasta_not_dna,
         GENES + " --fasta {d}/genome.fa --out {d}/r", 2, "character 'X' at position",
         absent=["r.tsv", "r.fa"]),
    Case("genes: the gene set is a folder", nothing,
         "genes --gtf {d}/genes.gtf.gz --genes {d} --fasta {d}/genome.fa --out {d}/r", 2,
         "gene set {d} is a folder; give the YAML file", absent=["r.tsv", "r.fa"]),
    Case("genes: GTF missing", nothing,
         "genes --gtf {d}/none.gtf --genes {d}/geneset.yaml --fasta {d}/genome.fa --out {d}/r", 2,
         "GTF {d}/none.gtf does not exist", absent=["r.tsv", "r.fa"]),
    Case("embed-fasta: stride > window", records,
         "embed-fasta --checkpoint {golden} --fasta {d}/records.fa --out {d}/e.parquet --window 100 "
         "--stride 250", 2, "--stride 250 > --window 100", absent=["e.parquet"]),
    Case("embed-fasta: repeated FASTA id", records_repeated_id,
         "embed-fasta --checkpoint {golden} --fasta {d}/records.fa --out {d}/e.parquet", 2,
         "record 3 repeats the id 'r1'", absent=["e.parquet"]),
    Case("embed-fasta: a record outside the DNA alphabet", records_not_dna,
         "embed-fasta --checkpoint {golden} --fasta {d}/records.fa --out {d}/e.parquet", 2,
         "record 2 ('r2'): character 'X' at position 5 is not a DNA base", absent=["e.parquet"]),
    Case("verify-rc: a record outside the DNA alphabet", records_not_dna,
         "verify-rc --checkpoint {golden} --fasta {d}/records.fa", 2, "is not a DNA base", forbidden="ok"),
    Case("embed-fasta: --window 0", records,
         "embed-fasta --checkpoint {golden} --fasta {d}/records.fa --out {d}/e.parquet --window 0", 2,
         "--window", absent=["e.parquet"], usage=True),
    Case("embed-fasta: weights that do not match --checkpoint-sha256", records,
         "embed-fasta --checkpoint {golden} --fasta {d}/records.fa --out {d}/e.parquet --checkpoint-sha256 "
         + "0" * 64, 2, "does not match the pinned 000", absent=["e.parquet"]),
    Case("embed-fasta: damaged safetensors", damaged_safetensors,
         "embed-fasta --checkpoint {d}/damaged --fasta {d}/records.fa --out {d}/e.parquet", 2,
         "{d}/damaged/model.safetensors: not a readable safetensors file", absent=["e.parquet"]),
    Case("verify-rc: weights holding NaN", nan_weights,
         "verify-rc --checkpoint {d}/nan --fasta {d}/records.fa", 2, "NaN or infinite value(s)",
         forbidden="ok"),
    Case("make-checkpoint: --out is an existing checkpoint", existing_checkpoint,
         "make-checkpoint --preset tiny-ps --out {d}/ckpt", 2, "was not written by neuro-caduceus",
         unchanged=["ckpt/config.json", "ckpt/model.safetensors"]),
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
    Case("pca: --out holds a user's file; an interrupted run's temporary folder beside it",
         foreign_output_and_leftover, "pca --input {d}/none --out {d}/pca --overwrite", 2,
         "{d}/pca exists and was not written by neuro-caduceus", unchanged=["pca/thesis.tex"],
         absent=[".pca.tmp-deadbeef"]),
    Case("pca: --n-components 0", nothing,
         "pca --input {d}/none --out {d}/pca --n-components 0", 2, "--n-components", absent=["pca"],
         usage=True),
    Case("export-variants --overwrite: a foreign file in its output", marked_output_with_foreign_file,
         "export-variants --mt {d}/none.mt --gtf {d}/genes.gtf.gz --gene-set {d}/geneset.yaml "
         "--out {d}/exp --overwrite", 2, "1 entries neuro-caduceus did not write (results.csv)",
         unchanged=["exp/results.csv"]),
    Case("export-variants: --genes-per-query 0", nothing,
         "export-variants --mt {d}/none.mt --gtf {d}/genes.gtf.gz --gene-set {d}/geneset.yaml "
         "--out {d}/exp --genes-per-query 0", 2, "--genes-per-query", absent=["exp"], usage=True),
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
    Case("variant-qc: min_ac > max_ac", qc_reversed_ac,
         "variant-qc --mt {d}/none.mt --config {d}/qc.yaml --out {d}/qc.json", 2,
         "min_ac 5 > max_ac 1 would remove every variant", absent=["qc.json"]),
    Case("embed-cohort: matrix_table is a FASTA (the corrected rerun is not refused)",
         cohort_config_mt_is_fasta, "embed-cohort --config {d}/job.yaml", 2,
         "not a Hail MatrixTable (no metadata.json.gz)", absent=["emb"], ray=True),
    Case("variant-qc: --mt is not a MatrixTable", qc_good,
         "variant-qc --mt {d}/none.mt --config {d}/qc.yaml --out {d}/qc.json", 2,
         "is not a MatrixTable folder", absent=["qc.json"]),
    Case("logo: --out is the features file", nothing,
         "logo --features {d}/brain.parquet --phenotype {d}/phenotype.tsv --out {d}/brain.parquet --serial",
         2, "would overwrite the input", unchanged=["brain.parquet"]),
    Case("cca: --reduce-dims 0", nothing,
         "cca --genetic {d}/brain.parquet --brain {d}/brain.parquet --out {d}/cca --reduce-dims 0", 2,
         "--reduce-dims", absent=["cca"], usage=True),
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
    assert "Traceback" not in out and (case.usage or out.count("error: ") == 1), out
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


# ------------------------------------------------------------------------- beyond the table: same promise


def test_a_copied_vcf_whose_index_is_microseconds_older_is_accepted(cohort, tmp_path):
    from neuro_caduceus.genome.vcf_file import check_vcf

    d = tmp_path / "copy"
    shutil.copytree(cohort, d)
    vcf = d / "cohort.vcf.gz"
    old = os.path.getmtime(vcf) - 1e-5
    os.utime(f"{vcf}.tbi", (old, old))
    check_vcf(str(vcf), need_index=True)  # the index describes the file: no error


def test_rows_in_another_order_give_the_same_numbers(tmp_path):
    """Folds and permutations follow the subject ids, not the files' row order."""
    from polars.testing import assert_frame_equal

    from neuro_caduceus.analysis.cca import CCAConfig, cca_from_files
    from neuro_caduceus.analysis.simulate import make_cca_pair

    X, Y = make_cca_pair(n=120, p=6, q=4, rho=0.6, seed=1)
    ids = np.array([f"S{i:04d}" for i in range(120)])
    order = np.random.default_rng(0).permutation(120)

    def write(name: str, rows: np.ndarray, M: np.ndarray) -> Path:
        values = pa.array(M[rows].reshape(-1).astype(np.float32))
        feats = pa.FixedSizeListArray.from_arrays(values, M.shape[1])
        pq.write_table(pa.table({"subject_id": ids[rows], "features": feats}), tmp_path / name)
        return tmp_path / name

    config = CCAConfig(n_perm=9, reduce_dims=3, n_components=2, parallel=False)
    plain = cca_from_files(write("g.parquet", np.arange(120), X), write("b.parquet", np.arange(120), Y),
                           tmp_path / "plain", config)
    shuffled = cca_from_files(write("gs.parquet", order, X), write("bs.parquet", order[::-1], Y),
                              tmp_path / "shuffled", config)
    assert_frame_equal(plain.table, shuffled.table)


def test_features_and_subject_tables_are_read_sorted_by_subject_id(tmp_path):
    from neuro_caduceus.analysis.features import read_features
    from neuro_caduceus.io import read_table

    ids = ["S3", "S1", "S2"]
    feats = pa.FixedSizeListArray.from_arrays(pa.array(np.arange(6, dtype=np.float32)), 2)
    pq.write_table(pa.table({"subject_id": ids, "features": feats}), tmp_path / "f.parquet")
    m = read_features(tmp_path / "f.parquet")
    assert m.subject_ids == ["S1", "S2", "S3"] and m.X[:, 0].tolist() == [2.0, 4.0, 0.0]
    (tmp_path / "t.tsv").write_text("subject_id\tage\nS3\t3\nS1\t1\nS2\t2\n")
    assert read_table(tmp_path / "t.tsv")["age"].to_list() == [1, 2, 3]


def test_output_folder_rule_replaces_only_what_it_wrote(tmp_path):
    from neuro_caduceus.io import output_dir

    out = tmp_path / "out"
    with output_dir(out) as tmp:
        (tmp / "a.txt").write_text("1")
    assert (out / "a.txt").read_text() == "1" and (out / MARKER).is_file()
    with pytest.raises(FileExistsError, match="pass --overwrite"):
        with output_dir(out):
            pass
    with pytest.raises(RuntimeError), output_dir(out, overwrite=True) as tmp:  # a failed run: out untouched
        (tmp / "b.txt").write_text("2")
        raise RuntimeError("stop")
    assert sorted(os.listdir(out)) == sorted([MARKER, "a.txt"]) and not list(tmp_path.glob(".*.tmp*"))
    with output_dir(out, overwrite=True) as tmp:
        (tmp / "b.txt").write_text("2")
    assert sorted(os.listdir(out)) == sorted([MARKER, "b.txt"])
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"did not write \(notes.txt\)"):
        with output_dir(out, overwrite=True):
            pass
    assert (out / "notes.txt").read_text() == "mine"


def test_make_checkpoint_replaces_its_own_checkpoint_only_with_overwrite(tmp_path):
    argv = ["make-checkpoint", "--preset", "tiny-ps", "--out", str(tmp_path / "c")]
    assert runner.invoke(app, argv).exit_code == 0
    again = runner.invoke(app, argv)
    assert again.exit_code == 2 and "pass --overwrite" in again.output
    assert runner.invoke(app, [*argv, "--seed", "1", "--overwrite"]).exit_code == 0


def test_disk_full_names_the_path_being_written(tmp_path):
    import errno

    from neuro_caduceus.io import atomic_writer

    with pytest.raises(OSError, match="No space left on device while writing .*x.json") as info:
        with atomic_writer(tmp_path / "x.json") as fh:
            fh.write("{")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert info.value.filename == str(tmp_path / "x.json")
    assert not list(tmp_path.iterdir())


def test_ctrl_c_in_a_command_is_one_line(capsys, monkeypatch):
    import click

    from neuro_caduceus import cli

    def interrupted() -> None:
        raise KeyboardInterrupt

    monkeypatch.setitem(cli._state, "debug", False)
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    with pytest.raises(click.exceptions.Exit) as exit_info:
        reporting_errors(interrupted)()
    assert exit_info.value.exit_code == 130
    assert capsys.readouterr().err.startswith("interrupted")


def test_demo_keeps_other_files_and_reports_errors_in_one_line(tmp_path, capsys, monkeypatch):
    from neuro_caduceus import demo

    config = str(Path(__file__).parents[1] / "configs" / "demo.yaml")
    out = tmp_path / "out"
    (out / "pca").mkdir(parents=True)
    (out / "thesis.tex").write_text("mine")
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    assert demo.main(["--out", str(out), "--config", config, "--fresh"]) == 2
    assert (out / "thesis.tex").read_text() == "mine" and (out / "pca").is_dir()
    assert "holds 1 entries the demo did not write (thesis.tex)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        demo.main(["--out", str(out), "--config", config, "--samples", "-5"])
    assert exit_info.value.code == 2 and "not a positive integer" in capsys.readouterr().err

    def interrupted(args) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "run", interrupted)
    assert demo.main(["--out", str(tmp_path / "new"), "--config", config]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err


def test_a_url_without_its_filesystem_package_names_the_url_and_the_extra(tmp_path):
    try:
        import gcsfs  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("gcsfs is installed here")
    records(tmp_path)
    result = runner.invoke(app, ["embed-fasta", "--checkpoint", "gs://bucket/ckpt", "--fasta",
                                 str(tmp_path / "records.fa"), "--out", str(tmp_path / "e.parquet")])
    assert result.exit_code == 2, result.output
    assert "gs://bucket/ckpt: cannot open gs:// URLs" in result.output
    assert "pip install 'neuro-caduceus[gcs]'" in result.output


def test_the_ray_processes_of_a_killed_driver_are_ended_by_the_next_command(tmp_path, monkeypatch):
    """A registry entry whose driver is gone: its processes (here a sleeping stand-in) are killed; the
    processes of a driver that still runs are left alone."""
    import subprocess
    import sys

    from neuro_caduceus import ray_session as rs

    if not Path("/proc/self/stat").exists():
        pytest.skip("reads /proc (Linux)")
    monkeypatch.setattr(rs, "REGISTRY", tmp_path)
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    kept = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        for driver, child in ((dead.pid, orphan), (os.getpid(), kept)):
            started = rs._start_time(driver) if driver == os.getpid() else 0
            entry = {"driver": [driver, started], "processes": [[child.pid, rs._start_time(child.pid)]]}
            (tmp_path / f"{driver}.json").write_text(json.dumps(entry))
        assert rs.end_orphans() == [orphan.pid]
        assert orphan.wait(timeout=10) == -9 and kept.poll() is None
        assert sorted(p.name for p in tmp_path.iterdir()) == [f"{os.getpid()}.json"]
    finally:
        for p in (orphan, kept):
            p.kill()
            p.wait()
