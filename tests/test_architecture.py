"""Import rules between the package's folders (issue 20's renovation adds to them)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "volseg"


def _imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of the file (lazy imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_the_benchmark_kit_is_a_leaf():
    """`volseg bench` measures the product; nothing in the product imports it."""
    offenders = {
        str(path.relative_to(PACKAGE.parent)): sorted(m for m in _imported_modules(path)
                                                      if m == "volseg.bench"
                                                      or m.startswith("volseg.bench."))
        for path in PACKAGE.rglob("*.py") if "bench" not in path.relative_to(PACKAGE).parts
    }
    assert {file: modules for file, modules in offenders.items() if modules} == {}


# Imports run one way: entry points -> engine -> inference -> data -> io (issue 20). A folder
# named here imports none of the folders listed against it, lazily or not.
FORBIDDEN = {
    "io": ("data", "inference", "engine", "cli", "report", "sweep", "planning", "evaluation",
           "runs"),
    "data": ("inference", "engine", "cli", "report", "sweep"),
    "inference": ("engine", "cli", "report", "sweep", "planning"),
    "engine": ("cli", "report"),
    "evaluation": ("engine", "cli", "report", "sweep"),
    "runs": ("inference", "engine", "cli", "report", "evaluation"),
    "models": ("data", "inference", "engine", "cli", "losses", "metrics"),
    "losses": ("data", "inference", "engine", "cli", "models", "metrics"),
    "metrics": ("data", "inference", "engine", "cli", "models", "losses"),
}


def _folder(path: Path) -> str:
    """The top-level part of the package ``path`` belongs to (``io`` for volseg/io/volume.py)."""
    return path.relative_to(PACKAGE).with_suffix("").parts[0]


def test_imports_run_one_way():
    offenders = {}
    for path in PACKAGE.rglob("*.py"):
        forbidden = FORBIDDEN.get(_folder(path), ())
        bad = sorted(m for m in _imported_modules(path)
                     if m.startswith("volseg.") and m.split(".")[1] in forbidden)
        if bad:
            offenders[str(path.relative_to(PACKAGE.parent))] = bad
    assert offenders == {}


def test_models_and_losses_are_reached_by_config_only():
    """The engine builds networks and losses from their configs (`instantiate_trusted`)."""
    offenders = {
        str(path.relative_to(PACKAGE.parent)): sorted(
            m for m in _imported_modules(path)
            if m.split(".")[:2] in (["volseg", "models"], ["volseg", "losses"]))
        for path in (PACKAGE / "engine").rglob("*.py")
    }
    assert {file: modules for file, modules in offenders.items() if modules} == {}


def test_no_loose_modules_at_the_package_root():
    """Every module lives in the folder of its kind (issue 20): the root holds the public API."""
    assert sorted(p.name for p in PACKAGE.glob("*.py")) == ["__init__.py", "__main__.py"]
