"""What halluc promises about the files it reads: no pickle, `torch.load` only with `weights_only=True`,
never `trust_remote_code=True`. A scan of the package's syntax trees, so a new call cannot slip in."""
from __future__ import annotations

import ast
from pathlib import Path

import halluc

PACKAGE = Path(halluc.__file__).parent
UNSAFE_MODULES = {"pickle", "cPickle", "dill", "joblib", "shelve", "marshal"}


def _calls():
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            yield path, node


def _keyword(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def test_nothing_imports_an_unpickler():
    found = [f"{path.relative_to(PACKAGE)}:{node.lineno}" for path, node in _calls()
             if isinstance(node, (ast.Import, ast.ImportFrom))
             and any((alias.name.split(".")[0] in UNSAFE_MODULES) for alias in getattr(node, "names", []))
             or isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_MODULES]
    assert not found


def test_torch_load_only_reads_weights():
    loads = [(path, node) for path, node in _calls() if isinstance(node, ast.Call)
             and isinstance(node.func, ast.Attribute) and node.func.attr == "load"
             and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"]
    assert loads, "the scan should see the CCA checkpoint's torch.load"
    for path, call in loads:
        flag = _keyword(call, "weights_only")
        assert isinstance(flag, ast.Constant) and flag.value is True, f"{path}:{call.lineno}"


def test_remote_code_is_never_trusted():
    for path, node in _calls():
        if isinstance(node, ast.keyword) and node.arg == "trust_remote_code":
            assert isinstance(node.value, ast.Constant) and node.value.value is False, f"{path}:{node.value.lineno}"
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Subscript) \
                and getattr(node.targets[0].slice, "value", None) == "trust_remote_code":
            assert isinstance(node.value, ast.Constant) and node.value.value is False, f"{path}:{node.lineno}"


def test_the_loader_asks_transformers_not_to_run_remote_code(monkeypatch):
    from transformers import AutoConfig

    from halluc.modeling import loading

    seen = {}

    def refuse(source, **kwargs):
        seen.update(kwargs)
        raise OSError("offline")

    monkeypatch.setattr(AutoConfig, "from_pretrained", refuse)
    monkeypatch.setattr(loading, "hub_reachable", lambda timeout=3.0: False)
    try:
        loading._load_pretrained("x", "someone/model", None, None)
    except Exception:
        pass
    assert seen.get("trust_remote_code") is False
