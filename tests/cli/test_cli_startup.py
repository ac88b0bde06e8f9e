"""The command line starts without the libraries only some of its commands use.

Every ``fedcollab`` call, ``fedcollab --help`` included, imported torch and Ray (through
``cli/run.py``'s job runner) and Google's dp_accounting with SciPy (through
``privacy/accounting.py``, which the budget, node and job commands reach): about 2 s
on an idle 2-core machine and 5-9 s on a loaded one before anything ran. They are now
imported by the code that computes with them.
"""

from __future__ import annotations

import subprocess
import sys

_HEAVY = ("torch", "ray", "dp_accounting", "scipy")


def _loaded_after(statement: str) -> list[str]:
    code = f"import sys\n{statement}\nprint(' '.join(m for m in {_HEAVY!r} if m in sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    return done.stdout.split()


def test_the_command_line_imports_no_training_or_accounting_library() -> None:
    assert _loaded_after("import fedcollab.cli.app") == []


def test_the_accountant_imports_its_library_when_it_computes() -> None:
    statement = (
        "from fedcollab.privacy import accounting as a\n"
        "assert 'dp_accounting' not in sys.modules\n"
        "e = a.epsilon([a.Gaussian(noise_multiplier=1.0, count=3)], target_delta=1e-5)\n"
        "assert 0 < e < float('inf'), e"
    )
    assert "dp_accounting" in _loaded_after(statement)
