"""The code's shape, checked: the layer contract (import-linter) and one registry for family facts."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from genloom import families

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "genloom"


def test_layers_hold():
    """A lower layer importing a higher one (or a new cycle) fails here, and so in CI."""
    res = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "0 broken" in res.stdout and "2 kept" in res.stdout


def _family_string_checks(tree: ast.AST) -> list[int]:
    """Line numbers of comparisons like `x.family == "gpt"` or `family in ("vae", "vqvae")`."""
    hits = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        sides = [node.left, *node.comparators]
        names = [s.attr if isinstance(s, ast.Attribute) else s.id if isinstance(s, ast.Name) else None for s in sides]
        strings = [s for s in sides if isinstance(s, ast.Constant) and isinstance(s.value, str)
                   or isinstance(s, (ast.Tuple, ast.List, ast.Set)) and s.elts
                   and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in s.elts)]
        if "family" in names and strings:
            hits.append(node.lineno)
    return hits


def test_no_family_string_checks_outside_the_registry():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "families.py":
            continue
        for line in _family_string_checks(ast.parse(path.read_text(encoding="utf-8"))):
            offenders.append(f"{path.relative_to(ROOT)}:{line}")
    assert not offenders, f"ask genloom.families' record instead: {offenders}"


def test_the_string_check_finder_finds_one():
    assert _family_string_checks(ast.parse('if lm.family == "vae": pass\nok = family in ("a", "b")')) == [1, 2]
    assert _family_string_checks(ast.parse('if families.get(lm.family).kind == "image": pass')) == []


def test_no_function_local_genloom_imports():
    """Imports sit at module top; none hides a cycle inside a function."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith("genloom") or \
                            isinstance(inner, ast.Import) and any(a.name.startswith("genloom") for a in inner.names):
                        offenders.append(f"{path.relative_to(ROOT)}:{inner.lineno}")
    assert not offenders, offenders


def test_every_family_record_is_complete():
    for name, f in families.FAMILIES.items():
        assert f.name == name and f.kind in families.KINDS
        assert callable(f.write_card) and hasattr(f.task_cls, "from_config") and hasattr(f.task_cls, "loss")
        cfg = f.model_config({})  # every config has defaults
        assert isinstance(cfg, f.config_cls)


def test_unknown_family_names_the_valid_ones():
    with pytest.raises(Exception, match="choose one of .*gpt"):
        families.get("rnn")
