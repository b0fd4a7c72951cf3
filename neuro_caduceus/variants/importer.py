"""VCF -> Hail MatrixTable: import, split multi-allelics, write atomically.

Why keep `vcf_locus`/`vcf_alleles`: Hail stores unphased calls with sorted allele indices and split_multi_hts
min-represents alleles, so the written record is needed afterwards to assign a `1/2` call's two ALTs to
haplotypes 1 and 2 (bcftools consensus semantics) and to report variants as written in the VCF.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from neuro_caduceus.genome.vcf_file import check_vcf
from neuro_caduceus.io import (
    check_output_not_input,
    check_replaceable,
    discard,
    remove_leftovers,
    replace_output,
    temp_name,
)
from neuro_caduceus.variants.hail_session import init_hail, load_reference


def vcf_contigs(path: str) -> list[str]:
    """Contigs that hold records (from the tabix index when present, else from the ##contig header)."""
    import pysam

    if os.path.exists(f"{path}.tbi") or os.path.exists(f"{path}.csi"):
        return list(pysam.TabixFile(path).contigs)
    with pysam.VariantFile(path) as vf:
        return list(vf.header.contigs)


def check_contigs(vcfs: Sequence[str], rg, contig_recoding: dict[str, str] | None) -> None:
    """Fail early, naming the contig, when a VCF's contigs are not in the chosen reference genome."""
    recode = contig_recoding or {}
    for path in vcfs:
        if "://" in path:
            continue
        bad = [c for c in vcf_contigs(path) if recode.get(c, c) not in rg.contigs]
        if bad:
            raise ValueError(
                f"{path}: contig {bad[0]!r} (of {len(bad)} unknown) is not in reference genome {rg.name} "
                f"(contigs {rg.contigs[:4]} ...); choose the matching --reference, or pass --contig-recoding "
                "(e.g. 1->chr1 for a b37-named VCF on GRCh38)"
            )


def _java_reason(err: Exception) -> str:
    """The first line of a Hail/Java error message, without the stack."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(err).__name__


def import_vcf(
    vcfs: Sequence[str],
    out: str,
    reference: str = "GRCh38",
    contig_recoding: dict[str, str] | None = None,
    min_partitions: int | None = None,
    overwrite: bool = False,
) -> dict:
    """Import bgzipped VCF(s), split multi-allelics (split_multi_hts), write `out` (temp name, then rename).

    Returns a small summary: rows (after split), samples, partitions, reference.
    """
    out_path = Path(out)
    vcfs = [str(v) for v in vcfs]
    check_output_not_input([out_path], [*vcfs, reference if reference.endswith(".json") else None])
    remove_leftovers(out_path)  # an interrupted run's temporary folder
    check_replaceable(out_path, overwrite)
    for v in vcfs:
        check_vcf(v)  # truncation, stale index, header: named here, not in a Java stack
    hl = init_hail()
    rg = load_reference(reference)
    check_contigs(vcfs, rg, contig_recoding)
    mt = hl.import_vcf(
        vcfs,
        force_bgz=True,
        array_elements_required=False,
        reference_genome=rg,
        contig_recoding=contig_recoding,
        min_partitions=min_partitions,
    )
    if "GT" not in mt.entry:
        raise ValueError(f"{vcfs[0]}: no FORMAT/GT field (FORMAT fields: {list(mt.entry)})")
    mt = mt.annotate_rows(vcf_locus=mt.locus, vcf_alleles=mt.alleles)
    mt = hl.split_multi_hts(mt)
    tmp = temp_name(out_path)
    try:
        mt.write(tmp)
        replace_output(tmp, out_path, overwrite)
    except BaseException as err:  # Ctrl-C included: no temporary folder left behind
        discard(tmp)
        if type(err).__name__ == "FatalError":  # Hail's Java error: its first line names the problem
            raise ValueError(f"{', '.join(vcfs)}: Hail cannot read the VCF: {_java_reason(err)}") from err
        raise
    written = hl.read_matrix_table(str(out_path))
    n_rows, n_cols = written.count()
    return {
        "out": str(out_path),
        "rows": n_rows,
        "samples": n_cols,
        "partitions": written.n_partitions(),
        "reference": rg.name,
    }
