"""Fixtures for the editor tests."""

from __future__ import annotations

import pytest
from nvim_harness import nvim_binary


@pytest.fixture(scope="session")
def nvim() -> str:
    """Path of the Neovim binary the tests drive."""
    return nvim_binary()
