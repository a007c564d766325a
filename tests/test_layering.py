"""The package floors of c2al_rec (README "Architecture"): a package imports only packages below it.

Tier 1 (config only): reads the source with ``ast``; nothing is imported.
"""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "c2al_rec"

# top to bottom; a package may import packages on lower floors only (never its own floor's others)
FLOORS = [
    ["cli"],
    ["workflows"],
    ["train", "export"],
    ["runs", "analysis", "serve"],
    ["modules", "data", "distributed", "cohorts"],
    ["ops", "config", "io"],
]
FLOOR = {pkg: i for i, floor in enumerate(FLOORS) for pkg in floor}
# lower-floor imports the design still forbids: serving needs only the exported artifact
FORBIDDEN = {("serve", "modules")}


def _imports(path: Path, root: Path) -> set[str]:
    """Absolute c2al_rec modules a file imports (relative imports resolved)."""
    rel = path.relative_to(root.parent).with_suffix("")
    package = list(rel.parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {n for n in found if n.startswith("c2al_rec.")}


def _package(module: str) -> str:
    return module.split(".")[1]


def _violations(root: Path = ROOT) -> list[str]:
    bad = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if len(parts) == 1:  # c2al_rec/__init__.py
            continue
        src = parts[0]
        assert src in FLOOR, f"package c2al_rec.{src} has no floor: add it to FLOORS here and to the README"
        for module in _imports(path, root):
            dst = _package(module)
            if dst == src:
                continue
            if FLOOR[dst] <= FLOOR[src] or (src, dst) in FORBIDDEN:
                where = path.relative_to(root.parent)
                bad.append(f"{where} (floor {FLOOR[src]}) imports {module} (floor {FLOOR[dst]})")
    return bad


def test_every_package_imports_only_packages_below_it() -> None:
    assert _violations() == []


def test_the_check_catches_upward_and_sideways_imports(tmp_path: Path) -> None:
    fake = tmp_path / "c2al_rec"
    files = {
        "ops": "from c2al_rec.modules.model import C2ALModel\n",  # up a floor
        "modules": "from ..ops import x\nfrom ..data import reader\n",  # down (fine), sideways (not)
        "serve": "from c2al_rec.modules import C2ALModel\n",  # down, but forbidden
    }
    for pkg, body in files.items():
        (fake / pkg).mkdir(parents=True)
        (fake / pkg / "k.py").write_text(body)
    assert sorted(_violations(fake)) == [
        "c2al_rec/modules/k.py (floor 4) imports c2al_rec.data (floor 4)",
        "c2al_rec/ops/k.py (floor 5) imports c2al_rec.modules.model (floor 4)",
        "c2al_rec/serve/k.py (floor 3) imports c2al_rec.modules (floor 4)",
    ]


def readme_floors(readme: str) -> list[list[str]]:
    """The floors of the README's Architecture table: one list of package names per numbered row, top first.

    Rows look like ``| 3 | `train/`, `export/` | what lives there |``; the packages are the
    backticked names ending in ``/`` of the second cell.
    """
    if "## Architecture" not in readme:
        raise AssertionError("README.md has no '## Architecture' section")
    section = readme.split("## Architecture", 1)[1].split("\n## ", 1)[0]
    floors: dict[int, list[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].isdigit():
            floors[int(cells[0])] = re.findall(r"`(\w+)/`", cells[1])
    if sorted(floors) != list(range(1, len(floors) + 1)):
        raise AssertionError(f"README floor table numbers its floors {sorted(floors)}, not 1..{len(floors)}")
    return [floors[i] for i in sorted(floors)]


def test_the_readme_floor_table_is_the_tested_floors() -> None:
    assert readme_floors((ROOT.parent / "README.md").read_text()) == FLOORS


@pytest.mark.parametrize(
    "edit",
    [
        ("| 3 | `train/`, `export/` |", "| 3 | `train/` |"),  # a package dropped
        ("| 6 | `ops/`, `config/`, `io/` |", "| 6 | `ops/`, `io/`, `config/` |"),  # reordered within a floor
        ("| 4 | `runs/`, `analysis/`, `serve/` |", "| 4 | `runs/`, `analysis/`, `serve/`, `export/` |"),  # moved
    ],
)
def test_an_altered_readme_floor_table_fails(edit: tuple[str, str]) -> None:
    readme = (ROOT.parent / "README.md").read_text()
    assert edit[0] in readme
    assert readme_floors(readme.replace(edit[0], edit[1])) != FLOORS


BENCHMARKS_LINE_BUDGET = 3700  # benchmarks/ was cut to ~3.5k lines; a new benchmark reuses benchmarks/common.py


def test_benchmarks_stay_within_their_line_budget() -> None:
    files = sorted((ROOT.parent / "benchmarks").rglob("*.py"))
    lines = {f.name: len(f.read_text().splitlines()) for f in files}
    assert files and sum(lines.values()) <= BENCHMARKS_LINE_BUDGET, (
        f"benchmarks/ has {sum(lines.values())} lines of Python (budget {BENCHMARKS_LINE_BUDGET}): "
        f"share code through benchmarks/common.py; per file: {lines}"
    )
