"""The package's floors (docs/architecture.md): imports run down, never up, and no two packages
import each other. Lazy imports inside functions count too: an arrow is an arrow."""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "cxrlab"

#: top-level module or package of cxrlab -> its floor (see docs/architecture.md)
FLOORS = {
    "errors": 0, "claims": 0, "style": 0, "io": 0, "progress": 0, "seeding": 0, "labels": 0, "profiles": 0,
    "data": 1, "masks": 1, "augment": 1,
    "models": 2, "losses": 2, "metrics": 2,
    "methods": 3,
    "engine": 4,
    "probe": 5, "shift": 5, "explain": 5,
    "study": 6,
    "cli": 7, "demo": 7, "course": 7, "bench": 7, "info": 7, "__main__": 7, "__init__": 7,
}


def _part(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "cxrlab" and len(parts) > 1 else None


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "cxrlab":
                out |= {f"cxrlab.{a.name}" for a in node.names}
            else:
                out.add(node.module)
    return out


def _arrows() -> list[tuple[str, str, str]]:
    """(file, from part, to part) for every import of one cxrlab part by another."""
    arrows = []
    for f in sorted(PKG.rglob("*.py")):
        rel = f.relative_to(PKG)
        src = rel.parts[0].removesuffix(".py")
        for mod in _imports(f):
            dst = _part(mod)
            if dst and dst != src:
                arrows.append((str(rel), src, dst))
    return arrows


def test_every_part_has_a_floor():
    parts = {p.name.removesuffix(".py") for p in PKG.iterdir()
             if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists()))}
    assert parts <= set(FLOORS), f"give {sorted(parts - set(FLOORS))} a floor here and in docs/architecture.md"


def test_imports_only_run_down_the_floors():
    up = [f"{f}: {s} (floor {FLOORS[s]}) imports {d} (floor {FLOORS[d]})"
          for f, s, d in _arrows() if s in FLOORS and d in FLOORS and FLOORS[d] > FLOORS[s]
          and s != "__init__"]
    assert not up, "imports that run up the floors:\n" + "\n".join(up)


def test_no_two_parts_import_each_other():
    pairs = {(s, d) for _, s, d in _arrows()}
    circles = sorted({tuple(sorted(p)) for p in pairs if (p[1], p[0]) in pairs})
    assert not circles, f"parts that import each other: {circles}"


def test_the_check_sees_an_upward_import(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("def f():\n    from cxrlab.study import run_study\n")
    assert "cxrlab.study" in _imports(f)
