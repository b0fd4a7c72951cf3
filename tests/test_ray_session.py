"""dataset_batches: a driver loop left early (Ctrl-C, an error) leaves no Ray Data reader running."""

from __future__ import annotations

import threading
import time

import pytest

from neuro_caduceus.ray_session import dataset_batches


def _readers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(("iter_threaded", "StreamingExecutor-"))]


def test_a_loop_left_early_waits_for_the_block_readers(ray_session) -> None:
    """Left after the first batch, while the next block is still being read: on the way out the readers
    have ended (one still in a Ray call when the caller's ray.shutdown() comes ends the process with 1)."""
    import ray

    class Slow:  # defined here: Ray's workers get it by value, they cannot import a test module
        def __call__(self, batch: dict) -> dict:
            time.sleep(0.3)
            return batch

    ds = ray.data.range(40, override_num_blocks=20).map_batches(
        Slow, compute=ray.data.ActorPoolStrategy(size=1), batch_size=None)
    seen = 0
    with pytest.raises(KeyboardInterrupt), dataset_batches(ds, batch_size=None) as batches:
        for batch in batches:
            seen += len(batch["id"])
            assert _readers(), "the loop is read by Ray Data's reader threads"
            raise KeyboardInterrupt
    assert seen == 2
    assert not [t for t in _readers() if t.is_alive()]
