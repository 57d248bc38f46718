"""Defaults live in one place: the core's `Default`s.

Every optional setting of `ContextStore`, `ModelStore` and `HierarchicalDrafter` is `None` in the
binding's signature and in the stub, and a constructor fills it from the core. These tests check
that no second copy of a default value exists in Python and that what Python sees is the core's.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Any, Callable

import pytest

from hierdraft import _core

STUB = Path(_core.__file__).with_name("_core.pyi")

# (class name, constructors that take the class's settings)
CONSTRUCTORS: list[tuple[str, list[Callable[..., Any]]]] = [
    ("ContextStore", [_core.ContextStore]),
    ("ModelStore", [_core.ModelStore, lambda **kw: _core.ModelStore.build([], **kw)]),
    ("HierarchicalDrafter", [_core.HierarchicalDrafter]),
]
SIGNATURES = {
    "ContextStore": [("ContextStore", "__new__")],
    "ModelStore": [("ModelStore", "__new__"), ("ModelStore", "build")],
    "HierarchicalDrafter": [("HierarchicalDrafter", "__new__")],
}


def _runtime_signature(cls_name: str, method: str) -> inspect.Signature:
    cls = getattr(_core, cls_name)
    return inspect.signature(cls if method == "__new__" else getattr(cls, method))


def _stub_defaults(cls_name: str, method: str) -> dict[str, Any]:
    """Parameter name -> default expression (as source text) of a method in the stub."""
    tree = ast.parse(STUB.read_text())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls_name:
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == method:
                    args = item.args.args
                    defaults = item.args.defaults
                    named = args[len(args) - len(defaults):]
                    return {a.arg: ast.unparse(d) for a, d in zip(named, defaults)}
    raise AssertionError(f"{cls_name}.{method} not in the stub")


def test_default_settings_cover_exactly_the_optional_settings() -> None:
    defaults = _core.default_settings()
    assert set(defaults) == set(SIGNATURES)
    for cls_name, methods in SIGNATURES.items():
        for _, method in methods:
            params = _runtime_signature(cls_name, method).parameters
            optional = {name for name, p in params.items() if p.default is None}
            # store arguments (model_store, corpus_index) are not settings
            optional -= {"model_store", "corpus_index"}
            assert optional == set(defaults[cls_name]), (cls_name, method)


@pytest.mark.parametrize("cls_name", list(SIGNATURES))
def test_no_default_value_is_written_twice(cls_name: str) -> None:
    settings = _core.default_settings()[cls_name]
    for _, method in SIGNATURES[cls_name]:
        runtime = _runtime_signature(cls_name, method).parameters
        stub = _stub_defaults(cls_name, method)
        for name in settings:
            assert runtime[name].default is None, (cls_name, method, name)
            assert stub[name] == "None", (cls_name, method, name, stub[name])


@pytest.mark.parametrize("cls_name, constructors", CONSTRUCTORS)
def test_objects_built_with_defaults_carry_the_core_defaults(
    cls_name: str, constructors: list[Callable[..., Any]]
) -> None:
    settings = _core.default_settings()[cls_name]
    for make in constructors:
        left_out = make()
        given_none = make(**{name: None for name in settings})
        for name, value in settings.items():
            assert getattr(left_out, name) == value, (cls_name, name)
            assert getattr(given_none, name) == value, (cls_name, name)


def test_a_given_setting_overrides_only_itself() -> None:
    defaults = _core.default_settings()["HierarchicalDrafter"]
    drafter = _core.HierarchicalDrafter(budget=defaults["budget"] + 3, order=("corpus",))
    assert drafter.budget == defaults["budget"] + 3
    assert drafter.order == ("corpus",)
    assert drafter.max_depth == defaults["max_depth"]
    store = _core.ModelStore(max_ngram=5)
    assert store.max_ngram == 5
    assert store.top_k == _core.default_settings()["ModelStore"]["top_k"]

