"""The import-layer contract (issue 17), checked over the source with :mod:`ast`.

Layers, lowest first; a package may import only from its own layer's packages
listed as allowed below and from lower layers, never from a higher one::

    cli                                  the command line (top)
    demo                                 the demo and its scenarios (the CLI passes its
                                         progress display in)
    federation                           code that runs both roles on one machine: the
                                         simulation engine, a loopback federation
    client   coordinator                 the two roles (coordinator may not import client
                                         except in the documented modules below; client
                                         never imports coordinator)
    compliance                           audit logs, grants, registry, reports
    protocols                            learning protocols and the DP code that runs on
                                         their outputs (client_dp, dp_sgd, dp_statistics,
                                         dp_segments, split_nn_dp)
    privacy                              mechanisms: accounting, DP plan, masking, CKKS,
                                         secure aggregation, key transport
    common                               errors, data contract, job specs, wire format,
                                         signing keys, atomic writer, job files (bottom)

``protocols`` may import ``privacy``, never the reverse (the old
``privacy <-> protocols`` cycle). ``experiments`` is research code: no fedcollab
package imports it, and the core tests (everything but ``tests/experiments`` and
``tests/integration``) import it only where listed below with the reason.

Every import counts, including ones inside functions (lazy imports still make a
dependency) and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LAYERS: dict[str, int] = {
    "common": 0,
    "privacy": 1,
    "protocols": 2,
    "compliance": 3,
    "client": 4,
    "coordinator": 4,
    "federation": 5,
    "demo": 6,
    "cli": 7,
}

# Imports that break the layers, each with its reason (none today). Keep it that way:
# the fix is to move code, not to add a line here.
ALLOWED: dict[tuple[str, str], str] = {}

# Core tests that still import experiments/, with the reason (none: the scenarios they
# need are product code in fedcollab.demo).
TESTS_USING_EXPERIMENTS: dict[str, str] = {}


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
            if node.module == "fedcollab":  # from fedcollab import client
                for alias in node.names:
                    yield node.lineno, f"fedcollab.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name


def _target(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "fedcollab" and len(parts) > 1 and parts[1] in LAYERS:
        return parts[1]
    if parts[0] == "experiments":
        return "experiments"
    if parts[0] in LAYERS:  # a bare `import common`: the pre-namespace layout
        return parts[0]
    return None


def _violations() -> list[str]:
    found = []
    for package, layer in LAYERS.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            for lineno, module in _imports(path):
                target = _target(module)
                if target is None or target == package:
                    continue
                if target == "experiments":
                    bad = True
                else:
                    higher = LAYERS[target] > layer
                    sideways = LAYERS[target] == layer  # client <-> coordinator
                    bad = higher or sideways
                if bad and (rel, target) not in ALLOWED:
                    found.append(f"{rel}:{lineno} imports {module} ({package} -> {target})")
    return found


def test_packages_respect_the_layers() -> None:
    assert _violations() == []


def test_every_allowed_exception_is_still_needed() -> None:
    """An exception whose import is gone must leave the list (it would hide a regression)."""
    used = set()
    for rel, target in ALLOWED:
        for _, module in _imports(ROOT / rel):
            if _target(module) == target:
                used.add((rel, target))
    assert used == set(ALLOWED)


def test_core_tests_do_not_import_experiments() -> None:
    found = set()
    for path in sorted((ROOT / "tests").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(("tests/experiments/", "tests/integration/")):
            continue
        if any(_target(m) == "experiments" for _, m in _imports(path)):
            found.add(rel)
    assert found == set(TESTS_USING_EXPERIMENTS)


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    """The scan finds lazy and aliased imports (the contract cannot pass vacuously)."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "def f():\n    from fedcollab.cli import app\n    import experiments.demo\n"
        "from fedcollab import coordinator\n"
    )
    targets = [_target(m) for _, m in _imports(probe)]
    assert targets.count("cli") == 1
    assert "experiments" in targets and "coordinator" in targets
