"""A node configured for RS256/ES256 keys by kid, with audience and issuer."""
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests import support
from tests.support import Client, unique

PORT = 5021


def _pem(key):
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC = ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def node():
    env = {
        "JWT_ALGORITHMS": "RS256,ES256",
        "JWT_PUBLIC_KEYS": json.dumps({"rsa-2026": _pem(RSA), "ec-2026": _pem(EC)}),
        "JWT_AUDIENCE": "chat-edge",
        "JWT_ISSUER": "https://auth.test",
    }
    proc = support.start_edge(PORT, "jwtcfg", env)
    yield f"http://127.0.0.1:{PORT}"
    support.stop_process(proc)


def tok(key, alg, kid, **over):
    now = time.time()
    claims = {"sub": unique("u"), "exp": int(now + 600), "aud": "chat-edge", "iss": "https://auth.test"}
    claims.update(over)
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})


def connect_result(url, token):
    c = Client(url, auth_data={"token": token}, connect=False)
    try:
        c.connect()
        c.wait_for("authenticated")
        return "ok"
    except Exception:
        return (c.connect_error or {}).get("data", {}).get("code")
    finally:
        c.close()


def test_rs256_and_es256_by_kid(node):
    assert connect_result(node, tok(RSA, "RS256", "rsa-2026")) == "ok"
    assert connect_result(node, tok(EC, "ES256", "ec-2026")) == "ok"


def test_wrong_audience_issuer_kid_and_hs256_refused(node):
    assert connect_result(node, tok(RSA, "RS256", "rsa-2026", aud="someone-else")) == "auth_invalid"
    assert connect_result(node, tok(RSA, "RS256", "rsa-2026", iss="https://evil")) == "auth_invalid"
    assert connect_result(node, tok(RSA, "RS256", "ec-2026")) == "auth_invalid"
    # HS256 is not in this node's pinned list, whatever the secret.
    hs = jwt.encode({"sub": "x", "exp": int(time.time() + 600), "aud": "chat-edge", "iss": "https://auth.test"},
                    support.SETTINGS.jwt_secret, algorithm="HS256")
    assert connect_result(node, hs) == "auth_invalid"
