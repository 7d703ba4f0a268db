"""pgcast: stream PostgreSQL row changes to browsers and services in real time."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .asgi import asgi_app

__all__ = ["__version__", "asgi_app"]


def __getattr__(name: str) -> Any:
    # Imported on first use: `import pgcast` (and the client) stays free of the server.
    if name == "asgi_app":
        from .asgi import asgi_app

        return asgi_app
    raise AttributeError(f"module 'pgcast' has no attribute {name!r}")
