"""The family catalogue (name, task kind, paper) read from the family modules' source, without importing them.

``ganzoo families`` lists the zoo; importing the families to do so costs seconds
(every family module imports torch). Each family module declares its family as
a class decorated with ``@register`` whose class attributes ``name``, ``task``
(``TaskKind.X``) and ``paper`` are plain literals, so this module reads them
with :mod:`ast`. It follows what the source makes certain: string literals and
their concatenation, ``TaskKind`` members (their values are read from
``families/base.py``), module constants, names imported from other modules of
``components``, and attributes inherited from base classes defined there. Any
module it cannot read that way (an f-string, a computed value, a base class
from elsewhere, ``register`` called rather than used as a decorator) is
imported instead, so the catalogue always equals the registry; only the speed
suffers. ``tests/unit/test_startup.py`` checks that equality for every family,
and that the light commands import no torch.

This module imports nothing outside the standard library (and
``components.families`` only on that fallback).
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

COMPONENTS_DIR = Path(__file__).resolve().parent
FAMILIES_DIR = COMPONENTS_DIR / "families"
FAMILIES_PACKAGE = "components.families"
NOT_FAMILY_MODULES = frozenset({"base"})  # as components.families._discover skips it
ATTRIBUTES = ("name", "task", "paper")


@dataclass(frozen=True)
class FamilyEntry:
    """One row of ``ganzoo families``: ``task`` is the TaskKind's value, e.g. ``class_conditional``."""

    name: str
    task: str
    paper: str
    module: str  # e.g. components.families.dcgan
    from_source: bool  # False: its module had to be imported


class _Unresolved(Exception):
    """The source alone does not say what this is."""


def family_catalog() -> list[FamilyEntry]:
    """Every family that ``components.families.family_names()`` would register, sorted by name."""
    entries: dict[str, FamilyEntry] = {}
    for module in pkgutil.iter_modules([str(FAMILIES_DIR)]):
        if module.name in NOT_FAMILY_MODULES:
            continue
        for entry in _module_families(f"{FAMILIES_PACKAGE}.{module.name}"):
            if entry.name in entries:
                raise TypeError(f"family name {entry.name!r} is registered twice")
            entries[entry.name] = entry
    return [entries[name] for name in sorted(entries)]


def _module_families(qualname: str) -> list[FamilyEntry]:
    try:
        return _source_families(_Source.of(qualname))
    except (_Unresolved, OSError, SyntaxError, UnicodeDecodeError):
        return _imported_families(qualname)


def _source_families(source: _Source) -> list[FamilyEntry]:
    """The families that ``source`` registers, as its source says; raises _Unresolved where it does not say."""
    entries = []
    for cls in source.registered_classes():
        name, task, paper = (source.class_attribute(cls, attr) for attr in ATTRIBUTES)
        if type(name) is not str or type(paper) is not str:
            raise _Unresolved(f"{source.qualname}.{cls.name}: name and paper are not both strings")
        if not isinstance(task, _TaskMember):
            raise _Unresolved(f"{source.qualname}.{cls.name}.task: not a TaskKind member")
        entries.append(FamilyEntry(name, task.value, paper, source.qualname, True))
    return entries


def _imported_families(qualname: str) -> list[FamilyEntry]:
    """The fallback: import the module and read its registered classes."""
    from components import families

    module = importlib.import_module(qualname)
    found = []
    for value in vars(module).values():
        if isinstance(value, type) and value.__module__ == qualname and \
                families._REGISTRY.get(getattr(value, "name", None)) is value:
            found.append(FamilyEntry(value.name, value.task.value, value.paper, qualname, False))
    return found


class _Source:
    """One module of ``components``, parsed: its top-level names and what it imports."""

    def __init__(self, qualname: str, path: Path):
        self.qualname = qualname
        self.tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        self.scope: dict[str, ast.AST] = {}  # name -> its ClassDef or the expression last assigned to it
        self.imports: dict[str, tuple[str, str | None]] = {}  # name -> (module, attribute or None for the module)
        self.bindings = _bindings(self.tree.body)  # a name bound twice (or conditionally) is not followed
        self.register_uses = 0  # Name nodes `register` anywhere: one per decorator, else it is called or passed
        self.class_stores: set[str] = set()  # X of `X.name = ...` (or task, paper) anywhere in the module
        for node in ast.walk(self.tree):  # one walk of the whole tree: the rest reads only top-level statements
            if isinstance(node, ast.Name) and node.id == "register":
                self.register_uses += 1
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, (ast.Store, ast.Del)) \
                    and node.attr in ATTRIBUTES and isinstance(node.value, ast.Name):
                self.class_stores.add(node.value.id)
            elif isinstance(node, ast.Global):  # `global NAME` in a function rebinds a module name
                for name in node.names:
                    self.bindings[name] = self.bindings.get(name, 0) + 2
        package = qualname if path.name == "__init__.py" else qualname.rpartition(".")[0]
        for statement in self.tree.body:
            if isinstance(statement, ast.ClassDef):
                self.scope[statement.name] = statement
            elif isinstance(statement, ast.Assign):
                for target in statement.targets:
                    if isinstance(target, ast.Name):
                        self.scope[target.id] = statement.value
            elif isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name) and statement.value:
                self.scope[statement.target.id] = statement.value
            elif isinstance(statement, ast.ImportFrom):
                origin = statement.module or ""
                if statement.level:
                    parts = package.split(".")
                    origin = ".".join(parts[:len(parts) - statement.level + 1] + ([origin] if origin else []))
                for alias in statement.names:
                    self.imports[alias.asname or alias.name] = (origin, alias.name)
            elif isinstance(statement, ast.Import):
                for alias in statement.names:
                    if alias.asname:
                        self.imports[alias.asname] = (alias.name, None)

    @staticmethod
    @lru_cache(maxsize=None)
    def of(qualname: str) -> _Source:
        parts = qualname.split(".")
        if parts[0] != "components":
            raise _Unresolved(f"{qualname} is not part of components")
        path = COMPONENTS_DIR.joinpath(*parts[1:])
        for candidate in (path.with_suffix(".py"), path / "__init__.py"):
            if candidate.is_file():
                return _Source(qualname, candidate)
        raise _Unresolved(f"no source for {qualname}")

    def registered_classes(self) -> list[ast.ClassDef]:
        classes = [node for node in self.tree.body if isinstance(node, ast.ClassDef)
                   and any(_is_register(d) for d in node.decorator_list)]
        for cls in classes:
            if len(cls.decorator_list) != 1 or not isinstance(cls.decorator_list[0], ast.Name) \
                    or self.imports.get("register") != (FAMILIES_PACKAGE, "register"):
                raise _Unresolved(f"{self.qualname}.{cls.name}: decorated other than by components.families.register")
        if self.register_uses != len(classes):  # register(SomeClass), or register passed around
            raise _Unresolved(f"{self.qualname} uses register other than as a class decorator")
        return classes

    def class_attribute(self, cls: ast.ClassDef, attr: str, depth: int = 0) -> Any:
        """``cls.attr`` as the class body, or else its bases (depth first, left to right), assign it."""
        if depth > 20:
            raise _Unresolved(f"{self.qualname}.{cls.name}: bases too deep")
        if cls.name in self.class_stores:
            raise _Unresolved(f"{self.qualname}: sets an attribute of {cls.name} outside its class body")
        value, assigned = None, 0
        for statement in cls.body:
            if isinstance(statement, ast.Assign) and any(isinstance(t, ast.Name) and t.id == attr
                                                         for t in statement.targets):
                value, assigned = statement.value, assigned + 1
            elif isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name) \
                    and statement.target.id == attr and statement.value is not None:
                value, assigned = statement.value, assigned + 1
        if _class_bindings(cls).get(attr, 0) != assigned:
            raise _Unresolved(f"{self.qualname}.{cls.name}.{attr} is bound other than by a plain assignment")
        if value is not None:
            return self.evaluate(value, cls)
        for base in cls.bases:
            source, base_cls = self.resolve_class(base)
            try:
                return source.class_attribute(base_cls, attr, depth + 1)
            except _Missing:
                continue
        raise _Missing(f"{self.qualname}.{cls.name} has no {attr}")

    def resolve_class(self, node: ast.AST) -> tuple[_Source, ast.ClassDef]:
        source, found = self.resolve(node)
        if not isinstance(found, ast.ClassDef):
            raise _Unresolved(f"{self.qualname}: {ast.unparse(node)} is not a class defined in components")
        return source, found

    def resolve(self, node: ast.AST) -> tuple[_Source, ast.AST]:
        """The module and definition that a Name or a module.attribute refers to."""
        if isinstance(node, ast.Name):
            return self.lookup(node.id)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in self.imports:
            module, attribute = self.imports[node.value.id]
            if attribute is not None:  # from package import module
                module = f"{module}.{attribute}"
            return _Source.of(module).lookup(node.attr)
        raise _Unresolved(f"{self.qualname}: cannot follow {ast.unparse(node)}")

    def lookup(self, name: str, depth: int = 0) -> tuple[_Source, ast.AST]:
        if depth > 20:
            raise _Unresolved(f"{self.qualname}.{name}: imports too deep")
        if self.bindings.get(name, 0) > 1:
            raise _Unresolved(f"{self.qualname}.{name} is bound more than once")
        if name in self.scope:
            return self, self.scope[name]
        if name in self.imports:
            module, attribute = self.imports[name]
            if attribute is None:
                raise _Unresolved(f"{self.qualname}.{name} is a module")
            return _Source.of(module).lookup(attribute, depth + 1)
        raise _Unresolved(f"{self.qualname}: {name} is not defined at module level")

    def evaluate(self, node: ast.AST, cls: ast.ClassDef | None = None) -> Any:
        """A string expression, or a TaskKind member (as its value)."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left, right = self.evaluate(node.left, cls), self.evaluate(node.right, cls)
            if type(left) is str and type(right) is str:
                return left + right
        if isinstance(node, ast.Name):
            if cls is not None and node.id in _class_bindings(cls):
                raise _Unresolved(f"{self.qualname}.{cls.name}: {node.id} refers to the class body")
            source, value = self.lookup(node.id)
            if not isinstance(value, ast.ClassDef):
                return source.evaluate(value)
        if isinstance(node, ast.Attribute):  # TaskKind.X, OtherFamily.paper, module.CONSTANT
            try:
                source, owner = self.resolve_class(node.value)
            except _Unresolved:
                source, value = self.resolve(node)
                if isinstance(value, ast.ClassDef):
                    raise
                return source.evaluate(value)
            try:
                value = source.class_attribute(owner, node.attr)
                if (source.qualname, owner.name) == (f"{FAMILIES_PACKAGE}.base", "TaskKind"):
                    if type(value) is not str:
                        raise _Unresolved(f"TaskKind.{node.attr} is not a string constant")
                    return _TaskMember(value)
                return value
            except _Missing:
                raise _Unresolved(f"{self.qualname}: {ast.unparse(node)} is not assigned") from None
        raise _Unresolved(f"{self.qualname}: cannot evaluate {ast.unparse(node)}")


class _Missing(_Unresolved):
    """A class and its bases in components do not assign the attribute."""


@dataclass(frozen=True)
class _TaskMember:
    """``TaskKind.X`` of families/base.py, by its value."""

    value: str


def _bindings(body: list[ast.stmt]) -> dict[str, int]:
    """How often each name is bound in ``body``'s own scope (nested statements included, nested scopes not)."""
    counts: dict[str, int] = {}

    def bind(name: str) -> None:
        counts[name] = counts.get(name, 0) + 1

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bind(node.name)
            for child in node.decorator_list + getattr(node, "bases", []):
                visit(child)
            return
        if isinstance(node, ast.Lambda):
            return
        if isinstance(node, ast.AnnAssign) and node.value is None:  # `name: str` binds nothing
            return
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            bind(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                bind(alias.asname or alias.name.split(".")[0])
        for child in ast.iter_child_nodes(node):
            visit(child)

    for statement in body:
        visit(statement)
    return counts


_CLASS_BINDINGS: dict[int, tuple[ast.ClassDef, dict[str, int]]] = {}


def _class_bindings(cls: ast.ClassDef) -> dict[str, int]:
    if id(cls) not in _CLASS_BINDINGS:
        _CLASS_BINDINGS[id(cls)] = (cls, _bindings(cls.body))  # the node kept alive, so its id stays its own
    return _CLASS_BINDINGS[id(cls)][1]


def _is_register(decorator: ast.AST) -> bool:
    return (isinstance(decorator, ast.Name) and decorator.id == "register") or \
        (isinstance(decorator, ast.Attribute) and decorator.attr == "register")
