"""Shared set-up of the package's tests.

The tests run against the installed package (`pip install ./python`). So that
a stale installation cannot pass for the working tree's code, they refuse to
run when the installed extension was built from other Rust sources than the
tree's (its `__source_hash__`, see python/build.rs) or when the installed
Python files differ from the tree's.
"""

import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "python" / "matdiff"
HASHED = ["src", "grammar", "python/src"]


def source_hash(root: pathlib.Path) -> str:
    """FNV-1a (64-bit) over each file's relative path, a NUL, its bytes and a
    NUL, in sorted path order: what python/build.rs computes."""
    files = []
    for d in HASHED:
        base = root / d
        for dirpath, _, names in os.walk(base):
            for n in names:
                p = pathlib.Path(dirpath) / n
                files.append((p.relative_to(root).as_posix(), p))
    files.sort()
    h = 0xCBF29CE484222325
    mask = (1 << 64) - 1
    prime = 0x100000001B3
    for name, path in files:
        for chunk in (name.encode(), b"\0", path.read_bytes(), b"\0"):
            for b in chunk:
                h = ((h ^ b) * prime) & mask
    return f"{h:016x}" if files else "unknown"


def pytest_configure(config):
    try:
        import matdiff
    except ImportError as e:
        pytest.exit(f"matdiff is not installed ({e}): run `pip install ./python` first", returncode=2)
    installed = pathlib.Path(matdiff.__file__).resolve().parent
    if installed == PACKAGE.resolve():
        pytest.exit("matdiff was imported from the working tree, not the installed package: "
                    "run pytest from the repository root (python3 -m pytest python/tests)", returncode=2)
    stale = []
    built = getattr(matdiff._core, "__source_hash__", None)
    if built != source_hash(ROOT):
        stale.append("the Rust extension was built from other sources")
    for name in ("__init__.py", "__init__.pyi", "py.typed"):
        tree, inst = PACKAGE / name, installed / name
        if tree.exists() and (not inst.exists() or inst.read_bytes() != tree.read_bytes()):
            stale.append(f"matdiff/{name} differs from the working tree's")
    if stale:
        pytest.exit(f"the installed matdiff ({installed}) is stale: {'; '.join(stale)}. "
                    "Run `pip install ./python` again.", returncode=2)


def framework(name):
    """The module, or a skip (a failure when MATDIFF_REQUIRE_FRAMEWORKS=1)."""
    try:
        module = __import__(name)
    except ImportError as e:
        if os.environ.get("MATDIFF_REQUIRE_FRAMEWORKS") == "1":
            pytest.fail(f"{name} is required (MATDIFF_REQUIRE_FRAMEWORKS=1) but cannot be imported: {e}")
        pytest.skip(f"{name} is not installed")
    if name == "jax":
        module.config.update("jax_enable_x64", True)
    return module


@pytest.fixture
def torch():
    t = framework("torch")
    return t


@pytest.fixture
def jax():
    return framework("jax")


@pytest.fixture
def np():
    return framework("numpy")


def example(name: str) -> str:
    return (ROOT / "examples" / f"{name}.mdiff").read_text(encoding="utf-8")


@pytest.fixture
def seed():
    return example("backprop")
