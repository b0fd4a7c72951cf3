"""The window rule: a sequence's embedding is the sum of its windows' sums over the sum of their lengths.

Why one function: the cohort's haplotypes, the additive strategy's single variants and the pilot's variants
and haplotypes are all the reference with some windows replaced, so each is the reference's pooled sum with
those windows' sums swapped in (exact, no re-embedding of the unchanged windows).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def window_means(sums: np.ndarray, lengths: np.ndarray, ref_slots: np.ndarray,
                 replacements: Sequence[Sequence[tuple[int, int]]]) -> tuple[np.ndarray, np.ndarray]:
    """(reference embedding [d], one embedding per replacement list [n, d]) in float64.

    `sums` [n_slots, d] and `lengths` [n_slots] are pooled window sums; `ref_slots[k]` is the slot of
    reference window k; `replacements[i]` lists (window k, slot) pairs: the windows sequence i changes and
    their content.
    """
    ref_sum = sums[ref_slots].sum(axis=0)
    ref_len = int(lengths[ref_slots].sum())
    out = np.empty((len(replacements), sums.shape[1]))
    for i, repl in enumerate(replacements):
        total, n = ref_sum.copy(), ref_len
        for window, slot in repl:
            ref_slot = ref_slots[window]
            total += sums[slot] - sums[ref_slot]
            n += int(lengths[slot] - lengths[ref_slot])
        out[i] = total / n
    return ref_sum / ref_len, out
