"""The type stub python/siesta/_siesta.pyi matches the real extension module.

The stub is parsed with `ast` (never imported) and compared with `siesta._siesta`
both ways: the same public top-level names, classes declared with the same base
names, and for every class the same methods and properties (underscore-prefixed
ones included; dunders only for __init__, __call__, __iter__ and __next__), with
properties declared as @property exactly when the real attribute is a descriptor
rather than a method.
"""

import ast
import inspect
from pathlib import Path

import pytest
import siesta
import siesta._siesta as real

STUB = Path(siesta.__file__).resolve().parent / "_siesta.pyi"
KEPT_DUNDERS = {"__init__", "__call__", "__iter__", "__next__"}


def stub_tree():
    return ast.parse(STUB.read_text("utf-8"), filename=str(STUB))


def stub_top_level():
    """{name: node} for every class, function and annotated name at the stub's top level."""
    names = {}
    for node in stub_tree().body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            names[node.name] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = node
        elif isinstance(node, ast.Assign):
            names.update({t.id: node for t in node.targets if isinstance(t, ast.Name)})
    return names


def stub_classes():
    return {name: node for name, node in stub_top_level().items() if isinstance(node, ast.ClassDef)}


def kept(name):
    return not (name.startswith("__") and name.endswith("__")) or name in KEPT_DUNDERS


def is_property(func):
    return any(isinstance(d, ast.Name) and d.id == "property" for d in func.decorator_list)


def stub_members(cls_node):
    """{name: "property" | "method"} declared in a stub class body."""
    members = {}
    for node in cls_node.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and kept(node.name):
            members[node.name] = "property" if is_property(node) else "method"
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            members[node.target.id] = "property"
    return members


def real_members(cls):
    """{name: kind} the class adds to its bases (a constructor counts as __init__)."""
    inherited = set().union(*(dir(base) for base in cls.__mro__[1:]))
    own = set(vars(cls))
    members = {}
    for name in dir(cls):
        if kept(name) and (name not in inherited or name in own):
            attr = inspect.getattr_static(cls, name)
            members[name] = "property" if inspect.isdatadescriptor(attr) else "method"
    if "__new__" in own or "__init__" in own:
        members["__init__"] = "method"
    return members


def real_public_names():
    return {n for n in dir(real) if not n.startswith("_")}


def test_stub_parses_and_is_documented():
    tree = stub_tree()
    assert ast.get_docstring(tree), "the stub starts with a docstring"


def test_top_level_names_match():
    stub_names = set(stub_top_level())
    stub_public = {n for n in stub_names if not n.startswith("_")}
    assert sorted(real_public_names() - stub_public) == [], "missing from the stub"
    assert sorted(stub_public - real_public_names()) == [], "in the stub, not in the module"
    assert sorted(n for n in stub_names if not hasattr(real, n)) == []


def test_module_all_is_in_the_stub():
    exported = set(getattr(real, "__all__", ()))
    assert sorted(exported - set(stub_top_level())) == []


def test_kinds_match():
    """Classes are classes and functions are functions on both sides."""
    for name, node in stub_top_level().items():
        obj = getattr(real, name)
        if isinstance(node, ast.ClassDef):
            assert isinstance(obj, type), name
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            assert callable(obj) and not isinstance(obj, type), name


@pytest.mark.parametrize("name", sorted(stub_classes()))
def test_class_bases_match(name):
    node = stub_classes()[name]
    stub_bases = [ast.unparse(b) for b in node.bases] or ["object"]
    real_bases = [b.__name__ for b in getattr(real, name).__bases__]
    assert stub_bases == real_bases


@pytest.mark.parametrize("name", sorted(stub_classes()))
def test_class_members_match(name):
    declared = stub_members(stub_classes()[name])
    actual = real_members(getattr(real, name))
    assert sorted(set(actual) - set(declared)) == [], f"{name}: missing from the stub"
    assert sorted(set(declared) - set(actual)) == [], f"{name}: in the stub, not in the class"
    assert declared == actual, f"{name}: property/method kinds differ"
