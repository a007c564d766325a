"""`cli.options`: flags generated from a settings dataclass (the benchmarks' and serve's parsers)."""

import argparse
from dataclasses import dataclass
from typing import Optional

import pytest

from c2al_rec.cli.options import add_dataclass_flags, dataclass_from_args


@dataclass(frozen=True)
class _Settings:
    rows: int = 1000
    """rows to read (8% go to valid)"""
    sizes: tuple[int, ...] = (64, 256)
    """batch sizes to sweep"""
    warm: bool = True
    """run untimed warm-up steps"""
    label: Optional[str] = None
    """a name for the run"""


def _parse(argv: list[str]) -> _Settings:
    parser = argparse.ArgumentParser()
    add_dataclass_flags(parser, _Settings)
    return dataclass_from_args(_Settings, parser.parse_args(argv))


def test_flags_set_fields_and_leave_the_rest_at_their_defaults() -> None:
    assert _parse([]) == _Settings()
    got = _parse(["--rows", "5", "--sizes", "1", "2", "3", "--no-warm", "--label", "x"])
    assert got == _Settings(rows=5, sizes=(1, 2, 3), warm=False, label="x")
    assert isinstance(got.sizes, tuple)


def test_help_shows_the_docstring_even_with_a_percent_sign(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        _parse(["--help"])
    out = capsys.readouterr().out
    assert "rows to read (8% go to valid)" in out and "(default: 1000)" in out


def test_a_wrongly_typed_value_is_a_usage_error_naming_the_flag(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        _parse(["--rows", "many"])
    assert "--rows" in capsys.readouterr().err
