"""pgcast: stream PostgreSQL row changes to browsers and services in real time."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
