"""The broker tier: one elected reader publishes the change log to NATS JetStream,
every node consumes the stream (docs/scaling.md).

``address`` and ``codec`` are pure and import nothing optional; ``nats`` (the link
and the node's stream consumer) and ``reader`` (the elected reader) need the
``nats-py`` package (``pip install 'pgcast[nats]'``). The node reaches them through
:class:`pgcast.broker.tier.BrokerTier`, imported only when ``broker`` is set.
"""
