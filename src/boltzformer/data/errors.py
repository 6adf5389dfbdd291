"""The one error type the data layer raises for bad input."""

from __future__ import annotations


class DataError(ValueError):
    """Bad input data: the message names the file (or folder) and the problem."""
