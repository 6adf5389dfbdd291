"""Shared test fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """`<repo>/../shared`: the spec and the sample data (BiomedParse demo, a DICOM slice)."""
    return Path(__file__).resolve().parents[2] / "shared"
