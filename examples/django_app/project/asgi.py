"""The project's ASGI application: pgcast under /realtime, Django for everything else.

This replaces a Django Channels setup whose LISTEN loop ran in a background thread of
the web process: pgcast's listener lives in the ASGI lifespan (started and stopped
with the server), and WebSocket clients connect to ws://host/realtime/ws.

Run: DATABASE_URL=postgresql://... uvicorn project.asgi:application
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

from django.core.asgi import get_asgi_application

django_app = get_asgi_application()  # sets Django up: models can be imported after it

from shop.hooks import register  # noqa: E402

import pgcast  # noqa: E402

PREFIX = "/realtime"
realtime = pgcast.asgi_app(dsn=os.environ["DATABASE_URL"])
register(realtime)


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        # Django's handler does not speak lifespan; pgcast does (start/stop the listener).
        await realtime(scope, receive, send)
        return
    path = scope.get("path", "")
    if path == PREFIX or path.startswith(PREFIX + "/"):
        # Like a mount: pgcast routes on the path below root_path.
        scope = {**scope, "root_path": scope.get("root_path", "") + PREFIX}
        await realtime(scope, receive, send)
        return
    await django_app(scope, receive, send)
