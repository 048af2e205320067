"""Stockade: a self-hosted, secure package repository for Python and conda."""

__version__ = "0.1.0"
