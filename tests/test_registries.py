"""Tier 1: the pluggable kinds. Each registry's keys equal the names declared in ``c2al_rec.config``,
the names validate the config, and every registered implementation passes the same checks (a new
DHEN module type, disparity metric or public dataset is covered here without editing this file).
"""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from c2al_rec.config import (
    DHEN_MODULE_TYPES,
    DISPARITY_METRICS,
    ConfigError,
    ModelConfig,
    load_config,
    load_config_dict,
)
from c2al_rec.config import legacy as legacy_mod
from c2al_rec.modules.dhen import DHEN, build_interaction
from c2al_rec.modules.interactions import INTERACTIONS

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------- DHEN module types
def test_dhen_module_names_are_the_registry_keys() -> None:
    assert sorted(INTERACTIONS) == sorted(DHEN_MODULE_TYPES)
    for name in DHEN_MODULE_TYPES:
        settings = getattr(ModelConfig(), name)
        assert dataclasses.is_dataclass(settings), f"model.{name} must be a settings table"


@pytest.mark.parametrize("name", DHEN_MODULE_TYPES)
def test_every_module_type_maps_tokens_to_tokens_and_trains(name: str) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(embedding_dim=8, dhen_layers=[[name]])
    module = build_interaction(name, 6, cfg, None)
    assert isinstance(module, INTERACTIONS[name])
    x = torch.randn(3, 6, 8, requires_grad=True)
    y = module(x)
    assert y.shape == (3, module.num_out_tokens, 8)
    y.square().mean().backward()
    assert x.grad is not None and all(p.grad is not None for p in module.parameters())
    # the DHEN stack of this type alone builds on meta (DMP materialises it) and runs on CPU
    meta = DHEN(6, cfg, torch.device("meta"))
    assert all(p.device.type == "meta" for p in meta.parameters())
    assert DHEN(6, cfg)(torch.randn(2, 6, 8)).shape == (2, meta.num_out_tokens, 8)


def test_a_wrong_module_name_fails_at_config_load_naming_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, ['--model.dhen_layers=[["fm", "fmm"]]'])
    msg = str(err.value)
    assert "model.dhen_layers[0][1]" in msg and "'fmm'" in msg
    assert all(repr(name) in msg for name in DHEN_MODULE_TYPES)
    with pytest.raises(ConfigError, match=r"model.dhen_layers\[0\]\[0\]: unknown module 'mlp'"):
        ModelConfig(dhen_layers=[["mlp"]])  # built in code: __post_init__ checks too


def test_c2al_rec_config_rejects_a_wrong_module_name() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "c2al_rec.cli", "config", '--model.dhen_layers=[["fm", "lineer"]]'],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "'lineer'" in proc.stderr and "'linear'" in proc.stderr and "'attention'" in proc.stderr


def test_attention_heads_must_divide_the_embedding_dim_when_attention_is_used() -> None:
    flags = ["--model.embedding_dim=8", "--model.attention.heads=3"]
    with pytest.raises(ConfigError, match="model.attention.heads = 3 must divide model.embedding_dim = 8"):
        load_config(None, [*flags, "--model.dhen_layers=[['attention']]"])
    load_config(None, flags)  # attention unused: fine


# ------------------------------------------------------------------------------------------- legacy keys
@pytest.fixture
def fresh_announcements(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(legacy_mod, "_announced", set())


LEGACY_VALUES = {"fm_attention": "static", "fm_kernel": "reference", "fm_mlp": [7, 5]}


@pytest.mark.parametrize("old", sorted(ModelConfig.LEGACY_KEYS))
def test_every_flat_key_still_loads_with_one_deprecation_line(
    old: str, tmp_path: Path, capsys: pytest.CaptureFixture, fresh_announcements: None
) -> None:
    sub, name = ModelConfig.LEGACY_KEYS[old]
    value = LEGACY_VALUES.get(old, 4)
    toml = tmp_path / "old.toml"
    toml.write_text(f"[model]\n{old} = {value!r}\n".replace("'", '"'))
    for _ in range(2):  # a second load in the same process says nothing more
        cfg = load_config(toml)
        assert getattr(getattr(cfg.model, sub), name) == value
    from_dict = load_config_dict({"model": {old: value}}, "train_state.json")  # a stored run config
    from_flag = load_config(None, [f"--model.{old}={value!r}".replace("'", '"')])
    assert getattr(getattr(from_dict.model, sub), name) == value == getattr(getattr(from_flag.model, sub), name)
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"c2al-rec: {toml}: 'model.{old}' is deprecated, write 'model.{sub}.{name}' instead"]


def test_old_and_new_spelling_together_is_an_error(tmp_path: Path, fresh_announcements: None) -> None:
    toml = tmp_path / "both.toml"
    toml.write_text("[model]\nfm_rank = 4\n[model.fm]\nrank = 5\n")
    with pytest.raises(ConfigError, match="both 'model.fm_rank' .deprecated. and 'model.fm.rank' are set"):
        load_config(toml)
    # a flag overrides the file whichever spelling either uses
    assert load_config(None, ["--model.fm_rank=6"]).model.fm.rank == 6
    toml.write_text("[model]\nfm_rank = 4\n")
    assert load_config(toml, ["--model.fm.rank=6"]).model.fm.rank == 6


def test_bundled_configs_use_the_module_tables(capsys: pytest.CaptureFixture, fresh_announcements: None) -> None:
    for path in sorted((ROOT / "launch" / "configs").glob("*.toml")):
        load_config(path)
    assert capsys.readouterr().err == ""


# ------------------------------------------------------------------------------------- disparity metrics
def test_metric_names_are_the_registry_keys() -> None:
    from c2al_rec.cohorts.divergences import METRICS

    assert sorted(METRICS) == sorted(DISPARITY_METRICS)


@pytest.mark.parametrize("metric", DISPARITY_METRICS)
def test_every_metric_is_zero_on_equal_samples_and_grows_with_the_shift(metric: str) -> None:
    import numpy as np

    from c2al_rec.cohorts.divergences import METRICS, disparity_score, prediction_disparity

    assert metric in METRICS
    rng = np.random.default_rng(0)
    base = 1 / (1 + np.exp(-rng.normal(-3, 1, 4000)))
    same = prediction_disparity(base, base.copy())
    near = prediction_disparity(base, 1 / (1 + np.exp(-rng.normal(-2.9, 1, 4000))))
    far = prediction_disparity(base, 1 / (1 + np.exp(-rng.normal(-2, 1, 4000))))
    fields = METRICS[metric].compute(np.ones(2) / 2, np.ones(2) / 2, base, base)
    assert set(fields) <= set(same), "a metric's fields are recorded in every pair"
    assert disparity_score(same, metric) == pytest.approx(0, abs=1e-6)
    assert disparity_score(near, metric) < disparity_score(far, metric)


def test_a_wrong_metric_name_fails_at_config_load_naming_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, ["--discover.metric=l2"])
    assert "discover.metric" in str(err.value) and all(repr(m) in str(err.value) for m in DISPARITY_METRICS)


# --------------------------------------------------------------------------------------- public datasets
def test_public_dataset_names_are_the_registry_keys() -> None:
    from c2al_rec.config import PUBLIC_DATASETS
    from c2al_rec.data.public import CONVERTERS

    assert sorted(CONVERTERS) == sorted(PUBLIC_DATASETS)


@pytest.mark.parametrize("name", sorted(__import__("c2al_rec.config", fromlist=["x"]).PUBLIC_DATASETS))
def test_every_public_dataset_has_a_data_verb_and_a_config_value(name: str, tmp_path: Path) -> None:
    from c2al_rec.cli.main import build_verb_parser
    from c2al_rec.config import PUBLIC_DATASETS

    argv = [name, "--out", str(tmp_path / "d"), "--source", str(tmp_path / "raw")]
    argv += ["--seed", "3"] if PUBLIC_DATASETS[name].seeded else []
    args = build_verb_parser("data").parse_args(argv)
    assert args.data_cmd == name and args.out == str(tmp_path / "d")
    assert load_config(None, [f"--data.public={name}"]).data.public == name


def test_a_wrong_public_dataset_name_fails_at_config_load() -> None:
    from c2al_rec.config import PUBLIC_DATASETS

    with pytest.raises(ConfigError) as err:
        load_config(None, ["--data.public=criteo"])
    assert "data.public" in str(err.value) and all(repr(n) in str(err.value) for n in PUBLIC_DATASETS)


def test_pipeline_datasets_are_synthetic_and_the_public_ones_with_a_bundled_config() -> None:
    from c2al_rec.config import PUBLIC_DATASETS
    from c2al_rec.config.bundled import BUNDLED_DATASETS

    shipped = {n for n in PUBLIC_DATASETS if (ROOT / "launch" / "configs" / f"{n}.toml").is_file()}
    assert set(BUNDLED_DATASETS) == {"synthetic", *shipped}


# ----------------------------------------------------------------------- short flags as config aliases
def test_discover_flags_are_aliases_of_the_discover_section() -> None:
    from c2al_rec.cli.discover import FIELD_FLAGS
    from c2al_rec.cli.main import build_verb_parser
    from c2al_rec.cli.options import field_overrides

    argv = ["--checkpoint", "ck", "--out", "o.json", "--data", "d", "--axes", "a:categorical", "b:categorical"]
    argv += ["--metric", "kl", "--min-rows", "5", "--min-positives", "2", "--rare-share", "0.1", "--split", "test"]
    argv += ["--batch-size", "64"]
    args, extra = build_verb_parser("discover").parse_known_args([*argv, "--discover.min_rows=7"])
    args.overrides = extra
    cfg = load_config(None, field_overrides(args))
    d = cfg.discover
    assert (d.axes, d.metric, d.min_positives, d.rare_share, d.split, d.batch_size, cfg.data.path) == (
        ["a:categorical", "b:categorical"], "kl", 2, 0.1, "test", 64, "d"
    )  # fmt: skip
    assert d.min_rows == 7  # a --section.field=value typed after the short flag wins
    assert set(FIELD_FLAGS.values()) <= {f"discover.{f.name}" for f in dataclasses.fields(d)} | {"data.path"}
    with pytest.raises(SystemExit):  # choices come from the registry
        build_verb_parser("discover").parse_known_args(["--checkpoint", "c", "--out", "o", "--metric", "l2"])


def test_data_synthetic_flags_are_aliases_of_the_synthetic_section(tmp_path: Path) -> None:
    from c2al_rec.cli.main import build_verb_parser
    from c2al_rec.cli.options import field_overrides
    from c2al_rec.config import SyntheticConfig

    argv = ["synthetic", "--rows", "100", "--out", str(tmp_path), "--seed", "3", "--max-table-size", "50"]
    argv += ["--num-sparse", "12", "--num-dense", "2", "--base-rate", "0.1", "--head-tail-plr-ratio", "2"]
    argv += ["--cohort-effect-scale", "0.5", "--no-cohort-effects"]
    args, extra = build_verb_parser("data").parse_known_args([*argv, "--data.synthetic.valid_fraction=0.2"])
    args.overrides = extra
    data = load_config(None, field_overrides(args)).data
    want = SyntheticConfig(rows=100, seed=3, max_table_size=50, num_sparse=12, num_dense=2, base_rate=0.1,
                           head_tail_plr_ratio=2.0, cohort_effect_scale=0.5, cohort_effects=False,
                           valid_fraction=0.2)  # fmt: skip
    assert data.synthetic == want and data.path == str(tmp_path)


def test_export_flags_are_aliases_of_the_export_section() -> None:
    """export reads [export] as is: its flags set export.* fields under their own names (no max_abs_diff)."""
    from c2al_rec.cli.export import FIELD_FLAGS
    from c2al_rec.cli.main import build_verb_parser
    from c2al_rec.cli.options import field_overrides
    from c2al_rec.config import ExportConfig

    argv = ["--checkpoint", "ck", "--out", "exp", "--data", "d", "--quantize", "int8", "--parity-rows", "64"]
    argv += ["--max-abs-diff", "0.01", "--ne-tolerance", "0.02", "--pt2", "--which", "best", "--split", "valid"]
    args, extra = build_verb_parser("export").parse_known_args([*argv, "--export.parity_rows=32"])
    args.overrides = extra
    cfg = load_config(None, field_overrides(args))
    want = ExportConfig(quantize="int8", parity_rows=32, parity_max_abs_diff=0.01, parity_ne_tolerance=0.02, pt2=True)
    assert cfg.export == want and cfg.data.path == "d"
    assert (args.checkpoint, args.out, args.which, args.split) == ("ck", "exp", "best", "valid")
    assert set(FIELD_FLAGS.values()) <= {f"export.{f.name}" for f in dataclasses.fields(want)} | {"data.path"}
    defaults, _ = build_verb_parser("export").parse_known_args(["--checkpoint", "ck", "--out", "exp"])
    assert load_config(None, field_overrides(defaults)).export == ExportConfig()
    with pytest.raises(SystemExit):  # choices come from the field's Literal
        build_verb_parser("export").parse_known_args(["--checkpoint", "c", "--out", "o", "--quantize", "int4"])


def test_no_options_class_repeats_a_config_section() -> None:
    """The config tree is the only option surface: the one ``*Options`` class left is the serving
    service's runtime settings (``ServeOptions``), which no config section holds."""
    import re

    from c2al_rec.config import Config

    found = {
        m.group(1)
        for path in (ROOT / "c2al_rec").rglob("*.py")
        for m in re.finditer(r"^class (\w+Options)\b", path.read_text(), re.M)
    }
    assert found == {"ServeOptions"}
    assert "serve" not in {f.name for f in dataclasses.fields(Config)}


def test_data_synthetic_without_rows_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from c2al_rec.cli.main import main

    assert main(["data", "synthetic", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "c2al-rec data: error: data synthetic needs --rows N > 0 (data.synthetic.rows), got 0"
    with pytest.raises(SystemExit):  # check takes no config overrides
        main(["data", "check", str(tmp_path), "--data.path=x"])


def test_a_checkpoint_stored_with_flat_model_keys_loads_the_same(
    smoke_runs, tmp_path: Path, capsys: pytest.CaptureFixture, fresh_announcements: None
) -> None:
    """A run trained before the [model.<type>] tables: its train_state.json holds the flat keys."""
    import json
    import shutil

    from c2al_rec.distributed import checkpoint as ckpt_io
    from c2al_rec.runs.load import load_run

    new = load_run(smoke_runs.c2al)
    old_step = tmp_path / "checkpoints" / new.path.name
    shutil.copytree(new.path, old_step)
    state = json.loads((old_step / "train_state.json").read_text())
    model = state["config"]["model"]
    for old, (sub, name) in ModelConfig.LEGACY_KEYS.items():
        model[old] = model[sub].pop(name)
    for sub in DHEN_MODULE_TYPES:
        assert not model.pop(sub), sub  # every setting moved back to a flat key
    (old_step / "train_state.json").write_text(json.dumps(state))
    ckpt_io.write_manifest(old_step)
    capsys.readouterr()
    old = load_run(old_step)
    assert old.cfg == new.cfg
    a, b = old.model.state_dict(), new.model.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    lines = capsys.readouterr().err.splitlines()
    assert len([line for line in lines if "is deprecated" in line]) == len(ModelConfig.LEGACY_KEYS)
