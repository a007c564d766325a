"""`c2al-rec data ...` end to end on small inputs (tier 4, in process)."""

from __future__ import annotations

from pathlib import Path

from c2al_rec.cli.main import main
from c2al_rec.data import ParquetReader, load_schema


def test_synthetic_then_check(tmp_path: Path, capsys) -> None:
    out = tmp_path / "syn"
    rc = main(["data", "synthetic", "--rows", "3000", "--out", str(out), "--seed", "1", "--max-table-size", "500"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "split train: rows" in text and "Bayes NE" in text and "axis user_value (numeric)" in text
    assert "axis age_bucket (categorical) [sensitive]" in text
    s = load_schema(out)
    assert max(f.num_embeddings for f in s.sparse) == 500
    assert len(ParquetReader(out, split="valid", batch_size=32)) > 0
    assert main(["data", "check", str(out), "--split", "test"]) == 0
    assert "split test: rows" in capsys.readouterr().out


def test_check_fails_with_the_readers_error(tmp_path: Path, capsys) -> None:
    out = tmp_path / "syn"
    assert main(["data", "synthetic", "--rows", "2000", "--out", str(out), "--max-table-size", "100"]) == 0
    capsys.readouterr()
    victim = sorted((out / "valid").glob("*.parquet"))[0]
    victim.write_bytes(victim.read_bytes()[:100])
    assert main(["data", "check", str(out)]) == 2
    err = capsys.readouterr().err
    assert "c2al-rec data: error:" in err and f"{victim}: not a readable Parquet file" in err
    assert main(["data", "check", str(tmp_path / "nothing")]) == 2
    assert "schema.json does not exist" in capsys.readouterr().err
