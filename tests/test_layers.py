"""The packages of pyspk import each other downwards only (docs/architecture.md, "Layers").

Every module's imports are read with ``ast``, at the top of the file and inside functions
alike (a lazy import hides a cycle from Python, not from this test). A unit is a top-level
module (``pyspk/io.py``: ``io``) or a package (``pyspk/features/``: ``features``); the
package's own ``__init__.py`` is ``pyspk``. The layer of each unit is read from the table in
docs/architecture.md, so the table and the rule are one thing. The test fails, naming the
file and the line:

- when a unit imports a unit of its own layer or of a higher one;
- when two units import each other (whatever their layers);
- when a unit is not in the table (a new top-level module or package must be given a layer),
  or the table names one that does not exist.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "pyspk"
DOC = REPO / "docs" / "architecture.md"
ROOT = "pyspk"  # the unit of pyspk/__init__.py (``from pyspk import __version__``)


def layer_table() -> Dict[str, int]:
    """``{unit: layer}`` from the rows ``| N | `a`, `b` | ... |`` of the "Layers" section."""
    text = DOC.read_text(encoding="utf-8")
    m = re.search(r"^## Layers\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert m, f"{DOC}: no '## Layers' section"
    layers: Dict[str, int] = {}
    for line in m.group(1).splitlines():
        row = re.match(r"^\|\s*(\d+)\s*\|([^|]*)\|", line)
        if not row:
            continue
        for name in re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", row.group(2)):
            assert name not in layers, f"{DOC}: '{name}' is in two layers"
            layers[name] = int(row.group(1))
    assert layers, f"{DOC}: the Layers section has no table rows '| N | `unit`, ... |'"
    return layers


def units_on_disk() -> Dict[str, Path]:
    """Every top-level module and package of pyspk (a folder holding Python files)."""
    out = {ROOT: PKG / "__init__.py"}
    for p in sorted(PKG.iterdir()):
        if p.suffix == ".py" and p.name != "__init__.py":
            out[p.stem] = p
        elif p.is_dir() and p.name != "__pycache__" and any(p.rglob("*.py")):
            out[p.name] = p
    return out


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def unit_of(module: str, units) -> Optional[str]:
    """The unit a dotted ``pyspk...`` module belongs to; None outside pyspk."""
    parts = module.split(".")
    if parts[0] != "pyspk":
        return None
    if len(parts) == 1:
        return ROOT
    return parts[1] if parts[1] in units else ROOT


def imports(path: Path, units, here: Optional[str] = None) -> List[Tuple[int, str, str]]:
    """``(line, imported module, its unit)`` of every pyspk import in ``path`` (the module
    ``here``, by default the one its place names), at any depth."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = here or module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # ``from pyspk import io`` imports the unit io; ``from pyspk import __version__`` the root
            names = [f"{module}.{a.name}" for a in node.names] if module == "pyspk" else [module]
        else:
            continue
        for name in names:
            unit = unit_of(name, units)
            if unit is not None:
                out.append((node.lineno, name, unit))
    return out


def edges() -> Dict[Tuple[str, str], List[str]]:
    """``{(importer unit, imported unit): ["file:line imports module", ...]}`` over all of pyspk."""
    units = units_on_disk()
    found: Dict[Tuple[str, str], List[str]] = defaultdict(list)
    for path in sorted(PKG.rglob("*.py")):
        src = unit_of(module_name(path), units)
        for line, name, dst in imports(path, units):
            if dst != src:
                found[(src, dst)].append(f"{path.relative_to(REPO)}:{line} imports {name}")
    return found


def test_every_unit_has_a_layer():
    table, disk = layer_table(), units_on_disk()
    unknown = [f"{p.relative_to(REPO)}: '{u}' has no layer" for u, p in disk.items() if u not in table]
    gone = [f"{DOC.relative_to(REPO)}: '{u}' is not a module or package of pyspk" for u in table if u not in disk]
    assert not unknown + gone, (
        "add each new module or package to the layer table of docs/architecture.md "
        "(or remove what no longer exists):\n" + "\n".join(unknown + gone)
    )
    assert table["bin"] == max(table.values()), "pyspk.bin is the top layer: nothing imports the tools"


def test_imports_go_down_the_layers():
    table = layer_table()
    bad = []
    for (src, dst), where in sorted(edges().items()):
        if src in table and dst in table and table[dst] >= table[src]:
            bad += [
                f"{w}: {src} (layer {table[src]}) may import only lower layers, not {dst} (layer {table[dst]})"
                for w in where
            ]
    assert not bad, "imports against the layers of docs/architecture.md:\n" + "\n".join(bad)


def test_no_two_units_import_each_other():
    found = edges()
    both = [(a, b) for (a, b) in found if a < b and (b, a) in found]
    msg = [f"{a} and {b} import each other: {found[(a, b)][0]}; {found[(b, a)][0]}" for a, b in sorted(both)]
    assert not msg, "\n".join(msg)


def test_the_reader_sees_lazy_relative_and_root_imports(tmp_path):
    """The reader itself: imports inside functions, relative ones and ``from pyspk import``."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from . import ark\n"
        "import numpy\n"
        "def f():\n"
        "    from pyspk.augment.apply import RecipeApplier\n"
        "    if True:\n"
        "        import pyspk.io\n"
        "from pyspk import __version__, jobs\n"
        "from ..data import kaldi_dir\n"
    )
    got = sorted((line, unit) for line, _, unit in imports(probe, units_on_disk(), here="pyspk.features.probe"))
    assert got == sorted([(1, "features"), (4, "augment"), (6, "io"), (7, ROOT), (7, "jobs"), (8, "data")])
