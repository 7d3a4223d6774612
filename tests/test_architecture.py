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
