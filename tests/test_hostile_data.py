"""Tiers 1 and 4: hostile or careless data and serving inputs end in one clear line, and nothing half-written.

Each CLI case runs ``c2al-rec`` in-process (``c2al_rec.cli.main.main``) and asserts exit code 2,
a single stderr line naming the file (and row and column where there is one), and that the output
path holds nothing new. The serving cases share one small trained run on all-categorical data
(no dense features) with one hash-mode feature, which also proves zero-dense models train,
export and serve end to end.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from c2al_rec.cli.main import main
from c2al_rec.config import SyntheticConfig, load_config
from c2al_rec.data.dataset import write_parquet
from c2al_rec.data.reader import ParquetReader
from c2al_rec.data.schema import SCHEMA_FILE, load_schema
from c2al_rec.data.synthetic import generate_synthetic
from c2al_rec.io.digest import file_digest
from c2al_rec.serve.artifact import compute_model_id, load_exported
from c2al_rec.train.launch import launch
from tests.data_utils import replace_column, write_tiny
from tests.trained_runs import SMOKE, SPEC

HASHED = "extra_0"  # the feature switched to out_of_range = "hash"
TORCH_LOG_LINE = re.compile(r"^[WI]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ ")


def run_cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(capsys: pytest.CaptureFixture, *argv: str) -> str:
    """Run the CLI, assert exit 2 and exactly one stderr line (no traceback); return that line."""
    rc, _, err = run_cli(capsys, *argv)
    # torch's own once-per-process log lines ("W1126 15:43:49.466000 ... is_fx_tracing ...") are not ours
    lines = [line for line in err.splitlines() if line.strip() and not TORCH_LOG_LINE.match(line)]
    assert rc == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"c2al-rec {argv[0]}: error: ")
    return lines[0]


def leftovers(directory: Path) -> list[str]:
    """Hidden temp files / directories (``.<name>.tmp...``) that a failed write could leave."""
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def flip_byte_in_column(path: Path, column: str) -> None:
    """Flip one byte in the middle of ``column``'s first data page (after the page header)."""
    chunk = pq.read_metadata(path).row_group(0).column(pq.read_schema(path).get_field_index(column))
    start = chunk.data_page_offset
    end = (chunk.dictionary_page_offset or start) + chunk.total_compressed_size
    data = bytearray(path.read_bytes())
    data[(start + end) // 2 + 8] ^= 0x5A
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------------------------------------
# Data: checksums, value ranges, schema, data check
# ---------------------------------------------------------------------------------------------
def test_flipped_byte_in_checksummed_file_is_an_error_naming_the_file(tmp_path: Path, capsys) -> None:
    schema = write_tiny(tmp_path, rows_per_file=(200,), row_group=200)
    f = schema.split_dir() / "part-000.parquet"
    # rewrite with page checksums, plain and uncompressed: the flipped byte lands in an id's bytes
    write_parquet(pq.read_table(f), f, compression="none", use_dictionary=False, row_group_size=200)
    clean = pq.read_table(f)
    flip_byte_in_column(f, "user")
    # without verification the damage reads back as different ids, silently
    assert not pq.read_table(f).equals(clean)
    with pytest.raises(ValueError, match=r"part-000\.parquet.*(CRC|checksum)"):
        list(ParquetReader(tmp_path, None, None, 64, shuffle=False, drop_last=False))
    line = one_line_error(capsys, "data", "check", tmp_path)
    assert "part-000.parquet" in line and "checksum" in line


def test_true_prob_outside_unit_interval_names_file_and_row(tmp_path: Path, capsys) -> None:
    def with_prob(i: int, t: pa.Table) -> pa.Table:
        p = np.full(t.num_rows, 0.25)
        p[17] = 1.5
        return t.append_column("true_prob", pa.array(p))

    write_tiny(tmp_path, rows_per_file=(100,), row_group=50, table_fn=with_prob)
    line = one_line_error(capsys, "data", "check", tmp_path)
    assert "part-000.parquet" in line and "'true_prob'" in line and "row 17" in line and "[0, 1]" in line


def test_duplicated_axis_is_rejected_naming_schema_json(tmp_path: Path, capsys) -> None:
    write_tiny(tmp_path, rows_per_file=(50,))
    d = json.loads((tmp_path / SCHEMA_FILE).read_text())
    d["axes"].append({"name": "value", "kind": "categorical"})
    (tmp_path / SCHEMA_FILE).write_text(json.dumps(d))
    line = one_line_error(capsys, "data", "check", tmp_path)
    assert SCHEMA_FILE in line and "'value'" in line and "twice" in line


def test_zero_byte_file_is_named(tmp_path: Path, capsys) -> None:
    schema = write_tiny(tmp_path, rows_per_file=(50,))
    (schema.split_dir() / "part-001.parquet").write_bytes(b"")
    line = one_line_error(capsys, "data", "check", tmp_path)
    assert "part-001.parquet" in line


def test_data_check_counts_nan_on_a_numeric_axis(tmp_path: Path, capsys) -> None:
    def with_nan(i: int, t: pa.Table) -> pa.Table:
        v = t.column("value").to_numpy().copy()
        v[::4] = np.nan
        return replace_column(t, "value", v)

    write_tiny(tmp_path, rows_per_file=(200,), table_fn=with_nan)
    rc, out, err = run_cli(capsys, "data", "check", tmp_path)
    assert rc == 0, err
    assert "50 of 200 rows are NaN or null (in no cohort)" in out
    axis = out[out.index("axis value") : out.index("axis gender")]
    assert "nan" not in axis.replace("NaN", "")  # quantiles and rates over the finite values
    rows = [int(line.split(" rows ")[1].split()[0]) for line in axis.splitlines() if "positive rate" in line]
    assert sum(rows) == 150  # every non-NaN row in one bin


# ---------------------------------------------------------------------------------------------
# Serving: one small run on all-categorical data with a hash-mode feature
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def no_dense_export(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Synthetic data re-described with no dense features and ``extra_0`` hashed; C2AL trained, exported."""
    root = tmp_path_factory.mktemp("no_dense")
    data = root / "data"
    generate_synthetic(data, SyntheticConfig(rows=6000, seed=3, num_sparse=10, max_table_size=500, num_dense=3))
    d = json.loads((data / SCHEMA_FILE).read_text())
    d["dense"] = []  # the dense columns stay in the files; the schema no longer lists them
    for f in d["sparse"]:
        if f["name"] == HASHED:
            f["out_of_range"] = "hash"
    (data / SCHEMA_FILE).write_text(json.dumps(d))
    overrides = [
        f"--data.path={data}",
        f"--cohorts.spec={SPEC}",
        "--cohorts.enabled=true",
        "--train.max_steps=12",
        "--train.eval_every=0",
        "--train.diagnostics_every=5",  # the gradient diagnostics run on a model without dense parameters
        "--checkpoint.every_steps=0",
        "--train.log_every=0",
    ]
    launch(load_config(SMOKE, overrides), root / "run", nproc_per_node=1)
    assert main(["export", "--checkpoint", str(root / "run"), "--out", str(root / "export")]) == 0
    return {"data": data, "run": root / "run", "export": root / "export", "root": root}


def test_no_dense_features_train_export_and_predict(no_dense_export, tmp_path: Path, capsys) -> None:
    exp = no_dense_export["export"]
    meta = json.loads((exp / "metadata.json").read_text())
    assert meta["dense"] == [] and meta["dense_dim"] == 0 and meta["parity"]["max_abs_diff"] <= 1e-5
    sample = torch.load(exp / "sample_input.pt", weights_only=True)
    assert sample["dense"].shape == (8, 0)
    model = load_exported(exp)
    assert not [k for k in model.module.state_dict() if "dense_arch" in k]
    probs = model.predict(sample)
    assert probs.shape == (8,) and bool(((probs > 0) & (probs < 1)).all())
    out = tmp_path / "preds.parquet"
    rc, stdout, err = run_cli(capsys, "predict", "--model", exp, "--data", no_dense_export["data"], "--out", out)
    assert rc == 0, err
    preds = pq.read_table(out)
    test = pq.read_table(load_schema(no_dense_export["data"]).split_dir("test"))
    assert preds.column("row_id").to_pylist() == test.column("row_id").to_pylist()
    assert ((preds.column("prob").to_numpy() > 0) & (preds.column("prob").to_numpy() < 1)).all()


def _test_file(no_dense_export) -> Path:
    return sorted(load_schema(no_dense_export["data"]).split_dir("test").glob("*.parquet"))[0]


def test_exported_model_rejects_negative_ids_in_hash_mode(no_dense_export) -> None:
    model = load_exported(no_dense_export["export"])
    sample = torch.load(no_dense_export["export"] / "sample_input.pt", weights_only=True)
    large = dict(sample, **{f"{HASHED}.values": sample[f"{HASHED}.values"] + 10_000})
    assert model.predict(large).shape == (8,)  # hash mode folds large ids, as the reader does
    negative = dict(sample, **{f"{HASHED}.values": -sample[f"{HASHED}.values"] - 1})
    with pytest.raises(Exception, match=f"sparse feature '{HASHED}': negative id"):
        model.predict(negative)


@pytest.mark.parametrize(
    "column, value, what",
    [(HASHED, -3, "negative id"), ("user_id", 10**6, "outside its table"), ("ad_id", -1, "negative id")],
)
def test_predict_rejects_what_training_rejects_naming_file_and_row(
    no_dense_export, tmp_path: Path, capsys, column: str, value: int, what: str
) -> None:
    t = pq.read_table(_test_file(no_dense_export))
    ids = t.column(column).to_numpy().copy()
    ids[123] = value
    bad = tmp_path / "bad.parquet"
    pq.write_table(replace_column(t, column, ids, pa.int64()), bad, row_group_size=100)
    out = tmp_path / "out" / "preds.parquet"
    args = ["predict", "--model", no_dense_export["export"], "--data", bad, "--out", out, "--batch-size", "50"]
    line = one_line_error(capsys, *args)
    assert "bad.parquet" in line and f"'{column}'" in line and "row 123" in line and what in line
    assert str(value) in line
    assert not out.exists() and leftovers(out.parent) == []


def test_corrupt_or_empty_model_file_is_one_line(no_dense_export, tmp_path: Path, capsys) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(no_dense_export["export"], model_dir)
    out = tmp_path / "preds.parquet"
    data = _test_file(no_dense_export)
    meta = json.loads((model_dir / "metadata.json").read_text())
    for payload in (b"", b"PK\x03\x04 not really a zip", (model_dir / "model.pt").read_bytes()[:5000]):
        (model_dir / "model.pt").write_bytes(payload)
        line = one_line_error(capsys, "predict", "--model", model_dir, "--data", data, "--out", out)
        assert "model.pt" in line and "but metadata.json lists" in line  # the artifact's size check first
        # a damaged file that was exported so: its hash and model id in the metadata
        meta["artifacts"]["model.pt"] = file_digest(model_dir / "model.pt")
        meta["model_id"] = compute_model_id(model_dir, model_dir / "model.pt")
        (model_dir / "metadata.json").write_text(json.dumps(meta))
        line = one_line_error(capsys, "predict", "--model", model_dir, "--data", data, "--out", out)
        assert "model.pt" in line and "not a loadable TorchScript model" in line
        assert not out.exists()
    (model_dir / "metadata.json").write_text("{not json")
    line = one_line_error(capsys, "predict", "--model", model_dir, "--data", data, "--out", out)
    assert "metadata.json" in line


def test_zero_row_input_gives_an_empty_predictions_file(no_dense_export, tmp_path: Path, capsys) -> None:
    t = pq.read_table(_test_file(no_dense_export))
    empty = tmp_path / "empty.parquet"
    pq.write_table(t.slice(0, 0), empty)
    out = tmp_path / "preds.parquet"
    rc, stdout, err = run_cli(capsys, "predict", "--model", no_dense_export["export"], "--data", empty, "--out", out)
    assert rc == 0, err
    assert "0 rows" in stdout
    preds = pq.read_table(out)
    assert preds.num_rows == 0 and {"prob", "label", "row_id", "user_value"} <= set(preds.column_names)
    assert preds.schema.field("prob").type == pa.float32()


def test_zero_byte_and_flipped_predict_inputs_are_named(no_dense_export, tmp_path: Path, capsys) -> None:
    exp, out = no_dense_export["export"], tmp_path / "preds.parquet"
    zero = tmp_path / "zero.parquet"
    zero.write_bytes(b"")
    line = one_line_error(capsys, "predict", "--model", exp, "--data", zero, "--out", out)
    assert "zero.parquet" in line
    flipped = tmp_path / "flipped.parquet"
    shutil.copy(_test_file(no_dense_export), flipped)  # written by the generator: with page checksums
    flip_byte_in_column(flipped, "user_id")
    line = one_line_error(capsys, "predict", "--model", exp, "--data", flipped, "--out", out)
    assert "flipped.parquet" in line and "checksum" in line
    assert not out.exists() and leftovers(tmp_path) == []


def test_out_paths_of_the_wrong_kind_are_refused(no_dense_export, tmp_path: Path, capsys) -> None:
    exp, run = no_dense_export["export"], no_dense_export["run"]
    # predict --out is a directory
    out_dir = tmp_path / "preds"
    out_dir.mkdir()
    line = one_line_error(capsys, "predict", "--model", exp, "--data", no_dense_export["data"], "--out", out_dir)
    assert "preds" in line and "is a directory" in line
    assert list(out_dir.iterdir()) == []
    # export --out is an existing file
    a_file = tmp_path / "export.txt"
    a_file.write_text("keep me")
    line = one_line_error(capsys, "export", "--checkpoint", run, "--out", a_file)
    assert "export.txt" in line and "existing file" in line
    assert a_file.read_text() == "keep me"
    # export --out is a directory holding something else (here: the run itself)
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    line = one_line_error(capsys, "export", "--checkpoint", run, "--out", run)
    assert "not an exported model" in line
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before
    assert leftovers(tmp_path) == [] and leftovers(run.parent) == []
