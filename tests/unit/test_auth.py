"""Authentication and authorization: hostile tokens are refused, tenants never see each other."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgcast.auth import (
    ANONYMOUS,
    AuthConfig,
    AuthError,
    Identity,
    Limits,
    Rules,
    TokenVerifier,
    VerificationKey,
    compile_rule,
    extract_token,
    load_auth_config,
    load_jwks,
    parse_rules,
)
from pgcast.events import ChangeEvent
from pgcast.exceptions import ConfigError, PgcastError
from pgcast.filters import Filter
from pgcast.hub import Hub, Subscription
from pgcast.protocol import CloseCode

NOW = 1_800_000_000.0
SECRET = "s3cret-" + "x" * 40
NO_ENV: dict[str, str] = {}


def clock() -> float:
    return NOW


@pytest.fixture(autouse=True)
def _no_pgcast_toml_in_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def hs_verifier(**kwargs: Any) -> TokenVerifier:
    return TokenVerifier([VerificationKey.from_secret(SECRET)], clock=clock, **kwargs)


def claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "user-1", "exp": NOW + 600, **extra}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: Mapping[str, Any], payload: Mapping[str, Any], key: bytes = b"") -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest() if key else b""
    return f"{signing_input}.{b64(signature)}"


def refused(verifier: TokenVerifier, token: str) -> AuthError:
    with pytest.raises(AuthError) as info:
        verifier.verify(token)
    if len(token.strip()) > 3:
        assert token.strip() not in str(info.value)  # the token is never echoed
    return info.value


# --- valid tokens ------------------------------------------------------------------------


def test_hs256_token_gives_identity_with_subject_and_expiry() -> None:
    identity = hs_verifier().verify(jwt.encode(claims(merchant_id=7), SECRET, "HS256"))
    assert identity.subject == "user-1"
    assert identity.expires_at == NOW + 600
    assert identity.claims["merchant_id"] == 7
    assert not identity.anonymous


def test_rs256_token_verified_with_pem_public_key(rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = TokenVerifier([VerificationKey.from_pem(public_pem(rsa_key))], clock=clock)
    assert verifier.verify(jwt.encode(claims(), rsa_key, "RS256")).subject == "user-1"


def test_es256_token_verified_with_pem_public_key(ec_key: ec.EllipticCurvePrivateKey) -> None:
    key = VerificationKey.from_pem(public_pem(ec_key))
    assert key.algorithms == ("ES256",)
    verifier = TokenVerifier([key], clock=clock)
    assert verifier.verify(jwt.encode(claims(), ec_key, "ES256")).subject == "user-1"


def jwks_document(*pairs: tuple[str, Any]) -> dict[str, Any]:
    keys = []
    for kid, private in pairs:
        jwk = json.loads(to_jwk(private))
        jwk["kid"] = kid
        keys.append(jwk)
    return {"keys": keys}


def to_jwk(private: Any) -> str:
    if isinstance(private, rsa.RSAPrivateKey):
        return jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key())
    return jwt.algorithms.ECAlgorithm.to_jwk(private.public_key())


def test_jwks_selects_the_key_named_by_kid(
    rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    keys = load_jwks(jwks_document(("a", rsa_key), ("b", other), ("c", ec_key)))
    verifier = TokenVerifier(keys, clock=clock)
    for kid, private, alg in [
        ("a", rsa_key, "RS256"),
        ("b", other, "RS256"),
        ("c", ec_key, "ES256"),
    ]:
        token = jwt.encode(claims(), private, alg, headers={"kid": kid})
        assert verifier.verify(token).subject == "user-1"
    # Signed with key a but claiming to be key b: b's signature check fails.
    wrong = jwt.encode(claims(), rsa_key, "RS256", headers={"kid": "b"})
    assert "signature" in refused(verifier, wrong).message
    unknown = jwt.encode(claims(), rsa_key, "RS256", headers={"kid": "zz"})
    assert "kid" in refused(verifier, unknown).message
    no_kid = jwt.encode(claims(), rsa_key, "RS256")
    assert "kid" in refused(verifier, no_kid).message


def test_jwks_refuses_private_and_symmetric_keys(rsa_key: rsa.RSAPrivateKey) -> None:
    private = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key))
    with pytest.raises(ConfigError, match="private key"):
        load_jwks({"keys": [private]})
    with pytest.raises(ConfigError, match="symmetric"):
        load_jwks({"keys": [{"kty": "oct", "k": b64(b"k" * 32)}]})
    with pytest.raises(ConfigError, match="JWKS"):
        load_jwks(b'{"not": "keys"}')
    with pytest.raises(ConfigError, match="JSON"):
        load_jwks(b"{")


# --- hostile tokens ----------------------------------------------------------------------


def test_forged_signature_is_refused() -> None:
    token = jwt.encode(claims(merchant_id=7), SECRET, "HS256")
    header, _, signature = token.split(".")
    forged = f"{header}.{b64(json.dumps(claims(merchant_id=8)).encode())}.{signature}"
    error = refused(hs_verifier(), forged)
    assert error.close_code == CloseCode.UNAUTHORIZED
    other_secret = jwt.encode(claims(), "y" * 48, "HS256")
    assert refused(hs_verifier(), other_secret).message == "token signature is invalid"


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_unsigned_alg_none_is_refused(alg: str) -> None:
    token = hand_made({"alg": alg, "typ": "JWT"}, claims())
    assert "none" in refused(hs_verifier(), token).message


def test_hs256_signed_with_the_public_key_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    # Algorithm confusion: the attacker knows the public key and uses it as an HMAC secret.
    pem = public_pem(rsa_key)
    verifier = TokenVerifier([VerificationKey.from_pem(pem)], clock=clock)
    token = hand_made({"alg": "HS256", "typ": "JWT"}, claims(), key=pem)
    error = refused(verifier, token)
    assert "HS256" in error.message and "RS256" in error.message


def test_rs256_token_refused_by_a_secret_only_gateway(rsa_key: rsa.RSAPrivateKey) -> None:
    token = jwt.encode(claims(), rsa_key, "RS256")
    assert "not accepted" in refused(hs_verifier(), token).message


def test_expired_token_closes_with_4503_and_leeway_applies() -> None:
    expired = jwt.encode(claims(exp=NOW - 31), SECRET, "HS256")
    error = refused(hs_verifier(), expired)
    assert error.close_code == CloseCode.TOKEN_EXPIRED
    assert "expired" in error.message
    within_leeway = jwt.encode(claims(exp=NOW - 29), SECRET, "HS256")
    assert hs_verifier().verify(within_leeway).expires_at == NOW - 29
    assert refused(hs_verifier(leeway=0), within_leeway).close_code == CloseCode.TOKEN_EXPIRED


def test_token_not_yet_valid_is_refused() -> None:
    future = jwt.encode(claims(nbf=NOW + 3600), SECRET, "HS256")
    error = refused(hs_verifier(), future)
    assert error.close_code == CloseCode.UNAUTHORIZED
    assert "not valid before" in error.message
    assert hs_verifier().verify(jwt.encode(claims(nbf=NOW + 10), SECRET, "HS256"))


@pytest.mark.parametrize("bad", ["soon", True, None, [1], float("nan")])
def test_exp_that_is_not_a_number_is_refused(bad: object) -> None:
    token = hand_made({"alg": "HS256"}, {"exp": bad}, key=SECRET.encode())
    if bad is None:  # a null exp is the same as no exp
        assert hs_verifier().verify(token).expires_at is None
    else:
        assert refused(hs_verifier(), token).close_code == CloseCode.UNAUTHORIZED


def test_audience_is_checked() -> None:
    verifier = hs_verifier(audience="pgcast")
    assert verifier.verify(jwt.encode(claims(aud="pgcast"), SECRET, "HS256"))
    assert verifier.verify(jwt.encode(claims(aud=["x", "pgcast"]), SECRET, "HS256"))
    assert "audience" in refused(verifier, jwt.encode(claims(aud="other"), SECRET, "HS256")).message
    assert "'aud'" in refused(verifier, jwt.encode(claims(), SECRET, "HS256")).message
    unexpected = jwt.encode(claims(aud="pgcast"), SECRET, "HS256")
    assert refused(hs_verifier(), unexpected).hint is not None  # tells to set jwt_audience


def test_issuer_is_checked() -> None:
    verifier = hs_verifier(issuer="https://auth.example.com")
    good = jwt.encode(claims(iss="https://auth.example.com"), SECRET, "HS256")
    assert verifier.verify(good)
    bad = jwt.encode(claims(iss="https://evil.example.com"), SECRET, "HS256")
    assert "issuer" in refused(verifier, bad).message
    assert "'iss'" in refused(verifier, jwt.encode(claims(), SECRET, "HS256")).message


def test_malformed_tokens_are_refused_with_4501() -> None:
    deep = b64(b"[" * 5000) + "." + b64(b"{}") + ".sig"
    for token in ["", "   ", "abc", "a.b.c", "a.b", "...", deep, "x" * 10_000, "é.é.é"]:
        assert refused(hs_verifier(), token).close_code == CloseCode.UNAUTHORIZED
    assert "sub" in refused(hs_verifier(), jwt.encode({"sub": 5}, SECRET, "HS256")).message


def segment(data: st.SearchStrategy[bytes]) -> st.SearchStrategy[str]:
    return data.map(b64)


json_header = st.fixed_dictionaries(
    {"alg": st.sampled_from(["HS256", "RS256", "none", "ES256", "", "HS512"]) | st.text()},
    optional={"kid": st.text() | st.integers(), "typ": st.text(), "crit": st.lists(st.text())},
).map(lambda header: json.dumps(header).encode())


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.text(max_size=300),
        st.builds(
            lambda *parts: ".".join(parts),
            segment(json_header | st.binary(max_size=64)),
            segment(st.binary(max_size=64) | st.just(b'{"sub": "x"}')),
            st.text(alphabet=string.ascii_letters + "-_=", max_size=64),
        ),
    )
)
def test_garbage_tokens_only_ever_raise_auth_error(token: str) -> None:
    try:
        hs_verifier().verify(token)
    except AuthError as error:
        assert error.close_code in (CloseCode.UNAUTHORIZED, CloseCode.TOKEN_EXPIRED)
        assert isinstance(error, PgcastError)


# --- token sources -----------------------------------------------------------------------


def test_extract_token_from_query_and_bearer_header() -> None:
    assert extract_token("/ws?token=abc&x=1", []) == "abc"
    assert extract_token("token=abc", []) == "abc"
    assert extract_token("/ws?token=a%2Eb", []) == "a.b"
    assert extract_token("/ws", []) is None
    assert extract_token("/ws?token=", []) is None
    assert extract_token("/ws", [("authorization", "Bearer t1")]) == "t1"
    assert extract_token("/ws?token=q", [("Authorization", "bearer  t1 ")]) == "t1"  # header wins
    assert extract_token("/ws?token=q", [("Authorization", "Basic dTpw")]) == "q"
    with pytest.raises(AuthError):
        extract_token("/ws?token=a&token=b", [])
    with pytest.raises(AuthError):
        extract_token("/ws", [("Authorization", "Bearer a"), ("Authorization", "Bearer b")])


# --- rules: parsing ----------------------------------------------------------------------

EXAMPLE_RULES = {
    "tables": {
        "orders": {"read": "merchant_id = claims.merchant_id"},
        "audit.events": {"read": "claims.role in (admin, auditor)"},
        "public_posts": {"read": "true"},
    },
    "channels": {
        "read": ["query_results_*", "system_notifications"],
        "publish": ["query_results_*"],
    },
}


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        ("merchant_id = claim.merchant_id", "claims are written claims.<name>"),
        ("merchant_id = jwt.merchant_id", "claims are written claims.<name>"),
        ("merchant_id = claims[merchant_id]", "unexpected '['"),
        ("merchant_id = $claims", "unexpected '$'"),
        ("merchant_id = claims.", "claim name after 'claims.'"),
        ("merchant_id = 1; drop table orders", "rules are not SQL"),
        ("merchant_id in (select id from merchants)", "rules are not SQL"),
        ("merchant_id = 1 -- comment", "rules are not SQL"),
        ("merchant_id = merchant_id", "bare word 'merchant_id'"),
        ("merchant_id > claims.merchant_id", "only with = and in"),
        ("merchant_id claims.merchant_id", "expects '=' or 'in'"),
        ("merchant_id = claims.a or", "expects a term"),
        ("(merchant_id = claims.a", "expects ')'"),
        ("merchant_id = claims.a)", "unexpected ')'"),
        ("status = 'open", "unterminated"),
        ("claims.role in admin", "expects '('"),
        ("and", "expects a term"),
        ("", "empty"),
        ("(" * 40 + "true" + ")" * 40, "nests parentheses"),
    ],
)
def test_bad_rules_fail_with_a_clear_message(rule: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_rules({"tables": {"orders": {"read": rule}}}, source="pgcast.toml [rules]")
    assert problem in str(info.value)
    assert "pgcast.toml [rules].tables.orders" in str(info.value)


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ({"tablez": {}}, "did you mean 'tables'"),
        ({"tables": {"orders": {"raed": "true"}}}, "did you mean 'read'"),
        ({"tables": {"orders": {}}}, "needs a read rule"),
        ({"tables": {"orders": "true"}}, "must be a table"),
        ({"tables": {"orders": {"read": 1}}}, "needs a read rule"),
        ({"tables": {"a.b.c": {"read": "true"}}}, "not a valid table name"),
        ({"tables": {"Orders": {"read": "true"}, "orders": {"read": "false"}}}, "already given"),
        ({"channels": {"read": ["bad-name"]}}, "not a channel pattern"),
        ({"channels": {"read": ["x_{claims.a-b}"]}}, "not a channel pattern"),
        ({"channels": {"listen": ["x"]}}, "unknown key 'listen'"),
    ],
)
def test_bad_rules_tables_fail_with_a_clear_message(table: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        parse_rules(table)


def test_rule_grammar_accepts_the_documented_forms() -> None:
    for rule in [
        "true",
        "false",
        "merchant_id = claims.merchant_id",
        "id in claims.order_ids",
        "claims.role = admin",
        "claims.role in (admin, auditor)",
        "claims.level = 3",
        "status = 'open' and merchant_id = claims.merchant_id",
        "merchant_id = claims.merchant_id or claims.role = admin",
        "(a = claims.a or b = claims.b) and c in (1, 2, 'x''y')",
        'tenant = claims.app_metadata.tenant and "Owner" = claims."https://example.com/uid"',
        "A = claims.a AND b = claims.b OR TRUE",
    ]:
        compile_rule(rule)


# --- rules: binding ----------------------------------------------------------------------


def identity(**claim_values: Any) -> Identity:
    return Identity(claims=claim_values, subject="u")


def test_example_rules_bind_to_claims() -> None:
    rules = parse_rules(EXAMPLE_RULES)
    merchant = rules.bind(identity(merchant_id=7, role="user"))
    orders = merchant.table("public", "orders")
    assert orders is not None
    assert orders.matches({"merchant_id": 7, "id": 1})
    assert not orders.matches({"merchant_id": 8, "id": 1})
    assert not orders.matches({"id": 1})
    assert str(orders) == "merchant_id=eq.7"
    assert merchant.table("audit", "events") is None  # claims-only term folded to forbidden
    assert merchant.table("public", "public_posts") is not None
    assert merchant.table("public", "unlisted") is None  # rules exist: no rule, no access
    assert merchant.table("other", "orders") is None  # unqualified rule names mean public

    auditor = rules.bind(identity(role=["user", "auditor"]))
    events = auditor.table("audit", "events")
    assert events is not None and events.allows_all and events.conditions() == ()
    assert auditor.table("public", "orders") is None  # no merchant_id claim: matches nothing


def test_missing_or_odd_claims_match_nothing() -> None:
    rules = parse_rules({"tables": {"orders": {"read": "merchant_id = claims.m"}}})
    for odd in [None, [7], {"a": 1}, float("nan")]:
        assert rules.bind(identity(m=odd)).table("public", "orders") is None
    assert rules.bind(ANONYMOUS).table("public", "orders") is None
    rule = rules.bind(identity(m=7)).table("public", "orders")
    assert rule is not None
    for row in [None, [], "x", {"merchant_id": [7]}, {"merchant_id": {"x": 7}}, {}]:
        assert rule.matches(row) is False  # type: ignore[arg-type]


def test_list_claims_bind_to_in_conditions() -> None:
    rules = parse_rules({"tables": {"orders": {"read": "merchant_id in claims.merchants"}}})
    many = rules.bind(identity(merchants=[1, 2, "x", {"bad": 1}])).table("public", "orders")
    assert many is not None and str(many) == "merchant_id=in.(1,2,x)"
    one = rules.bind(identity(merchants=[5])).table("public", "orders")
    assert one is not None and str(one) == "merchant_id=eq.5"  # eq: indexed by the hub
    assert rules.bind(identity(merchants=[])).table("public", "orders") is None


def test_rules_without_or_become_indexable_conditions() -> None:
    rules = parse_rules(
        {
            "tables": {
                "orders": {
                    "read": "merchant_id = claims.m and (claims.role = admin or status = 'open')"
                }
            }
        }
    )
    admin = rules.bind(identity(m=7, role="admin")).table("public", "orders")
    assert admin is not None and [str(c) for c in admin.conditions() or ()] == ["merchant_id=eq.7"]
    user = rules.bind(identity(m=7, role="user")).table("public", "orders")
    assert user is not None
    assert [str(c) for c in user.conditions() or ()] == ["merchant_id=eq.7", "status=eq.open"]
    either = parse_rules({"tables": {"t": {"read": "a = claims.a or b = claims.b"}}})
    rule = either.bind(identity(a=1, b=2)).table("public", "t")
    assert rule is not None and rule.conditions() is None
    assert rule.matches({"a": 1, "b": 0}) and rule.matches({"a": 0, "b": 2})
    assert not rule.matches({"a": 2, "b": 1})
    assert rule.columns() == {"a", "b"}


def test_bound_conditions_index_the_subscription_in_the_hub() -> None:
    rules = parse_rules(EXAMPLE_RULES)
    hub = Hub()
    subs = {}
    for merchant in (1, 2, 3):
        rule = rules.bind(identity(merchant_id=merchant)).table("public", "orders")
        assert rule is not None and rule.conditions() is not None
        sub = Subscription(
            f"m{merchant}",
            owner=None,
            schema="public",
            table="orders",
            events=frozenset({"INSERT", "UPDATE", "DELETE"}),
            filter=Filter(rule.conditions() or ()),
        )
        assert sub.index_column == "merchant_id"
        hub.add(sub)
        subs[merchant] = sub
    change = ChangeEvent.from_dicts(
        id=1, schema="public", table="orders", op="INSERT", record={"merchant_id": 2, "id": 9}
    )
    assert [sub.id for sub, _ in hub.match(change)] == ["m2"]


tenant_ids = st.one_of(
    st.integers(min_value=-(10**12), max_value=10**12),
    st.text(alphabet=string.ascii_letters, min_size=1, max_size=8),
)


def same_tenant(a: object, b: object) -> bool:
    return type(a) is type(b) and a == b


@settings(max_examples=300)
@given(tenant=tenant_ids, rows=st.lists(st.fixed_dictionaries({"merchant_id": tenant_ids})))
def test_a_tenant_never_matches_another_tenants_rows(
    tenant: object, rows: list[dict[str, object]]
) -> None:
    rules = parse_rules(EXAMPLE_RULES)
    rule = rules.bind(identity(merchant_id=tenant, role="user")).table("public", "orders")
    assert rule is not None
    conditions = Filter(rule.conditions() or ())
    for row in rows:
        if not same_tenant(row["merchant_id"], tenant):
            assert not rule.matches(row)
            assert not conditions.matches(row)
        else:
            assert rule.matches(row)


claim_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-5, max_value=5),
    st.floats(allow_nan=True),
    st.sampled_from(["a", "b", "1", "true", "x y", "", "1.0"]),
    st.lists(st.integers(min_value=-5, max_value=5) | st.sampled_from(["a", "b"]), max_size=3),
    st.dictionaries(st.sampled_from(["a", "b"]), st.integers(), max_size=2),
)
row_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-5, max_value=5),
    st.floats(allow_nan=True),
    st.sampled_from(["a", "b", "1", "true", "x y", "", "1.0"]),
    st.lists(st.integers(), max_size=2),
)
COLUMNS = ("a", "b", "c")
CLAIMS = ("p", "q", "r")
term = st.one_of(
    st.builds("{} = claims.{}".format, st.sampled_from(COLUMNS), st.sampled_from(CLAIMS)),
    st.builds("{} in claims.{}".format, st.sampled_from(COLUMNS), st.sampled_from(CLAIMS)),
    st.builds("claims.{} = a".format, st.sampled_from(CLAIMS)),
    st.builds("claims.{} in (1, b, true)".format, st.sampled_from(CLAIMS)),
    st.builds("{} = 'a'".format, st.sampled_from(COLUMNS)),
    st.builds("{} in (1, 2, 'b')".format, st.sampled_from(COLUMNS)),
    st.sampled_from(["true", "false"]),
)
rule_text = st.recursive(
    term,
    lambda inner: st.builds("({} {} {})".format, inner, st.sampled_from(["and", "or"]), inner),
    max_leaves=6,
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    rule=rule_text,
    claim_map=st.fixed_dictionaries({}, optional={name: claim_values for name in CLAIMS}),
    rows=st.lists(
        st.fixed_dictionaries({}, optional={name: row_values for name in COLUMNS}), max_size=5
    ),
)
def test_conditions_are_equivalent_to_matches(
    rule: str, claim_map: dict[str, Any], rows: list[dict[str, Any]]
) -> None:
    bound = parse_rules({"tables": {"t": {"read": rule}}}).bind(Identity(claims=claim_map))
    row_rule = bound.table("public", "t")
    if row_rule is None:
        return
    conditions = row_rule.conditions()
    for row in rows:
        result = row_rule.matches(row)  # never raises on odd types
        assert isinstance(result, bool)
        if conditions is not None:
            assert Filter(conditions).matches(row) == result


@settings(max_examples=200)
@given(
    rule=rule_text,
    claim_map=st.fixed_dictionaries({}, optional={name: claim_values for name in CLAIMS}),
)
def test_binding_is_deterministic_and_comparable(rule: str, claim_map: dict[str, Any]) -> None:
    rules = parse_rules({"tables": {"t": {"read": rule}}})
    first = rules.bind(Identity(claims=claim_map)).table("public", "t")
    second = rules.bind(Identity(claims=dict(claim_map))).table("public", "t")
    assert first == second


# --- channels ----------------------------------------------------------------------------


def test_channel_patterns_for_read_and_publish() -> None:
    grants = parse_rules(EXAMPLE_RULES).bind(ANONYMOUS)
    assert grants.can_read_channel("query_results_42")
    assert grants.can_read_channel("system_notifications")
    assert not grants.can_read_channel("system_notifications_x")
    assert not grants.can_read_channel("other")
    assert grants.can_publish("query_results_42")
    assert not grants.can_publish("system_notifications")
    for hostile in ["query_results_1; drop", "query_results_'", "", "query_results_" + "x" * 60]:
        assert not grants.can_read_channel(hostile)
        assert not grants.can_publish(hostile)


def test_channel_patterns_bound_to_claims() -> None:
    rules = parse_rules({"channels": {"read": ["tenant_{claims.merchant_id}_*"]}})
    assert rules.bind(identity(merchant_id=7)).can_read_channel("tenant_7_orders")
    assert not rules.bind(identity(merchant_id=7)).can_read_channel("tenant_8_orders")
    assert not rules.bind(identity(merchant_id=7)).can_read_channel("tenant_77_orders")
    # A claim cannot widen the pattern: '*' or other characters drop the pattern.
    for hostile in ["*", "7*", "a b", "", None, [7]]:
        assert not rules.bind(identity(merchant_id=hostile)).can_read_channel("tenant_7_orders")
    assert not rules.bind(ANONYMOUS).can_read_channel("tenant__orders")


def test_without_rules_everything_is_granted() -> None:
    grants = Rules().bind(ANONYMOUS)
    rule = grants.table("any", "table")
    assert rule is not None and rule.allows_all
    assert grants.can_read_channel("anything") and grants.can_publish("anything")
    assert not grants.can_read_channel("bad name")


# --- configuration -----------------------------------------------------------------------


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_nothing_configured_means_open_mode_with_a_loud_warning() -> None:
    config = load_auth_config(env=NO_ENV)
    assert config.mode == "open" and not config.required
    assert config.authenticate(None) is ANONYMOUS
    assert config.authenticate("whatever") is ANONYMOUS
    assert "AUTHENTICATION IS OFF" in (config.warning() or "")
    assert config.limits == Limits()


def test_secret_in_env_requires_a_token() -> None:
    config = load_auth_config(env={"PGCAST_JWT_SECRET": SECRET}, clock=clock)
    assert config.required and config.mode == "token" and config.warning() is None
    with pytest.raises(AuthError) as info:
        config.authenticate(None)
    assert info.value.close_code == CloseCode.UNAUTHORIZED
    assert config.authenticate(jwt.encode(claims(), SECRET, "HS256")).subject == "user-1"
    assert SECRET not in repr(config)


def test_anonymous_with_a_key_makes_the_token_optional_but_still_checked() -> None:
    config = load_auth_config({"anonymous": True}, env={"PGCAST_JWT_SECRET": SECRET}, clock=clock)
    assert not config.required and config.mode == "anonymous"
    assert config.authenticate(None) is ANONYMOUS
    with pytest.raises(AuthError):
        config.authenticate(jwt.encode(claims(), "y" * 48, "HS256"))


@pytest.mark.parametrize(
    ("env", "toml"),
    [
        ({"PGCAST_ANONYMOUS": "false"}, ""),
        ({"PGCAST_JWT_AUDIENCE": "pgcast"}, ""),
        ({}, '[rules.tables.orders]\nread = "true"\n'),
    ],
)
def test_auth_configured_without_any_key_is_a_startup_error(
    tmp_path: Path, env: dict[str, str], toml: str
) -> None:
    path = write(tmp_path, "pgcast.toml", toml)
    with pytest.raises(ConfigError, match="no JWT key"):
        load_auth_config(env=env, config_file=path)


def test_toml_auth_rules_and_limits_with_relative_key_path(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    write(tmp_path, "pub.pem", public_pem(rsa_key))
    toml = write(
        tmp_path,
        "pgcast.toml",
        """
[pgcast]
port = 9000

[auth]
jwt_public_key = "pub.pem"
jwt_audience = "pgcast"
jwt_issuer = "https://auth.example.com"

[limits]
max_connections_per_ip = 50
publish_rate = 2.5
allowed_origins = ["https://App.example.com/"]

[rules.tables.orders]
read = "merchant_id = claims.merchant_id"

[rules.channels]
read = ["query_results_*"]
""",
    )
    config = load_auth_config(env=NO_ENV, config_file=toml, clock=clock)
    assert config.required and config.verifier is not None
    assert config.verifier.algorithms[0] == "RS256"
    assert config.limits.max_connections_per_ip == 50
    assert config.limits.publish_rate == 2.5
    assert config.limits.origin_allowed("https://app.example.com")
    assert not config.limits.origin_allowed("https://evil.example.com")
    assert config.limits.origin_allowed(None)  # not a browser
    token = jwt.encode(
        claims(aud="pgcast", iss="https://auth.example.com", merchant_id=3), rsa_key, "RS256"
    )
    grants = config.rules.bind(config.authenticate(token))
    orders = grants.table("public", "orders")
    assert orders is not None and str(orders) == "merchant_id=eq.3"


def test_flags_beat_env_beat_toml(tmp_path: Path) -> None:
    toml = write(tmp_path, "pgcast.toml", "[limits]\npublish_rate = 1\nsubscribe_rate = 1\n")
    env = {"PGCAST_PUBLISH_RATE": "2", "PGCAST_SUBSCRIBE_RATE": "2"}
    config = load_auth_config(
        {"publish_rate": 3, "subscribe_rate": None}, env=env, config_file=toml
    )
    assert config.limits.publish_rate == 3
    assert config.limits.subscribe_rate == 2


def test_jwks_file_from_env(tmp_path: Path, ec_key: ec.EllipticCurvePrivateKey) -> None:
    path = write(tmp_path, "jwks.json", json.dumps(jwks_document(("k1", ec_key))))
    config = load_auth_config(env={"PGCAST_JWKS_FILE": str(path)}, clock=clock)
    token = jwt.encode(claims(), ec_key, "ES256", headers={"kid": "k1"})
    assert config.authenticate(token).subject == "user-1"


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ({"flags": {"jwt_secret": "short"}}, "at least 32"),
        ({"flags": {"jwt_secret": "-----BEGIN PUBLIC KEY-----" + "x" * 40}}, "looks like"),
        ({"flags": {"jwt_public_key": "/nonexistent/key.pem"}}, "cannot read"),
        ({"flags": {"jwt_secret": SECRET, "jwt_leeway": 9999}}, "leeway"),
        ({"flags": {"anonymous": "maybe"}}, "not true or false"),
        ({"flags": {"max_publish_bytes": 8000}}, "7999"),
        ({"flags": {"max_connections_per_ip": -1}}, "not a count"),
        ({"flags": {"subscribe_rate": "fast"}}, "rate per second"),
        ({"flags": {"allowed_origins": "app.example.com"}}, "not an origin"),
        ({"flags": {"jwt_secert": SECRET}}, "did you mean 'jwt_secret'"),
        ({"toml": "[auth]\njwt_secert = 'x'\n"}, "did you mean 'jwt_secret'"),
        ({"toml": "[limits]\nmax_connections = 1\n"}, "unknown key"),
        ({"toml": "auth = 1\n"}, "must be a table"),
    ],
)
def test_bad_auth_configuration_fails_with_a_clear_message(
    tmp_path: Path, source: dict[str, Any], problem: str
) -> None:
    path = write(tmp_path, "pgcast.toml", source.get("toml", ""))
    with pytest.raises(ConfigError) as info:
        load_auth_config(source.get("flags"), env=NO_ENV, config_file=path)
    assert problem in str(info.value)
    assert "short" not in str(info.value) or "jwt_secret" in str(info.value)


def test_pem_private_key_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    private = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ConfigError, match="private key"):
        VerificationKey.from_pem(private)
    with pytest.raises(ConfigError, match="not a PEM public key"):
        VerificationKey.from_pem(b"-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----")
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ConfigError, match="2048"):
        VerificationKey.from_pem(public_pem(small))


def test_limits_defaults_and_validation() -> None:
    limits = Limits()
    assert limits.max_publish_bytes == 7900
    assert limits.allowed_origins == ()
    assert limits.origin_allowed("https://anything.example")
    assert Limits(allowed_origins=("*",)).origin_allowed("https://x.example")
    with pytest.raises(ConfigError):
        Limits(max_publish_bytes=0)
    with pytest.raises(ConfigError):
        Limits(subscribe_rate=float("inf"))


def test_auth_config_defaults_are_open() -> None:
    assert AuthConfig().mode == "open"
    assert AuthConfig().authenticate(None) is ANONYMOUS


def test_longer_hmac_algorithms_need_longer_secrets() -> None:
    assert VerificationKey.from_secret("x" * 32).algorithms == ("HS256",)
    assert VerificationKey.from_secret("x" * 64).algorithms == ("HS256", "HS384", "HS512")
    short = hs_verifier()  # 47-byte secret: HS256 and HS384 only
    header = b64(json.dumps({"alg": "HS512"}).encode())
    signing_input = f"{header}.{b64(json.dumps(claims()).encode())}"
    signature = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha512).digest()
    hs512 = f"{signing_input}.{b64(signature)}"
    assert "not accepted" in refused(short, hs512).message
    long_secret = "z" * 64
    verifier = TokenVerifier([VerificationKey.from_secret(long_secret)], clock=clock)
    assert verifier.verify(jwt.encode(claims(), long_secret, "HS512")).subject == "user-1"
