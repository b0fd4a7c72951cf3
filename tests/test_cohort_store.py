"""The window store, window jobs and the stall watchdog, without Ray.

Oracles: numpy arrays written and read back; sequences built directly with genome.build_sequence.
"""

from __future__ import annotations

import io
import time
import uuid
from contextlib import redirect_stderr

import fsspec
import numpy as np
import pytest

from neuro_caduceus.cohort.store import WindowStore, key_index

IDENTITY = {"checkpoint_sha256": "a" * 64, "dtype": "float32", "window": 512, "stride": 512,
            "pooling": "mean", "model_code": "0123"}


@pytest.fixture
def store_url() -> str:
    return f"memory://store-{uuid.uuid4().hex[:8]}"


def test_commit_and_lookup_round_trip(store_url):
    store = WindowStore(store_url, IDENTITY).open()
    rng = np.random.default_rng(0)
    sums = rng.normal(size=(3, 4))
    store.commit(["k1", "k2", "k3"], np.array([5, 6, 7]), sums)
    store.commit(["k4"], np.array([9]), sums[:1] * 2)
    index = key_index(store_url, "t1")
    got, lengths = store.lookup(["k4", "k2"], index)
    np.testing.assert_array_equal(got, np.vstack([sums[0] * 2, sums[1]]))
    np.testing.assert_array_equal(lengths, [9, 6])
    assert all(store.check(p) is None for p in store.batch_files())
    with pytest.raises(KeyError, match="k9"):
        store.lookup(["k9"], index)


def test_store_of_another_identity_is_refused_naming_both(store_url):
    WindowStore(store_url, IDENTITY).open()
    other = {**IDENTITY, "checkpoint_sha256": "b" * 64}
    with pytest.raises(FileExistsError) as err:
        WindowStore(store_url, other).open()
    assert "a" * 64 in str(err.value) and "b" * 64 in str(err.value)


def test_half_written_batch_is_never_read(store_url):
    store = WindowStore(store_url, IDENTITY).open()
    store.commit(["k1"], np.array([5]), np.ones((1, 4)))
    fs, root = fsspec.core.url_to_fs(store_url)
    with fs.open(f"{root}/batches/.{uuid.uuid4().hex}.parquet.tmp", "wb") as f:
        f.write(b"PAR1 half a batch")  # a writer killed before its rename
    assert len(store.batch_files()) == 1
    assert set(key_index(store_url, "t2")) == {"k1"}
    assert store.remove_partial() == 1


def test_damaged_batch_is_detected(store_url):
    store = WindowStore(store_url, IDENTITY).open()
    store.commit(["k1", "k2"], np.array([5, 6]), np.ones((2, 4)))
    path = store.batch_files()[0]
    data = store.fs.cat_file(path)
    store.fs.pipe_file(path, data[: len(data) // 2])
    assert "unreadable" in store.check(path)


def test_window_job_rebuilds_the_same_sequence(tmp_path):
    """A job carries only coordinates and applied variants; the window it describes is the same sequence."""
    from neuro_caduceus.cohort.plan import content_key
    from neuro_caduceus.cohort.window_jobs import BatchPacker, job, job_window
    from neuro_caduceus.genome.fasta import Reference
    from neuro_caduceus.genome.haplotypes import build_sequence
    from neuro_caduceus.genome.regions import Window
    from neuro_caduceus.genome.variant_schema import Variant

    rng = np.random.default_rng(1)
    seq = "".join(rng.choice(list("ACGT"), 400))
    (tmp_path / "g.fa").write_text(f">c1\n{seq}\n")
    ref = Reference(str(tmp_path / "g.fa"))
    window = Window("G", 2, "c1", ((10, 60), (100, 180)), True)
    variants = [Variant("c1", 21, seq[20], "T" if seq[20] != "T" else "G"),
                Variant("c1", 111, seq[110:113], seq[110]), Variant("c1", 151, seq[150], seq[150] + "AC")]
    built = build_sequence(ref, window, variants)
    one = job(content_key(built.sequence), "G", window, len(built.sequence), built.applied)
    again_window, again_variants = job_window(one)
    assert again_window == window
    assert build_sequence(ref, again_window, again_variants).sequence == built.sequence
    packer = BatchPacker(tokens=2 * len(built.sequence))
    batches = [b for _ in range(5) for b in packer.add(one)] + list(packer.flush())
    assert [len(b.column("jobs")[0]) for b in batches] == [2, 2, 1]


def test_stall_watchdog_says_what_it_waits_for():
    from neuro_caduceus.cohort.progress import Progress

    err = io.StringIO()
    with redirect_stderr(err):
        progress = Progress(3, quiet=True, stall_s=0.1, waiting=lambda phase: f"nothing free for {phase}")
        progress.start_phase("embedding windows", 3)
        for _ in range(200):
            if "no progress" in err.getvalue():
                break
            time.sleep(0.05)
        progress.close()
    assert "no progress for" in err.getvalue() and "nothing free for embedding windows" in err.getvalue()
