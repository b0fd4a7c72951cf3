"""The driver's one progress line (tqdm) and the stall watchdog that says what the job is waiting for."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable


class Progress:
    """genes, windows, tokens/s and an ETA on one line; after `stall_s` without progress, one line on what
    the job waits for (repeated every `stall_s` while it lasts)."""

    def __init__(self, total: int, quiet: bool, stall_s: float, waiting: Callable[[str], str]):
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="gene", disable=quiet, file=sys.stderr, dynamic_ncols=True)
        self.waiting, self.stall_s = waiting, stall_s
        self.windows = self.tokens = 0
        self.phase = "starting"
        self.t0 = self.last = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def start_phase(self, phase: str, total: int) -> None:
        self.phase, self.last = phase, time.monotonic()
        self.bar.reset(total=total)
        self.bar.set_description(phase)

    def step(self, genes: int = 0, windows: int = 0, tokens: int = 0) -> None:
        self.windows += windows
        self.tokens += tokens
        self.last = time.monotonic()
        rate = self.tokens / max(1e-9, self.last - self.t0)
        self.bar.set_postfix_str(f"windows {self.windows:,}, {rate:,.0f} tok/s", refresh=False)
        self.bar.update(genes)

    def close(self) -> None:
        """Stop the watchdog before the caller ends Ray (it may be asking Ray what is free)."""
        self._stop.set()
        self._thread.join(timeout=10.0)
        self.bar.close()

    def _watch(self) -> None:
        warned = 0.0
        while not self._stop.wait(min(5.0, self.stall_s)):
            idle = time.monotonic() - self.last
            if idle >= self.stall_s and time.monotonic() - warned >= self.stall_s:
                warned = time.monotonic()
                print(f"no progress for {idle:.0f} s while {self.phase}: {self.waiting(self.phase)}",
                      file=sys.stderr, flush=True)
