"""Window spans over a sequence: the one tiling rule shared by the embedder and the gene regions.

Why its own module: `model` knows nothing of genomes and `genome` nothing of the model, yet a sequence
embedded whole and a gene region embedded window by window must be cut the same way.
"""

from __future__ import annotations


def tile(length: int, window: int | None, stride: int | None) -> list[tuple[int, int]]:
    """[start, end) windows covering 0..length: starts 0, stride, ...; the last one may be shorter.

    No window (or a length within one window) gives the single span (0, length); `stride` defaults to
    `window`.
    """
    if window is None or length <= window:
        return [(0, length)]
    stride = stride or window
    spans = []
    for start in range(0, length, stride):
        spans.append((start, min(start + window, length)))
        if start + window >= length:
            break
    return spans
