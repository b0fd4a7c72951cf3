"""The file layer: atomic writes (local, fsspec), recipe metadata, Parquet folders, subject tables, YAML."""

from __future__ import annotations

import fnmatch

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import BaseModel, ConfigDict

from neuro_caduceus.io import (
    RECIPE_KEY,
    TEMP_GLOB,
    atomic_path,
    atomic_writer,
    metadata_json,
    parquet_files,
    parquet_metadata,
    read_sample_list,
    read_table,
    read_yaml_model,
    recipe_from_metadata,
    resolve_parquet_folder,
    temp_name,
    write_atomic,
    write_parquet,
)


def test_temp_name_is_hidden_beside_the_target_and_matched_by_the_glob():
    tmp = temp_name("/data/out/shards/G1.parquet")
    folder, name = tmp.rsplit("/", 1)
    assert folder == "/data/out/shards" and name.startswith(".G1.parquet.tmp-")
    assert fnmatch.fnmatch(name, TEMP_GLOB) and fnmatch.fnmatch(".old.parquet.tmp", TEMP_GLOB)
    assert temp_name("G1.json").startswith(".G1.json.tmp-") and temp_name("a") != temp_name("a")


def test_atomic_writer_replaces_on_success_and_leaves_nothing_on_failure(tmp_path):
    path = tmp_path / "sub" / "f.txt"
    with atomic_writer(path) as fh:
        fh.write("new")
    assert path.read_text() == "new"
    with pytest.raises(RuntimeError), atomic_writer(path) as fh:
        fh.write("half")
        raise RuntimeError("killed")
    assert path.read_text() == "new" and sorted(p.name for p in path.parent.iterdir()) == ["f.txt"]


def test_fsspec_writes_are_atomic_too():
    fs = fsspec.filesystem("memory")
    write_atomic(fs, "/io_test/a.json", '{"a": 1}')
    write_atomic(None, "memory://io_test/b.bin", b"\x00\x01")
    with pytest.raises(ValueError), atomic_writer("/io_test/a.json", "wb", fs) as fh:
        fh.write(b"half")
        raise ValueError("killed")
    assert fs.cat("/io_test/a.json") == b'{"a": 1}' and fs.cat("/io_test/b.bin") == b"\x00\x01"
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls("/io_test", detail=False)) == ["a.json", "b.bin"]
    fs.rm("/io_test", recursive=True)


def test_a_folder_is_replaced_whole(tmp_path):
    out = tmp_path / "export"
    (out / "old").mkdir(parents=True)
    with atomic_path(out) as tmp:
        (tmp / "new").mkdir(parents=True)
    assert [p.name for p in out.iterdir()] == ["new"] and [p.name for p in tmp_path.iterdir()] == ["export"]


def test_recipe_metadata_round_trip_and_parquet_folders(tmp_path):
    table = pa.table({"subject_id": ["s1"]})
    write_parquet(table, tmp_path / "b.parquet", {"recipe_id": "r", "genes": ["G"]})
    write_parquet(table, tmp_path / "a.parquet")
    (tmp_path / ".c.parquet.tmp-0").write_bytes(b"half")
    pq.write_table(table, tmp_path / "_d.parquet")
    files = parquet_files(tmp_path)
    assert [f.rsplit("/", 1)[-1] for f in files] == ["a.parquet", "b.parquet"]
    assert recipe_from_metadata(parquet_metadata(files[1])) == {"recipe_id": "r", "genes": ["G"]}
    assert recipe_from_metadata(parquet_metadata(files[0])) == {}
    with pytest.raises(ValueError, match=r"x\.parquet: metadata key neuro_caduceus\.recipe is not valid"):
        metadata_json({RECIPE_KEY: b"{oops"}, RECIPE_KEY, "x.parquet")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        parquet_files(files[0])


def test_read_table_names_the_file_and_the_column(tmp_path):
    good = tmp_path / "cov.tsv"
    good.write_text("subject_id\tage\n1\t50\n2\tNA\n")
    df = read_table(good)
    assert df["subject_id"].to_list() == ["1", "2"] and df["age"].null_count() == 1
    assert df["age"].dtype.is_integer()  # NA is missing, not a string that turns the column into text
    with pytest.raises(ValueError, match=r"cov\.tsv has no subject id column 'eid' \(columns .*\); map it"):
        read_table(good, "eid", "map it")
    dup = tmp_path / "dup.csv"
    dup.write_text("subject_id,x\na,1\na,2\n")
    with pytest.raises(ValueError, match=r"dup\.csv: 1 subject id\(s\) in column 'subject_id' appear more"):
        read_table(dup)
    with pytest.raises(ValueError, match=r"cov\.xlsx: a subject table must be"):
        (tmp_path / "cov.xlsx").write_text("x")
        read_table(tmp_path / "cov.xlsx")
    with pytest.raises(FileNotFoundError, match="none.tsv: no such file"):
        read_table(tmp_path / "none.tsv")


class _Thing(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str


def test_read_yaml_model_names_the_kind_of_file(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("name: x\ncolour: red\n")
    with pytest.raises(ValueError, match=r"t\.yaml: invalid thing \(colour: Extra .*\); expected key name"):
        read_yaml_model(path, _Thing, what="thing", expected="key name")
    with pytest.raises(ValueError, match=r"t\.yaml: colour: Extra inputs are not permitted$"):
        read_yaml_model(path, _Thing)
    with pytest.raises(FileNotFoundError, match=r"^thing .*none\.yaml does not exist"):
        read_yaml_model(tmp_path / "none.yaml", _Thing, what="thing")


def test_resolve_parquet_folder_prefers_the_named_stage_else_the_only_candidate(tmp_path):
    run = tmp_path / "run"
    for sub in ("matrix", "scores"):
        (run / sub).mkdir(parents=True)
        pq.write_table(pa.table({"x": [1]}), run / sub / "part-0.parquet")
    assert resolve_parquet_folder(run, ("residuals", "scores", "matrix")) == f"{run}/scores"
    with pytest.raises(ValueError, match=r"several subfolders hold Parquet \(\['matrix', 'scores'\]\)"):
        resolve_parquet_folder(run)
    assert resolve_parquet_folder(run / "scores") == f"{run}/scores"
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no Parquet files in this folder or its subfolders"):
        resolve_parquet_folder(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="none: no such folder"):
        resolve_parquet_folder(tmp_path / "none")


def test_read_sample_list_is_the_one_reader_of_sample_lists(tmp_path):
    good = tmp_path / "ids.txt"
    good.write_text("# withdrawn\nS1\n\nS2,2026-01-01\n  S3  \n")
    assert read_sample_list(good) == ["S1", "S2", "S3"]
    repeated = tmp_path / "rep.txt"
    repeated.write_text("S1\nS2\nS1\n")
    with pytest.raises(ValueError, match=r"rep.txt line 3: 'S1' repeats line 1"):
        read_sample_list(repeated)
    empty = tmp_path / "empty.txt"
    empty.write_text("# nobody\n\n")
    with pytest.raises(ValueError, match="lists no samples"):
        read_sample_list(empty, "samples file")
    with pytest.raises(IsADirectoryError, match="is a folder"):
        read_sample_list(tmp_path)
    with pytest.raises(FileNotFoundError, match="sample list .* does not exist"):
        read_sample_list(tmp_path / "missing.txt")
