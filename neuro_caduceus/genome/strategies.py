"""Haplotype strategies: how a subject's sequences are built from its calls, and how many each subject has.

Why one place: the strategy names, their haplotype count (ploidy) and the message for a wrong name are
used by the VCF and Hail readers, `personalize`, the cohort job and its recipe; each keeps the same meaning.
- `reference`: every subject carries the reference (1 haplotype);
- `consensus`: one haplotype with every ALT of the subject (bcftools consensus -H A);
- `diploid`: GT alleles to haplotypes 1 and 2 in written order (-H 1 / -H 2);
- `additive` (cohort job only): phase-free; reads the calls as `diploid` (dosages need both haplotypes).
"""

from __future__ import annotations

PLOIDY = {"reference": 1, "consensus": 1, "diploid": 2, "additive": 2}
STRATEGIES = ("reference", "consensus", "diploid")  # those that build haplotype sequences
COHORT_STRATEGIES = (*STRATEGIES, "additive")


def check_strategy(strategy: str, choices: tuple[str, ...] = STRATEGIES, name: str = "strategy") -> str:
    """`strategy` if it is one of `choices`, else a ValueError naming the option and the choices."""
    if strategy not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {strategy!r}")
    return strategy


def n_haps(strategy: str) -> int:
    """Haplotypes per subject (the ploidy the strategy embeds)."""
    return PLOIDY[check_strategy(strategy, COHORT_STRATEGIES)]


def calls_strategy(strategy: str) -> str:
    """The sequence strategy whose haplotypes a strategy reads from the calls (`additive` reads `diploid`)."""
    return "diploid" if check_strategy(strategy, COHORT_STRATEGIES) == "additive" else strategy
