"""The import graph follows the layers of shared/DESIGN.md ("Layers of the code"): imports point
down only, and no two modules import each other, directly or round a longer cycle.

Layers, lowest first: the core (``qnnfab/*.py`` but ``cli.py``, ``flow.py`` and ``sweep.py``,
and ``qnnfab/spec/``) < ``model/`` and ``rtl/`` (side by side: neither imports the other) <
``sim/`` < ``boards/`` < ``qnnfab/cli.py``, ``qnnfab/flow.py`` and ``qnnfab/sweep.py`` (the
app layer). Every import counts, function-local ones included (an import inside a function
still ties the layers together). No allow-list: a breach fails here until it is fixed.
"""

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: source folder -> package it installs as (pyproject.toml [tool.setuptools.package-dir])
FOLDERS = {"qnnfab": "qnnfab", "rtl": "qnnfab.rtl", "model": "qnnfab.model",
           "sim": "qnnfab.sim", "boards": "qnnfab.boards"}

#: layer -> rank; a module may import its own layer and the layers of lower rank, except
#: that model and rtl (both rank 1) may not import each other.
RANK = {"core": 0, "model": 1, "rtl": 1, "sim": 2, "boards": 3, "app": 4}

#: extra imports forbidden between layers, beyond "never upward" (DESIGN.md: rtl never imports
#: model/, sim/ imports the core and rtl/, not model/).
FORBIDDEN = {("rtl", "model"), ("model", "rtl"), ("sim", "model")}


def layer_of(module):
    parts = module.split(".")
    if parts[0] != "qnnfab":
        return None
    if len(parts) == 1 or parts[1] == "spec":
        return "core"
    if parts[1] in ("rtl", "model", "sim", "boards"):
        return parts[1]
    if parts[1] in ("cli", "flow", "sweep"):
        return "app"
    return "core"


def modules():
    """``{module name: path}`` for every source file of the package."""
    found = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


def imports(module, path, known):
    """``[(line, imported module, source text)]``: each package module ``path`` imports,
    anywhere in the file. ``from X import name`` counts as an import of ``X.name`` when that
    is a module, else of ``X``."""
    source = path.read_text()
    tree = ast.parse(source, filename=str(path))
    is_package = path.name == "__init__.py"
    here = module.split(".") if is_package else module.split(".")[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module
            names = []
            for alias in node.names:
                full = f"{prefix}.{alias.name}"
                names.append(full if full in known else prefix)
        else:
            continue
        text = " ".join((ast.get_source_segment(source, node) or "").split())
        for name in dict.fromkeys(names):
            # The longest known module the name is, or is inside of.
            parts = name.split(".")
            while parts and ".".join(parts) not in known:
                parts.pop()
            if parts and (node.lineno, ".".join(parts), text) not in found:
                found.append((node.lineno, ".".join(parts), text))
    return sorted(found)


def graph():
    known = modules()
    edges = defaultdict(list)
    for module, path in known.items():
        for line, target, text in imports(module, path, known):
            if target != module:
                edges[module].append((target, line, text))
    return known, edges


def where(known, module, line, text):
    return f"{known[module].relative_to(ROOT)}:{line}: {text}"


def test_layers_import_downward_only():
    known, edges = graph()
    bad = []
    for module, targets in sorted(edges.items()):
        src = layer_of(module)
        for target, line, text in targets:
            dst = layer_of(target)
            if RANK[dst] > RANK[src] or (src, dst) in FORBIDDEN:
                bad.append(f"{where(known, module, line, text)}  ({src} imports {dst})")
    assert not bad, "imports against the layers of DESIGN.md:\n" + "\n".join(bad)


def _cycles(nodes, edges):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def _is_package_init(module, known):
    return known[module].name == "__init__.py"


def test_no_circular_imports():
    """No cycle between modules (a package's ``__init__`` importing its own modules is not
    one: ``qnnfab.sim`` importing ``qnnfab.sim.x`` is how a package re-exports)."""
    known, edges = graph()
    simple = {m: sorted({t for t, _, _ in targets
                         if not (_is_package_init(m, known) and t.startswith(m + "."))})
              for m, targets in edges.items()}
    problems = []
    for component in _cycles(known, simple):
        members = set(component)
        lines = [where(known, m, line, text) for m in component
                 for t, line, text in edges[m] if t in members]
        problems.append(" <-> ".join(component) + ":\n    " + "\n    ".join(lines))
    assert not problems, "circular imports:\n" + "\n".join(problems)


def test_the_checker_sees_function_local_and_relative_imports(tmp_path):
    """The reader itself: relative, ``from`` and function-local imports all count."""
    pkg = tmp_path / "sim"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    src = pkg / "a.py"
    src.write_text("from . import b\n\ndef f():\n    from qnnfab.boards.build import x\n"
                   "    import qnnfab.model.train\n")
    known = {"qnnfab.sim.a": src, "qnnfab.sim.b": pkg / "b.py", "qnnfab.boards.build": None,
             "qnnfab.model.train": None}
    found = [(line, target) for line, target, _ in imports("qnnfab.sim.a", src, known)]
    assert found == [(1, "qnnfab.sim.b"), (4, "qnnfab.boards.build"),
                     (5, "qnnfab.model.train")]
    assert [layer_of(m) for m in ("qnnfab", "qnnfab.ir", "qnnfab.spec.golden", "qnnfab.cli",
                                  "qnnfab.flow", "qnnfab.sweep", "qnnfab.sweep_executor",
                                  "qnnfab.rtl.mvu")] == \
        ["core", "core", "core", "app", "app", "app", "core", "rtl"]
