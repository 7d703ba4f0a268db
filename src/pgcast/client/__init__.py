"""The Python client of the pgcast gateway.

::

    async with pgcast.client.connect("ws://127.0.0.1:8000", token=None) as client:
        async with client.subscribe("orders", filter="status=eq.pending") as sub:
            async for frame in sub:        # "change" frames, and "resync" frames
                ...

The client reconnects by itself and resumes every subscription from the last
change it delivered, dropping replayed duplicates. Errors (all subclasses of
:class:`pgcast.exceptions.PgcastError`)::

    ClientError
    ├── SubscriptionRefused   the gateway answered subscribe with error (not retried)
    ├── ConnectionRejected    close code 4500-4999 or HTTP 401/403: no reconnect
    ├── FrameTooBig           close 1009 while a subscribe was unanswered
    ├── ClientClosed          subscribing on a closed client
    └── TopicError            a topic message refused, or a broadcast not sent

The client never imports gateway modules.
"""

from __future__ import annotations

from pgcast.client._connection import (
    Client,
    ClientClosed,
    ClientError,
    ClientStatus,
    ConnectionRejected,
    FrameTooBig,
    Subscription,
    SubscriptionRefused,
    SubscriptionState,
    connect,
)
from pgcast.client._topic import Topic, TopicState, apply_presence_diff
from pgcast.exceptions import TopicError

__all__ = [
    "Client",
    "ClientClosed",
    "ClientError",
    "ClientStatus",
    "ConnectionRejected",
    "FrameTooBig",
    "Subscription",
    "SubscriptionRefused",
    "SubscriptionState",
    "Topic",
    "TopicError",
    "TopicState",
    "apply_presence_diff",
    "connect",
]
