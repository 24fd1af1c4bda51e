"""`Registry[T]`: one behaviour for every registry (methods, aliases, families, offline models, benchmarks,
datasets)."""
from __future__ import annotations

import types

import pytest

from halluc.errors import HallucError
from halluc.registry import Registry


def test_duplicates_are_refused_and_unknown_names_get_a_suggestion():
    things = Registry[int]("thing", plugins=False)
    things.register("alpha", 1)
    with pytest.raises(ValueError, match="thing 'alpha' is already registered"):
        things.register("alpha", 2)
    with pytest.raises(HallucError, match=r"unknown thing 'alpah' \(did you mean 'alpha'\?\); choices: alpha"):
        things.get("alpah")
    assert things.get("alpha") == 1 and "alpha" in things and things.names() == ["alpha"]


def test_builtins_load_lazily_on_the_first_lookup(monkeypatch):
    things = Registry[str]("thing", ["halluc_test_builtin_things"], plugins=False)
    imported = []

    def import_module(name):  # what importing a built-in module does: it registers its items
        imported.append(name)
        things.register("built-in", "yes")
        return types.ModuleType(name)

    monkeypatch.setattr("importlib.import_module", import_module)
    assert things.peek() == {} and imported == []
    assert things.get("built-in") == "yes" and things.names() == ["built-in"]
    assert imported == ["halluc_test_builtin_things"]  # once, however many lookups


def test_every_lookup_loads_the_plugins(monkeypatch):
    from halluc import registry

    calls = []
    monkeypatch.setattr(registry, "load_plugins", lambda: calls.append(1))
    things = Registry[int]("thing")
    things.names()
    "x" in things  # noqa: B015
    assert len(calls) == 2


def test_a_check_can_refuse_an_item_and_registered_is_scoped():
    def positive(name, value):
        if value <= 0:
            raise ValueError(f"{name} must be positive")

    things = Registry[int]("thing", plugins=False, check=positive)
    with pytest.raises(ValueError, match="must be positive"):
        things.register("zero", 0)
    with things.registered("one", 1):
        assert things.get("one") == 1
    assert "one" not in things


def test_the_package_registries_share_the_type():
    from halluc.benchmarks.build import DATASETS
    from halluc.benchmarks.spec import BENCHMARKS
    from halluc.interventions.registry import ALIASES, METHODS
    from halluc.modeling.registry import FAMILIES, OFFLINE_MODELS

    for registry in (DATASETS, BENCHMARKS, ALIASES, METHODS, FAMILIES, OFFLINE_MODELS):
        assert isinstance(registry, Registry)
    assert "vcd" in METHODS and "ritual-vcd" in ALIASES and "llava" in FAMILIES and "tiny-llava" in OFFLINE_MODELS
    assert "pope" in BENCHMARKS and "world" in DATASETS  # the toy world's plugin registered its dataset
    with pytest.raises(ValueError, match="already registered"):
        ALIASES.register("vcd", ("vcd",))  # a method and an alias never share a name
