"""timm's own model tests (its ``tests/test_models.py``, markers base, cfg and features) over every delving_* model.

The file is not in timm's wheel: ``make venv`` fetches it from the sdist of the installed timm version
(``scripts/fetch_timm_tests.py``) into ``<venv>/timm-tests/<version>/``; nothing is downloaded here. It runs in a
subprocess of its own, with delving loaded as a pytest plugin (``-p delving``) so that the registry holds its models
when timm's file parametrizes over ``list_models()``.
"""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
import timm

import delving  # noqa: F401

SUITE = Path(sys.prefix) / "timm-tests" / timm.__version__
MODELS = sorted(timm.list_models("delving_*"))
MARKERS = "base or cfg or features"
# What timm's markers select for a registry model: the config/head contract (pool_size, num_features,
# head_hidden_size, reset_classifier(0, ''), device and dtype) and features_only's stages.
TESTS = ("test_model_default_cfgs", "test_model_forward_features")
EXPECTED = {f"{test}[1-{name}]" for name in MODELS for test in TESTS}


def run_timm_tests(junit: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "delving", "-p", "no:cacheprovider", "-m", MARKERS,
               "-k", "delving_", f"--junitxml={junit}", "tests/test_models.py"]
    return subprocess.run(command, cwd=SUITE, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_timm_model_tests_pass_for_every_delving_model(tmp_path):
    if not (SUITE / "tests" / "test_models.py").is_file():
        pytest.skip(f"timm's model tests for timm {timm.__version__} are not at {SUITE}; `make venv` fetches them "
                    f"(scripts/fetch_timm_tests.py)")
    proc = run_timm_tests(tmp_path / "junit.xml")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    cases = ElementTree.parse(tmp_path / "junit.xml").getroot().iter("testcase")
    outcome = {case.get("name"): [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
               for case in cases}
    assert set(outcome) == EXPECTED  # each model through both tests: none missing from the registry, none extra
    assert not {name: tags for name, tags in outcome.items() if tags}
