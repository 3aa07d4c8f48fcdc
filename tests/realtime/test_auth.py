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
