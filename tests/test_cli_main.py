"""`c2al-rec` itself: the verb table, lazy verb imports, one-line user errors (tier 1, config only)."""

import importlib
import subprocess
import sys

import pytest

from c2al_rec.cli.main import VERBS, main


def _imported_after(argv: list[str]) -> set[str]:
    code = (
        "import sys\nfrom c2al_rec.cli.main import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "print('\\n'.join(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_help_imports_no_verb_module_and_no_torchrec() -> None:
    mods = _imported_after(["--help"])
    assert not [m for m in mods if m.startswith("c2al_rec.cli.") and m != "c2al_rec.cli.main"]
    assert not [m for m in mods if m.split(".")[0] in ("torchrec", "torch", "fbgemm_gpu")]


@pytest.mark.parametrize("verb", list(VERBS))
def test_verb_help_imports_no_torch(verb: str) -> None:
    code = (
        "import contextlib, io, sys\nfrom c2al_rec.cli.main import main\n"
        f"with contextlib.redirect_stdout(io.StringIO()):\n    try:\n        main({[verb, '--help']!r})\n"
        "    except SystemExit:\n        pass\n"
        "print('\\n'.join(sorted(sys.modules)))"
    )
    mods = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert "c2al_rec.cli.main" in mods
    assert not [m for m in mods if m.split(".")[0] in ("torchrec", "torch", "fbgemm_gpu")]


def test_a_verb_imports_only_its_own_module() -> None:
    mods = _imported_after(["config", "--fields"])
    verbs = {m.rsplit(".", 1)[1] for m in mods if m.startswith("c2al_rec.cli.")} & set(VERBS)
    assert verbs == {"config"}
    assert "torchrec" not in mods


@pytest.mark.parametrize("verb", list(VERBS))
def test_table_help_is_the_modules_first_docstring_line(verb: str) -> None:
    module = importlib.import_module(f"c2al_rec.cli.{verb}")
    assert module.__doc__.strip().splitlines()[0] == VERBS[verb]
    assert callable(module.add_arguments) and callable(module.run)


def test_unknown_verb_is_a_usage_error(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as e:
        main(["frobnicate"])
    assert e.value.code == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


def test_bad_override_is_one_line_naming_the_key(capsys: pytest.CaptureFixture) -> None:
    assert main(["config", "--train.no_such_field=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("c2al-rec config: error:") and "train.no_such_field" in err and "\n" not in err
