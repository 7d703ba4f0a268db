"""Supabase Realtime compatibility: a Phoenix-channels endpoint that the unmodified
``@supabase/supabase-js`` uses, served by pgcast's own sessions (docs/supabase.md).

``frames`` (the 1.0.0 and 2.0.0 serializers), ``changes`` (bindings to subscriptions,
changes to ``postgres_changes`` messages) and ``channel`` (one connection's Phoenix
state) are pure; ``endpoint`` is the glue the node calls.
"""

from __future__ import annotations

from .channel import PhoenixSession
from .endpoint import PhoenixConnection, PhoenixEndpoint
from .frames import Message, Vsn

__all__ = ["Message", "PhoenixConnection", "PhoenixEndpoint", "PhoenixSession", "Vsn"]
