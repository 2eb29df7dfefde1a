"""Fixtures of the data tests: a small GSC-layout tree of real FSDD speech (see datatrees.py)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the helpers module beside this file
from datatrees import build_tree, sub_words  # noqa: E402


@pytest.fixture(scope="session")
def gsc_tree(tmp_path_factory) -> Path:
    """A read-only 12-word GSC-layout tree; copy it before preparing into it."""
    return build_tree(tmp_path_factory.mktemp("gsc") / "tree", sub_words())


@pytest.fixture
def tree_copy(gsc_tree, tmp_path) -> Path:
    """A private copy of the session tree, as the data root."""
    dst = tmp_path / "root"
    shutil.copytree(gsc_tree, dst)
    return dst


