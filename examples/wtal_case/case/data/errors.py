"""Errors raised by the data readers and the synthetic generator."""

from __future__ import annotations


class DatasetError(ValueError):
    """A data set on disk is inconsistent or malformed; the message names the file."""


class DatasetFileNotFoundError(DatasetError, FileNotFoundError):
    """A file the data set needs is missing; the message names the path."""
