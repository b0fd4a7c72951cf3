"""CLI: make-checkpoint, embed-fasta, verify-rc (typer CliRunner, real files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from neuro_caduceus.cli import app
from neuro_caduceus.io import MARKER
from neuro_caduceus.model import from_pretrained, save_pretrained
from neuro_caduceus.model.embedder import Embedder
from neuro_caduceus.provenance import read_recipe

runner = CliRunner()
FASTA = ">a first\nACGTACGTNNACGTAGCTAGCTAGCATCGATCGACTGACTAGCTACGACGTT\n>b\nacgtrACGTAGCTAGCTAGCTAGCTAGC\n"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ck") / "tiny"
    res = runner.invoke(app, ["make-checkpoint", "--preset", "tiny-ps", "--seed", "3", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "RANDOM" in res.output
    return out


def test_make_checkpoint_layout(ckpt: Path) -> None:
    assert sorted(p.name for p in ckpt.iterdir()) == [MARKER, "config.json", "model.safetensors"]
    with pytest.warns(UserWarning, match="RANDOM"):
        model = from_pretrained(ckpt)
    assert model.config.rcps and model.config.d_model == 32
    res = runner.invoke(app, ["make-checkpoint", "--preset", "nope", "--out", str(ckpt.parent / "x")])
    assert res.exit_code != 0 and "unknown preset" in res.output


@pytest.mark.filterwarnings("ignore:.*RANDOM weights")
def test_embed_fasta(ckpt: Path, tmp_path: Path) -> None:
    fa = tmp_path / "in.fa"
    fa.write_text(FASTA)
    out = tmp_path / "emb.parquet"
    res = runner.invoke(app, ["embed-fasta", "--checkpoint", str(ckpt), "--fasta", str(fa), "--out", str(out),
                              "--window", "20", "--stride", "20", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    t = pq.read_table(out)
    assert t.column_names == ["id", "length", "embedding"]
    assert t["id"].to_pylist() == ["a", "b"] and t["length"].to_pylist() == [52, 28]
    emb = np.array(t["embedding"].to_pylist(), dtype=np.float32)
    with pytest.warns(UserWarning):
        want = Embedder(from_pretrained(ckpt), device="cpu", window=20, stride=20)
    # the IUPAC code r is read as N (the alphabet policy), lower case as upper case
    np.testing.assert_allclose(emb[1], want.embed("ACGTNACGTAGCTAGCTAGCTAGCTAGC"), rtol=0, atol=1e-6)
    assert "1 IUPAC ambiguity code(s) read as N" in res.output
    assert read_recipe(out) == want.recipe()  # the recipe any artifact carries, read the one way


def test_empty_fasta_fails(ckpt: Path, tmp_path: Path) -> None:
    fa = tmp_path / "empty.fa"
    fa.write_text("")
    res = runner.invoke(app, ["embed-fasta", "--checkpoint", str(ckpt), "--fasta", str(fa),
                              "--out", str(tmp_path / "o.parquet")])
    assert res.exit_code != 0 and "no records" in res.output
    assert not (tmp_path / "o.parquet").exists()


@pytest.mark.filterwarnings("ignore:.*RANDOM weights")
def test_verify_rc_passes_and_catches_a_broken_model(ckpt: Path, tmp_path: Path) -> None:
    fa = tmp_path / "in.fa"
    fa.write_text(FASTA)
    res = runner.invoke(app, ["verify-rc", "--checkpoint", str(ckpt), "--fasta", str(fa), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    # a self-consistent checkpoint whose complement map is the identity is not RC-equivariant
    with pytest.warns(UserWarning):
        model = from_pretrained(ckpt)
    model.config.complement_map = {i: i for i in range(16)}
    backbone = model.caduceus.backbone
    for buf in (backbone.embeddings.word_embeddings.complement_map, model.lm_head.complement_map):
        buf.copy_(torch.arange(16))
    broken = save_pretrained(model, tmp_path / "broken")
    args = ["verify-rc", "--checkpoint", str(broken), "--fasta", str(fa), "--device", "cpu"]
    res = runner.invoke(app, args)
    assert res.exit_code == 1 and "FAIL" in res.output


@pytest.mark.filterwarnings("ignore:.*RANDOM weights")
def test_tiny_dnabert2_preset_embeds_and_verifies(tmp_path: Path) -> None:
    from neuro_caduceus.model import load_encoder, load_tokenizer

    out = tmp_path / "bert"
    res = runner.invoke(app, ["make-checkpoint", "--preset", "tiny-dnabert2", "--out", str(out)])
    assert res.exit_code == 0 and "RANDOM" in res.output
    files = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert files == ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    golden = Path(__file__).parent / "data" / "golden" / "dnabert2_tiny" / "checkpoint"
    assert load_tokenizer(out).encode("ACGTTGCANNAC") == load_tokenizer(golden).encode("ACGTTGCANNAC")
    fa = tmp_path / "in.fa"
    fa.write_text(FASTA)
    emb_out = tmp_path / "emb.parquet"
    res = runner.invoke(app, ["embed-fasta", "--checkpoint", str(out), "--fasta", str(fa), "--out",
                              str(emb_out), "--window", "20", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    with pytest.warns(UserWarning, match="RANDOM"):
        want = load_encoder(out, device="cpu", window=20)
    emb = np.array(pq.read_table(emb_out)["embedding"].to_pylist(), dtype=np.float32)
    assert emb.shape == (2, 64)
    np.testing.assert_allclose(emb[1], want.embed("acgtxACGTAGCTAGCTAGCTAGCTAGC"), rtol=0, atol=1e-5)
    assert read_recipe(emb_out)["encoder"]["family"] == "dnabert2"
    res = runner.invoke(app, ["verify-rc", "--checkpoint", str(out), "--fasta", str(fa), "--device", "cpu",
                              "--window", "20"])
    assert res.exit_code == 0 and res.output.count("DNABERT-2 passes differ") == 2, res.output
