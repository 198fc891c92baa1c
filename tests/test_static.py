"""Static checks: ``mypy`` and ``ruff check``, configured in pyproject.toml, stay clean.

Both run from the repository root exactly as a developer would run them
(``python -m mypy``, ``python -m ruff check .``), so the configuration in
pyproject.toml is the only one. mypy keeps its incremental cache in
``.mypy_cache``: a warm run takes about a second, a cold one several.
"""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

def _check(module: str, *args: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed: pip install -e '.[test]'")
    proc = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=100
    )
    command = " ".join(["python -m", module, *args])
    assert proc.returncode == 0, f"{command} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"


def test_mypy() -> None:
    _check("mypy")


def test_ruff() -> None:
    _check("ruff", "check", ".")


@pytest.mark.parametrize("package", ["mc", "mc.client", "mc.consumer", "mc.protocol", "mc.websocket"])
def test_all_is_explicit_and_complete(package: str) -> None:
    """Every name in ``__all__`` resolves, and ``mc``'s lazy table has exactly those."""
    module = importlib.import_module(package)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing, f"{package}.__all__ names what it does not define: {missing}"
    if package == "mc":
        assert set(module.__all__) == set(module._EXPORTS)
