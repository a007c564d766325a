"""Tier 1: the typed config tree, TOML loading and --section.field overrides."""

from pathlib import Path

import pytest

from c2al_rec.config import (
    Config,
    ConfigError,
    config_help,
    dump_toml,
    field_docs,
    iter_fields,
    load_config,
)


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "run.toml"
    p.write_text(text)
    return p


def test_defaults_and_file_values(tmp_path: Path) -> None:
    p = write(tmp_path, "[train]\nmax_steps = 7\ndense_lr = 1\n[model]\ndhen_layers = [['fm'], ['linear', 'cross']]\n")
    cfg = load_config(p)
    assert cfg.train.max_steps == 7
    assert cfg.train.dense_lr == 1.0 and isinstance(cfg.train.dense_lr, float)
    assert cfg.model.dhen_layers == [["fm"], ["linear", "cross"]]
    assert cfg.data.batch_size == Config().data.batch_size


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    p = write(tmp_path, "[train]\nmax_stepz = 7\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert "train.max_stepz" in msg and str(p) in msg
    assert "\n" not in msg  # one line


def test_unknown_section(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown key 'trainer'"):
        load_config(write(tmp_path, "[trainer]\nx = 1\n"))


def test_nested_section_key(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "[data.synthetic]\nrows = 1000\n"))
    assert cfg.data.synthetic.rows == 1000
    with pytest.raises(ConfigError, match="data.synthetic.rowz"):
        load_config(write(tmp_path, "[data.synthetic]\nrowz = 1000\n"))


@pytest.mark.parametrize(
    "text, key",
    [
        ("[train]\nmax_steps = '7'\n", "train.max_steps"),
        ("[train]\nmax_steps = 7.5\n", "train.max_steps"),
        ("[cohorts]\nenabled = 1\n", "cohorts.enabled"),
        ("[model]\ncombine = 'mean'\n", "model.combine"),
        ("[model]\ndense_arch = [64, 'x']\n", "model.dense_arch[1]"),
        ("[train]\ndense_lr = true\n", "train.dense_lr"),
    ],
)
def test_wrong_type_names_key_and_file(tmp_path: Path, text: str, key: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert key in str(e.value) and str(p) in str(e.value)


def test_invalid_value_from_post_init(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data.batch_size must be positive"):
        load_config(write(tmp_path, "[data]\nbatch_size = 0\n"))
    with pytest.raises(ConfigError, match="cohorts.spec"):
        load_config(write(tmp_path, "[cohorts]\nenabled = true\n"))


def test_not_toml(tmp_path: Path) -> None:
    p = write(tmp_path, "[train\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(p)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")


def test_overrides_apply_after_file(tmp_path: Path) -> None:
    p = write(tmp_path, "[train]\nmax_steps = 7\n")
    cfg = load_config(
        p,
        [
            "--train.max_steps=20",
            "--data.path=/tmp/some dir",
            "--model.dense_arch=[8, 4]",
            "--cohorts.lambda_head=0.5",
            "--data.synthetic.rows=99",
            "--train.bf16=true",
        ],
    )
    assert cfg.train.max_steps == 20
    assert cfg.data.path == "/tmp/some dir"
    assert cfg.model.dense_arch == [8, 4]
    assert cfg.cohorts.lambda_head == 0.5
    assert cfg.data.synthetic.rows == 99
    assert cfg.train.bf16 is True


@pytest.mark.parametrize(
    "arg, match",
    [
        ("--train.max_stepz=3", "unknown key 'train.max_stepz'"),
        ("--train.max_steps=abc", "train.max_steps: expected an integer"),
        ("--train=3", "expected --section.field=value"),
        ("--data.synthetic=3", "is a section"),
        ("--train.max_steps.x=3", "is a field"),
        ("train.max_steps=3", "expected --section.field=value"),
    ],
)
def test_bad_overrides_name_the_flag(arg: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as e:
        load_config(None, [arg])
    assert "override" in str(e.value)


def test_round_trip_through_toml(tmp_path: Path) -> None:
    cfg = load_config(None, ["--model.dhen_layers=[['fm', 'dot']]", '--data.path=a"b', "--train.dense_lr=0.25"])
    p = write(tmp_path, dump_toml(cfg))
    assert load_config(p) == cfg


def test_every_field_has_a_docstring() -> None:
    fields = list(iter_fields())
    assert len(fields) > 40
    missing = [name for name, _, _, doc in fields if not doc]
    assert not missing, missing
    assert "Rows per batch" in field_docs(type(Config().data))["batch_size"]
    assert "--train.max_steps=<int>" in config_help()
