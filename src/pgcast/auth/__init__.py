"""Authentication and authorization: who is this client, and what may it see?

Pure (no sockets, no database; it reads the TOML, PEM and JWKS files named by the
configuration once, when the configuration is loaded). The gateway uses it like this::

    config = load_auth_config(flags, env=os.environ)      # once, at startup
    token = extract_token(request_target, headers)          # per connection
    identity = config.authenticate(token)                   # AuthError -> close 4501/4503
    grants = config.rules.bind(identity)                    # per connection (and per `auth`)
    rule = grants.table("public", "orders")                 # None -> forbidden
    rule.conditions()  # AND these into the subscription's filter, or call rule.matches(row)

Pieces:

Modules: ``tokens`` (``TokenVerifier``, ``extract_token``, ``Identity``),
``rule_grammar`` and ``rules`` (the rule language, ``Rules``, ``Grants``, ``RowRule``),
``limits`` (``Limits``), ``config`` (``AuthConfig`` and ``load_auth_config``, read by
``pgcast.config``'s one loader). ``AuthError`` is in ``pgcast.exceptions``.

* ``TokenVerifier`` checks a JWT (PyJWT does the cryptography) against keys whose type
  fixes the accepted algorithms: a secret accepts HS256/384/512 only, an RSA key RS*/PS*
  only, an EC key the ES* algorithm of its curve only. ``alg: none`` and algorithm
  confusion cannot pass. ``exp`` and ``nbf`` are checked here with an injectable clock.
* ``Rules`` are compiled once from ``[rules]``; ``Rules.bind(identity)`` gives ``Grants``;
  a table's bound ``RowRule`` folds claims-only terms to constants and, when it is a
  conjunction of equality terms, turns into ``pgcast.filters.Condition`` values the hub
  indexes, so authorization costs a hash lookup, not a query per event per subscriber.
* ``Limits`` parses the per-subject / per-IP / rate / size / origin limits the gateway
  enforces.

The rule grammar, the open / anonymous / token modes and the close codes are documented
in ``docs/security.md``.
"""

from ..exceptions import AuthError
from ..protocol import MAX_TOKEN_LENGTH
from .config import AuthConfig, load_auth_config
from .limits import Limits
from .rule_grammar import compile_rule
from .rules import Grants, RowRule, Rules, TopicRights, parse_rules
from .tokens import ANONYMOUS, Identity, TokenVerifier, VerificationKey, extract_token, load_jwks

__all__ = [
    "ANONYMOUS",
    "MAX_TOKEN_LENGTH",
    "AuthConfig",
    "AuthError",
    "Grants",
    "Identity",
    "Limits",
    "RowRule",
    "Rules",
    "TokenVerifier",
    "TopicRights",
    "VerificationKey",
    "compile_rule",
    "extract_token",
    "load_auth_config",
    "load_jwks",
    "parse_rules",
]
