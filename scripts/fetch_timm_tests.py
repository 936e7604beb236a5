"""Fetch timm's own model tests for the installed timm version, so that tests/test_timm_suite.py can run them offline.

timm's wheel has no tests; its sdist has ``tests/test_models.py`` (parametrized over the registry). This downloads
the sdist of exactly the installed version with pip and keeps four files under ``DEST/<version>/``:
``tests/test_models.py``, ``tests/conftest.py``, ``tests/__init__.py`` and ``pyproject.toml`` (its pytest markers).
Nothing else of the sdist is kept, so ``import timm`` there still finds the installed package. Idempotent: a version
already fetched is left as it is. Run by ``make venv``:

    .venv/bin/python scripts/fetch_timm_tests.py .venv/timm-tests
"""

from __future__ import annotations

import argparse
import importlib.metadata
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

FILES = ("tests/__init__.py", "tests/conftest.py", "tests/test_models.py", "pyproject.toml")


def fetch(dest: Path, version: str) -> Path:
    """``dest/version`` holding :data:`FILES` from timm's sdist of ``version`` (downloaded only if missing). The files
    are unpacked beside it and moved into place at once, so an interrupted fetch leaves nothing half-written."""
    target = dest / version
    if all((target / name).is_file() for name in FILES):
        return target
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                        f"timm=={version}", "--dest", tmp], check=True)
        unpacked = Path(tmp) / "files"
        with tarfile.open(Path(tmp) / f"timm-{version}.tar.gz") as archive:
            for name in FILES:
                (unpacked / name).parent.mkdir(parents=True, exist_ok=True)
                (unpacked / name).write_bytes(archive.extractfile(f"timm-{version}/{name}").read())
        shutil.rmtree(target, ignore_errors=True)  # a folder missing some of the files
        unpacked.rename(target)
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path, help="folder that receives <timm version>/tests/test_models.py")
    target = fetch(parser.parse_args().dest, importlib.metadata.version("timm"))
    print(f"timm's model tests: {target / 'tests' / 'test_models.py'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
