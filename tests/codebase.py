"""Static facts about src/steerops, read from the source (nothing is imported): which steerops
modules each module imports, and which params keys each reads.

Imports count wherever they stand (module level or inside a function), except under
`if TYPE_CHECKING:`. Importing
`steerops.a.b` also imports its packages (`steerops`, `steerops.a`), except the importer's own
ancestors, which are loaded before it anyway.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "steerops"


@cache
def modules() -> dict[str, Path]:
    """{dotted module name: file} of every module under src/steerops."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


@cache
def tree(name: str) -> ast.Module:
    return ast.parse(modules()[name].read_text(encoding="utf-8"))


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _named(nodes) -> set[str]:
    """steerops modules named by the import statements among `nodes`."""
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "steerops"}
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and node.module
            and node.module.split(".")[0] == "steerops"
        ):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules() else node.module)
    return found


def _with_packages(importer: str, named: set[str]) -> set[str]:
    own = set(_ancestors(importer)) | {importer}
    out = set()
    for name in named:
        out |= {m for m in [*_ancestors(name), name] if m in modules() and m not in own}
    return out


def _walk(node: ast.AST):
    """ast.walk, without `if TYPE_CHECKING:` blocks (they never run)."""
    yield node
    for child in ast.iter_child_nodes(node):
        if (
            isinstance(child, ast.If)
            and isinstance(child.test, ast.Name)
            and child.test.id == "TYPE_CHECKING"
        ):
            continue
        yield from _walk(child)


@cache
def imports(name: str) -> frozenset[str]:
    """The steerops modules `name` imports directly (its packages included)."""
    return frozenset(_with_packages(name, _named(_walk(tree(name)))))


def closure(start: set[str]) -> set[str]:
    """`start` and every steerops module it imports, transitively, with their packages."""
    seen, todo = set(), list(start)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(imports(name))
            todo.extend(m for m in _ancestors(name) if m in modules())
    return seen


def function_imports(module: str, function: str) -> set[str]:
    """The modules calling `module.function` imports: the module's top-level imports, and
    the imports inside that function and inside the module's functions it calls,
    transitively (take the modules reached whole with `closure`)."""
    body = tree(module).body
    functions = {n.name: n for n in body if isinstance(n, ast.FunctionDef)}
    named = _named(n for n in body if isinstance(n, ast.Import | ast.ImportFrom))
    seen, todo = set(), [function]
    while todo:
        name = todo.pop()
        if name in seen or name not in functions:
            continue
        seen.add(name)
        nodes = list(_walk(functions[name]))
        named |= _named(nodes)
        todo += [n.id for n in nodes if isinstance(n, ast.Name) and n.id in functions]
    return _with_packages(module, named)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


# ---- params reads ----------------------------------------------------------------------------


def _is_params(node: ast.AST) -> bool:
    """`params` or `<anything>.params`."""
    return (isinstance(node, ast.Name) and node.id == "params") or (
        isinstance(node, ast.Attribute) and node.attr == "params"
    )


@cache
def params_reads(name: str, blocks: frozenset[str]) -> frozenset[str]:
    """Params keys module `name` reads: `block.key` where only that key is read (directly,
    or through an alias `cfg = params.block`), `block` where the block is used whole.
    `params.variant(...)` reads `models`, `params.out` reads `paths.out`."""
    module = tree(name)
    parents = {child: node for node in ast.walk(module) for child in ast.iter_child_nodes(node)}
    functions = {n.name: n for n in module.body if isinstance(n, ast.FunctionDef)}

    def used(block: str, node: ast.AST, seen: frozenset = frozenset()) -> set[str]:
        """Keys of `block` read where `node` (the block's value) is used: `node.key` reads
        one key; passed to a function of this module, what that function reads of its
        parameter; any other use reads the block whole."""
        parent = parents.get(node)
        call = parents.get(parent) if isinstance(parent, ast.keyword) else parent
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Name):
            function = functions.get(call.func.id)
            param = _parameter(function, call, node) if function else None
            if param and (function.name, param) not in seen:
                loads = [
                    n
                    for n in ast.walk(function)
                    if isinstance(n, ast.Name) and n.id == param and isinstance(n.ctx, ast.Load)
                ]
                inner = seen | {(function.name, param)}
                return set().union(*(used(block, n, inner) for n in loads))
        return {_key(block, parent, node, blocks)}

    reads: set[str] = set()
    for scope in [module, *[n for n in ast.walk(module) if isinstance(n, ast.FunctionDef)]]:
        bound: dict[str, set[str]] = {}
        aliased: set[ast.AST] = set()  # the `params.block` values bound to an alias
        for node in ast.walk(scope):
            for target, value in _bindings(node):
                if (
                    isinstance(target, ast.Name)
                    and isinstance(value, ast.Attribute)
                    and _is_params(value.value)
                    and value.attr in blocks
                ):
                    bound.setdefault(target.id, set()).add(value.attr)
                    aliased.add(value)
        # a name bound to two blocks in one scope (`cfg = params.a` ... `cfg = params.b`):
        # which block a use reads is not known here, so both count whole
        aliases = {name: next(iter(b)) for name, b in bound.items() if len(b) == 1}
        reads |= {block for b in bound.values() if len(b) > 1 for block in b}
        for node in ast.walk(scope):
            if node in aliased:
                continue  # `cfg = params.block`: what counts is how `cfg` is used
            if isinstance(node, ast.Attribute) and _is_params(node.value):
                block = {"variant": "models", "out": "paths.out"}.get(node.attr, node.attr)
                if block not in blocks and block not in ("models", "paths.out"):
                    continue
                reads |= used(block, node)
            elif (
                isinstance(node, ast.Name)
                and node.id in aliases
                and not isinstance(node.ctx, ast.Store)
            ):
                reads |= used(aliases[node.id], node)
    return frozenset(reads)


def _parameter(function: ast.FunctionDef, call: ast.Call, arg: ast.AST) -> str | None:
    """The name of `function`'s parameter that `arg` binds in `call` (None when unsure)."""
    positional = [a.arg for a in [*function.args.posonlyargs, *function.args.args]]
    if arg in call.args:
        index = call.args.index(arg)
        starred = any(isinstance(a, ast.Starred) for a in call.args[: index + 1])
        return positional[index] if index < len(positional) and not starred else None
    keyword = next((k.arg for k in call.keywords if k.value is arg), None)
    names = positional + [a.arg for a in function.args.kwonlyargs]
    return keyword if keyword in names else None


def _bindings(node: ast.AST) -> list[tuple[ast.AST, ast.AST]]:
    """(target, value) pairs an assignment binds: `a = x` and `a, b = x, y`."""
    if not isinstance(node, ast.Assign) or len(node.targets) != 1:
        return []
    target, value = node.targets[0], node.value
    if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple):
        if len(target.elts) == len(value.elts):
            return list(zip(target.elts, value.elts, strict=True))
        return []
    return [(target, value)]


def _key(block: str, parent: ast.AST | None, node: ast.AST, blocks: frozenset[str]) -> str:
    # `params.block.key`: one key, unless the block's own methods are used (model_dump...)
    if (
        isinstance(parent, ast.Attribute)
        and parent.value is node
        and block in blocks
        and not parent.attr.startswith("model_")
    ):
        return f"{block}.{parent.attr}"
    return block
