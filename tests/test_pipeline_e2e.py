"""Tier 4: `c2al-rec pipeline` end to end on a tiny dataset (2-rank training stages), skip-done, failures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from c2al_rec.cli.main import main

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "--data.synthetic.rows=30000",
    "--data.synthetic.max_table_size=2000",
    "--data.batch_size=256",
    "--data.shuffle_buffer=4096",
    "--model.embedding_dim=8",
    "--model.fm.mlp=[16]",
    "--model.primary_head=[16]",
    "--train.max_steps=20",
    "--train.warmup_steps=5",
    "--train.log_every=0",
    "--checkpoint.every_steps=0",
    "--discover.min_rows=50",
    "--discover.min_positives=5",
    "--pipeline.resamples=100",
    "--export.parity_rows=1024",
]


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("pipeline")
    args = [
        "pipeline",
        "--config",
        str(REPO / "launch/configs/demo.toml"),
        "--out",
        str(root / "out"),
        f"--data.path={root / 'data'}",
        *TINY,
    ]
    assert main(args) == 0
    return root / "out", args


def test_all_eight_stages_write_their_outputs(demo_out, capsys) -> None:
    out, _ = demo_out
    for path in (
        "baseline/metrics.json",
        "cohorts.json",
        "lambda_0.1/metrics.json",
        "selection.json",
        "eval/eval.json",
        "eval/eval.md",
        "eval/ne_diff.png",
        "eval/attention.png",
        "eval/layer_weights.png",
        "report.md",
        "export/model.pt",
        "predictions.parquet",
    ):
        assert (out / path).is_file(), path
    assert json.loads((out / "lambda_0.1/metrics.json").read_text())["c2al"] is True
    assert json.loads((out / "baseline/metrics.json").read_text())["c2al"] is False
    ev = json.loads((out / "eval/eval.json").read_text())
    assert "ne_diff" in ev["groups"]["overall"] and ev["groups"]["overall"]["ci_kind"] == "rows"
    report = (out / "report.md").read_text()
    assert "One seed cannot show significance" in report and "attention" in report
    meta = json.loads((out / "export/metadata.json").read_text())
    assert meta["parity"]["max_abs_diff"] <= 1e-5
    # the card says what was chosen, by which rule, with every candidate's valid figures and the test figures
    sel = meta["selection"]
    assert set(sel["candidates"]) == {"baseline", "lambda_0.1"} and not sel["forced"] and sel["objective"] == "overall"
    assert sel["rule"].startswith("A candidate passes when") and sel["chosen"] in sel["candidates"]
    assert meta["trained_with_c2al"] == (sel["chosen"] == "lambda_0.1")
    assert meta["source_checkpoint"].startswith(str((out / sel["runs"][sel["chosen"]]).resolve()))
    for g in ("overall", "head", "tail"):
        assert sel["test"][g] == {k: ev["groups"][g][k] for k in ("ne", "ne_diff", "ci95")}
    assert "## Selection on the valid split" in report and f"**{sel['chosen']}**" in report
    assert pq.read_metadata(out / "predictions.parquet").num_rows > 1000


def test_skip_done_skips_every_stage(demo_out, capsys) -> None:
    out, args = demo_out
    before = (out / "lambda_0.1/metrics.json").stat().st_mtime
    assert main(args + ["--skip-done"]) == 0
    text = capsys.readouterr().out
    assert text.count("done already") == 8 and "report:" in text and "NE_diff" in text and "chosen model:" in text
    assert (out / "lambda_0.1/metrics.json").stat().st_mtime == before


def test_failed_stage_stops_and_keeps_earlier_outputs(demo_out, tmp_path: Path, capsys) -> None:
    out, args = demo_out
    bad = list(args)
    bad[bad.index("--out") + 1] = str(tmp_path / "o")
    bad += ["--skip-done", "--discover.axes=['no_such_axis:categorical']"]
    (tmp_path / "o").mkdir()
    shutil.copytree(out / "baseline", tmp_path / "o" / "baseline")  # stages 1-2 done already
    assert main(bad) == 2
    err = capsys.readouterr().err
    assert "stage 3/8 'discover' failed" in err and "no_such_axis" in err
    assert (tmp_path / "o" / "baseline" / "metrics.json").is_file() and not (tmp_path / "o" / "cohorts.json").exists()


def test_selection_reads_valid_figures_and_force_overrides(demo_out, tmp_path: Path, capsys) -> None:
    """The select stage feeds the rule each candidate's VALID evaluation (never the test split's), and
    --select.force exports the named candidate with a warning recorded in the card."""
    from c2al_rec.cohorts.spec_file import load_cohort_spec
    from c2al_rec.workflows.evaluate import evaluate_runs

    out, args = demo_out
    record = json.loads((out / "selection.json").read_text())
    spec = load_cohort_spec(out / "cohorts.json")
    data = args[args.index("--out") + 2].split("=", 1)[1]
    for split in ("valid", "test"):
        got = evaluate_runs([out / "lambda_0.1"], [out / "baseline"], data, split, spec, resamples=10)["groups"]
        same = got["overall"]["ne"] == pytest.approx(record["candidates"]["lambda_0.1"]["valid"]["overall"]["ne"])
        assert same == (split == "valid"), split
    # force the candidate the rule did not choose; the stages after select rerun on the same trained runs
    other = "baseline" if record["chosen"] == "lambda_0.1" else "0.1"
    forced = tmp_path / "forced"
    shutil.copytree(
        out, forced, ignore=shutil.ignore_patterns("selection.json", "eval", "export", "predictions.parquet")
    )
    fargs = list(args)
    fargs[fargs.index("--out") + 1] = str(forced)
    assert main(fargs + ["--skip-done", f"--select.force={other}"]) == 0
    cap = capsys.readouterr()
    assert f"WARNING: --select.force={other} exports" in cap.err and "FORCED" in cap.out
    sel = json.loads((forced / "export/metadata.json").read_text())["selection"]
    assert sel["forced"] and sel["chosen"] != record["chosen"] and sel["rule_choice"] == record["chosen"]
