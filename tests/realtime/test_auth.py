"""JWT verification: pure, no I/O."""
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from realtime import auth
from realtime.errors import ApiError
from realtime.settings import Settings

SECRET = "a-test-secret-that-is-long-enough-32b"


def _rsa():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return key, pub


def _ec():
    key = ec.generate_private_key(ec.SECP256R1())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return key, pub


RSA_KEY, RSA_PUB = _rsa()
EC_KEY, EC_PUB = _ec()


def claims(**over):
    # Read at each call, not at import: PyJWT checks `exp` against the real clock, and a
    # full suite reaches these tests more than 600 s after collecting them.
    now = time.time()
    base = {"sub": "alice", "exp": int(now + 600), "iat": int(now)}
    base.update(over)
    return base


def code_of(token, settings):
    with pytest.raises(ApiError) as info:
        auth.verify(token, settings)
    return info.value.code


HS = Settings(jwt_secret=SECRET)
ASYM = Settings(jwt_algorithms=("RS256", "ES256"),
                jwt_public_keys={"rsa-1": RSA_PUB, "ec-1": EC_PUB},
                jwt_audience="chat", jwt_issuer="https://auth.example")


def test_hs256_valid_token_gives_identity():
    body = claims(sid="s1", did="phone")
    ident = auth.verify(jwt.encode(body, SECRET, algorithm="HS256"), HS)
    assert (ident.user_id, ident.session_id, ident.device_id) == ("alice", "s1", "phone")
    assert ident.expires_at == body["exp"]


def test_wrong_secret_is_invalid():
    tok = jwt.encode(claims(), "another-secret-that-is-long-enough!!", algorithm="HS256")
    assert code_of(tok, HS) == "auth_invalid"


def test_expired_token_is_expired():
    tok = jwt.encode(claims(exp=int(time.time() - 60)), SECRET, algorithm="HS256")
    assert code_of(tok, HS) == "auth_expired"


def test_alg_none_is_invalid():
    tok = jwt.encode(claims(), None, algorithm="none")
    assert code_of(tok, HS) == "auth_invalid"


@pytest.mark.parametrize("missing", ["sub", "exp"])
def test_required_claims(missing):
    c = claims()
    del c[missing]
    assert code_of(jwt.encode(c, SECRET, algorithm="HS256"), HS) == "auth_invalid"


def test_algorithm_not_in_pinned_list_is_invalid():
    tok = jwt.encode(claims(), SECRET, algorithm="HS512")
    assert code_of(tok, HS) == "auth_invalid"


def test_rs256_and_es256_selected_by_kid():
    aud = {"aud": "chat", "iss": "https://auth.example"}
    rs = jwt.encode(claims(**aud), RSA_KEY, algorithm="RS256", headers={"kid": "rsa-1"})
    es = jwt.encode(claims(**aud), EC_KEY, algorithm="ES256", headers={"kid": "ec-1"})
    assert auth.verify(rs, ASYM).user_id == "alice"
    assert auth.verify(es, ASYM).user_id == "alice"


def test_wrong_kid_or_unknown_kid_is_invalid():
    aud = {"aud": "chat", "iss": "https://auth.example"}
    swapped = jwt.encode(claims(**aud), RSA_KEY, algorithm="RS256", headers={"kid": "ec-1"})
    unknown = jwt.encode(claims(**aud), RSA_KEY, algorithm="RS256", headers={"kid": "nope"})
    assert code_of(swapped, ASYM) == "auth_invalid"
    assert code_of(unknown, ASYM) == "auth_invalid"


def test_algorithm_confusion_hmac_with_public_key_is_invalid():
    # The classic attack: sign HS256 with the server's public key as the secret.
    import hashlib, hmac, base64

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    body = b64(json.dumps(claims(aud="chat", iss="https://auth.example")).encode())
    sig = b64(hmac.new(RSA_PUB.encode(), f"{header}.{body}".encode(), hashlib.sha256).digest())
    assert code_of(f"{header}.{body}.{sig}", ASYM) == "auth_invalid"


def test_audience_and_issuer_checked_when_configured():
    good = {"aud": "chat", "iss": "https://auth.example"}
    wrong_aud = jwt.encode(claims(aud="other", iss=good["iss"]), RSA_KEY, algorithm="RS256",
                           headers={"kid": "rsa-1"})
    wrong_iss = jwt.encode(claims(aud="chat", iss="https://evil"), RSA_KEY, algorithm="RS256",
                           headers={"kid": "rsa-1"})
    no_aud = jwt.encode(claims(iss=good["iss"]), RSA_KEY, algorithm="RS256", headers={"kid": "rsa-1"})
    assert code_of(wrong_aud, ASYM) == "auth_invalid"
    assert code_of(wrong_iss, ASYM) == "auth_invalid"
    assert code_of(no_aud, ASYM) == "auth_invalid"


@pytest.mark.parametrize("bad", [
    None, "", 42, "not.a.jwt", "x" * 9000, "nodots",
    "W10.e30.sig",                    # header is a JSON array
    "eyJhbGciOiJIUzI1NiJ9",           # a header and nothing else
    "!!!.e30.sig",                    # header not base64url
    "eyJhbGciOiJIUzI1NiJ9.e30.",      # HS256 header, no signature
])
def test_malformed_tokens_are_invalid(bad):
    assert code_of(bad, HS) == "auth_invalid"


# --- the HS* path against PyJWT -------------------------------------------------------
# realtime.auth verifies HS* tokens without PyJWT. These tokens, good and bad in every
# part, must get PyJWT's verdict: accepted, expired or invalid.
def _b64(data: bytes) -> str:
    import base64
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _signed(header: dict | bytes, body: dict | bytes, secret: str = SECRET, alg=None) -> str:
    import hashlib
    import hmac
    h = _b64(header if isinstance(header, bytes) else json.dumps(header).encode())
    b = _b64(body if isinstance(body, bytes) else json.dumps(body).encode())
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[
        alg or (header.get("alg") if isinstance(header, dict) else "HS256")]
    return f"{h}.{b}.{_b64(hmac.new(secret.encode(), f'{h}.{b}'.encode(), digest).digest())}"


def _pyjwt_verdict(token, settings: Settings):
    try:
        got = jwt.decode(token, settings.jwt_secret, algorithms=list(settings.jwt_algorithms),
                         audience=settings.jwt_audience, issuer=settings.jwt_issuer,
                         leeway=settings.jwt_leeway_s,
                         options={"require": ["exp", "sub"], "verify_aud": settings.jwt_audience is not None,
                                  "verify_iss": settings.jwt_issuer is not None})
    except jwt.ExpiredSignatureError:
        return "auth_expired"
    except jwt.PyJWTError:
        return "auth_invalid"
    return ("ok", got["sub"], float(got["exp"])) if got["sub"] else "auth_invalid"


def _our_verdict(token, settings: Settings):
    try:
        ident = auth.verify(token, settings)
    except ApiError as exc:
        return exc.code
    return ("ok", ident.user_id, ident.expires_at)


def _hs_corpus():
    now = int(time.time())
    hs256 = {"alg": "HS256", "typ": "JWT"}
    good = _signed(hs256, claims())
    h, b, s = good.split(".")
    yield "good", good
    yield "good, padded segments", f"{h}{'=' * (-len(h) % 4)}.{b}{'=' * (-len(b) % 4)}.{s}{'=' * (-len(s) % 4)}"
    yield "too much padding", f"{h}.{b}.{s}===="
    yield "padding in a group", f"{h}.{b}.{s[:-2]}=={s[-2:]}"
    yield "signature of another secret", _signed(hs256, claims(), secret="another-secret-long-enough-32bytes!")
    yield "signature truncated", f"{h}.{b}.{s[:-4]}"
    yield "signature empty", f"{h}.{b}."
    yield "payload swapped", f"{h}.{_b64(json.dumps(claims(sub='mallory')).encode())}.{s}"
    yield "junk in the signature", f"{h}.{b}.{s[:10]}!{s[11:]}"
    yield "junk in the payload", f"{h}.{b[:5]}*{b[5:]}.{s}"
    yield "standard alphabet", good.replace("-", "+").replace("_", "/")
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    # Same signature bytes, unused low bits of the last character set: another spelling.
    if len(s) % 4:
        bumped = last[last.index(s[-1]) + 1] if s[-1] != "_" else "A"
        yield "non-canonical signature", f"{h}.{b}.{s[:-1]}{bumped}"
    yield "four segments", good + ".x"
    yield "two segments", f"{h}.{b}"
    yield "alg none", f"{_b64(json.dumps({'alg': 'none'}).encode())}.{b}."
    yield "alg HS512 not pinned", _signed({"alg": "HS512"}, claims())
    yield "header not JSON", _signed(b"{nope", claims(), alg="HS256")
    yield "payload not JSON", _signed(hs256, b"{nope")
    yield "payload an array", _signed(hs256, b"[1,2]")
    yield "kid not a string", _signed({"alg": "HS256", "kid": 7}, claims())
    yield "kid a string", _signed({"alg": "HS256", "kid": "k1"}, claims())
    for name, over in [
        ("exp past", {"exp": now - 60}), ("exp within leeway", {"exp": now - 2}),
        ("exp float", {"exp": now + 600.5}), ("exp digits string", {"exp": str(now + 600)}),
        ("exp words", {"exp": "soon"}), ("exp null", {"exp": None}), ("exp object", {"exp": {}}),
        ("nbf future", {"nbf": now + 60}), ("nbf within leeway", {"nbf": now + 2}), ("nbf past", {"nbf": now - 5}),
        ("nbf words", {"nbf": "x"}), ("iat future", {"iat": now + 60}), ("iat words", {"iat": "x"}),
        ("sub number", {"sub": 42}), ("sub empty", {"sub": ""}), ("sub null", {"sub": None}),
        ("jti number", {"jti": 1}), ("jti string", {"jti": "j"}),
        ("aud unexpected", {"aud": "chat"}), ("iss present", {"iss": "https://auth.example"}),
    ]:
        yield name, _signed(hs256, claims(**over))
    c = claims()
    del c["exp"]
    yield "no exp", _signed(hs256, c)


def _aud_iss_corpus():
    hs256 = {"alg": "HS256"}
    good = {"aud": "chat", "iss": "https://auth.example"}
    yield "aud and iss good", _signed(hs256, claims(**good))
    yield "aud in a list", _signed(hs256, claims(aud=["other", "chat"], iss=good["iss"]))
    yield "aud list without ours", _signed(hs256, claims(aud=["other"], iss=good["iss"]))
    yield "aud list of numbers", _signed(hs256, claims(aud=[1, "chat"], iss=good["iss"]))
    yield "aud empty", _signed(hs256, claims(aud="", iss=good["iss"]))
    yield "aud object", _signed(hs256, claims(aud={"chat": 1}, iss=good["iss"]))
    yield "aud missing", _signed(hs256, claims(iss=good["iss"]))
    yield "aud other", _signed(hs256, claims(aud="other", iss=good["iss"]))
    yield "iss other", _signed(hs256, claims(aud="chat", iss="https://evil"))
    yield "iss number", _signed(hs256, claims(aud="chat", iss=1))
    yield "iss missing", _signed(hs256, claims(aud="chat"))


HS_AUD = Settings(jwt_secret=SECRET, jwt_audience="chat", jwt_issuer="https://auth.example")


@pytest.mark.parametrize("name,token", list(_hs_corpus()), ids=lambda v: v if isinstance(v, str) and len(v) < 40 else "")
def test_hs_path_gives_pyjwt_verdict(name, token):
    assert _our_verdict(token, HS) == _pyjwt_verdict(token, HS), name


@pytest.mark.parametrize("name,token", list(_aud_iss_corpus()), ids=lambda v: v if isinstance(v, str) and len(v) < 40 else "")
def test_hs_path_gives_pyjwt_verdict_on_audience_and_issuer(name, token):
    assert _our_verdict(token, HS_AUD) == _pyjwt_verdict(token, HS_AUD), name


def test_hs_corpus_has_both_verdicts():
    # The differential tests above would pass for a verifier that refused everything.
    verdicts = [_pyjwt_verdict(t, HS) for _, t in _hs_corpus()]
    assert sum(isinstance(v, tuple) for v in verdicts) >= 5
    assert {"auth_invalid", "auth_expired"} <= set(verdicts)


def test_critical_header_extensions_are_refused():
    # RFC 7515 §4.1.11: a `crit` the verifier does not implement makes the token invalid.
    # PyJWT knows RFC 7797's b64; this verifier reads no detached payloads.
    for header in ({"alg": "HS256", "crit": ["exp"], "exp": 1}, {"alg": "HS256", "crit": ["b64"], "b64": True},
                   {"alg": "HS256", "b64": True}):
        assert code_of(_signed(header, claims()), HS) == "auth_invalid"


def test_claims_are_checked_against_the_given_clock():
    tok = _signed({"alg": "HS256"}, claims(exp=2_000_000_000, nbf=1_900_000_000, iat=1_900_000_000))
    assert auth.verify(tok, HS, now=1_950_000_000).expires_at == 2_000_000_000
    with pytest.raises(ApiError) as info:
        auth.verify(tok, HS, now=2_000_000_000 + HS.jwt_leeway_s)
    assert info.value.code == "auth_expired"
    with pytest.raises(ApiError) as info:
        auth.verify(tok, HS, now=1_900_000_000 - HS.jwt_leeway_s - 1)
    assert info.value.code == "auth_invalid"
