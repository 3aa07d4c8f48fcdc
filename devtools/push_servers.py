"""Local stand-ins for the push services, checking what the real ones check.

Used by the tests and bench/push_throughput.py; never by the stack itself.

- `WebPushService`: an RFC 8030 push service on HTTP/1.1 (keep-alive). Records each
  request (headers, encrypted body); answers 201, or what a test queued per path.
- `FCMService`: the OAuth2 token endpoint (verifies the RS256 JWT-bearer assertion
  with the service account's public key) and `messages:send` (checks the bearer
  token it issued, the project and the message), with FCM's documented error bodies.
- `APNsService`: HTTP/2 only (h2c with prior knowledge), checks the ES256 provider
  token (signature, kid, team), `apns-topic`, `apns-push-type`, answers like APNs.
- `make_fcm_credentials` / `make_apns_key`: credential files for both.
"""
from __future__ import annotations

import base64
import collections
import json
import os
import secrets
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"


# --- credentials ---------------------------------------------------------------------

def make_fcm_credentials(path: str, project_id: str, token_url: str) -> dict:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    creds = {
        "type": "service_account", "project_id": project_id, "private_key_id": secrets.token_hex(20),
        "private_key": pem, "client_email": f"push@{project_id}.iam.gserviceaccount.com",
        "client_id": "1", "token_uri": token_url,
    }
    with open(path, "w") as fh:
        json.dump(creds, fh)
    return creds


def make_apns_key(path: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with open(path, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))


def public_pem_of(private_pem: bytes | str) -> bytes:
    if isinstance(private_pem, str):
        private_pem = private_pem.encode()
    key = serialization.load_pem_private_key(private_pem, password=None)
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


# --- shared recording ------------------------------------------------------------------

class _Recorder:
    def __init__(self):
        self.lock = threading.Condition()
        self.requests: list[dict] = []
        # path (or token) -> queued (status, headers, body) answers, used first
        self.scripted: dict[str, collections.deque] = collections.defaultdict(collections.deque)

    def script(self, key: str, *answers: tuple[int, dict, Any]) -> None:
        with self.lock:
            self.scripted[key].extend(answers)

    def next_scripted(self, key: str):
        with self.lock:
            queue = self.scripted.get(key)
            return queue.popleft() if queue else None

    def record(self, entry: dict) -> None:
        with self.lock:
            self.requests.append(entry)
            self.lock.notify_all()

    def matching(self, predicate) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if predicate(r)]

    def wait(self, predicate, count: int = 1, timeout: float = 5.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                found = [r for r in self.requests if predicate(r)]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{count} matching push requests not received within {timeout}s; "
                                         f"got {len(found)} of {len(self.requests)}")
                self.lock.wait(left)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real services

    def log_message(self, *args):  # quiet
        pass

    def _body(self) -> bytes:
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def _answer(self, status: int, body: Any = b"", headers: dict | None = None) -> None:
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers = {"content-type": "application/json", **(headers or {})}
        elif isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("content-length", str(len(body)))
        # Headers and body in one write: two small writes would meet the client's
        # delayed ACK (Nagle) and add ~40 ms to every keep-alive request.
        self._headers_buffer.append(b"\r\n" + body)
        self.flush_headers()


class _Service:
    def __init__(self, port: int = 0, host: str = "127.0.0.1"):
        self.host = host
        self.port = port
        self.rec = _Recorder()
        self._server: _HTTPServer | None = None

    def _handler_class(self):
        raise NotImplementedError

    def start(self):
        self._server = _HTTPServer((self.host, self.port), self._handler_class())
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # conveniences
    def script(self, key, *answers):
        self.rec.script(key, *answers)

    def wait(self, predicate=lambda r: True, count=1, timeout=5.0):
        return self.rec.wait(predicate, count, timeout)

    def matching(self, predicate=lambda r: True):
        return self.rec.matching(predicate)


# --- Web Push ---------------------------------------------------------------------------

class WebPushService(_Service):
    """Endpoints are `<url>/push/<anything>`; each POST is recorded whole."""

    def endpoint(self, name: str | None = None) -> str:
        return f"{self.url}/push/{name or uuid.uuid4().hex}"

    def _handler_class(self):
        service = self

        class Handler(_Handler):
            def do_POST(self):
                body = self._body()
                entry = {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                         "body": body, "at": time.time()}
                scripted = service.rec.next_scripted(self.path)
                status, headers, answer = scripted or (201, {"location": f"{service.url}/m/{uuid.uuid4().hex}"}, b"")
                entry["status"] = status
                service.rec.record(entry)
                self._answer(status, answer, headers)

        return Handler


def verify_vapid(authorization: str, endpoint_origin: str, expected_public_key: str) -> dict:
    """Check `Authorization: vapid t=..., k=...` (RFC 8292) against the expected key."""
    assert authorization.startswith("vapid "), authorization
    params = dict(part.strip().split("=", 1) for part in authorization[len("vapid "):].split(","))
    assert params["k"] == expected_public_key, "k is not the key push_config announced"
    raw = base64.urlsafe_b64decode(params["k"] + "=" * (-len(params["k"]) % 4))
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    claims = jwt.decode(params["t"], public, algorithms=["ES256"], audience=endpoint_origin,
                        options={"require": ["aud", "exp", "sub"]})
    assert claims["exp"] <= time.time() + 24 * 3600, "VAPID exp over 24 h"
    assert claims["sub"].startswith(("mailto:", "https:")), claims["sub"]
    return claims


def decrypt_aes128gcm(body: bytes, ua_private: ec.EllipticCurvePrivateKey, auth_secret: bytes) -> bytes:
    """The user agent's side of RFC 8291, written independently of the sender."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    salt, rs, idlen = body[:16], int.from_bytes(body[16:20], "big"), body[20]
    as_public = body[21:21 + idlen]
    ciphertext = body[21 + idlen:]
    assert rs >= 18 and len(ciphertext) <= rs
    ua_public = ua_private.public_key().public_bytes(serialization.Encoding.X962,
                                                     serialization.PublicFormat.UncompressedPoint)
    shared = ua_private.exchange(ec.ECDH(), ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), as_public))
    ikm = HKDF(hashes.SHA256(), 32, auth_secret, b"WebPush: info\x00" + ua_public + as_public).derive(shared)
    cek = HKDF(hashes.SHA256(), 16, salt, b"Content-Encoding: aes128gcm\x00").derive(ikm)
    nonce = HKDF(hashes.SHA256(), 12, salt, b"Content-Encoding: nonce\x00").derive(ikm)
    padded = AESGCM(cek).decrypt(nonce, ciphertext, None)
    stripped = padded.rstrip(b"\x00")
    assert stripped[-1:] == b"\x02", "last record delimiter missing"
    return stripped[:-1]


class Subscriber:
    """A browser's side of a subscription: its P-256 key pair and auth secret."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.auth = os.urandom(16)

    def subscription(self) -> dict:
        b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()  # noqa: E731
        return {"endpoint": self.endpoint, "keys": {
            "p256dh": b64(self.key.public_key().public_bytes(serialization.Encoding.X962,
                                                             serialization.PublicFormat.UncompressedPoint)),
            "auth": b64(self.auth)}}

    def decrypt(self, body: bytes) -> dict:
        return json.loads(decrypt_aes128gcm(body, self.key, self.auth))


# --- FCM --------------------------------------------------------------------------------

class FCMService(_Service):
    def __init__(self, credentials: dict | None = None, port: int = 0):
        super().__init__(port)
        if credentials:
            self.use(credentials)
        self.access_tokens: dict[str, float] = {}
        self.unregistered: set[str] = set()
        self.token_requests = 0

    def use(self, credentials: dict) -> "FCMService":
        """The service account whose assertions this server accepts."""
        self.credentials = credentials
        self.public_pem = public_pem_of(credentials["private_key"])
        return self

    @property
    def token_url(self) -> str:
        return f"{self.url}/token"

    def _handler_class(self):
        service = self

        class Handler(_Handler):
            def do_POST(self):
                body = self._body()
                if self.path == "/token":
                    return self._token(body)
                return self._send(body)

            def _token(self, body: bytes):
                from urllib.parse import parse_qs
                form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
                if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
                    return self._answer(400, {"error": "unsupported_grant_type"})
                try:
                    header = jwt.get_unverified_header(form.get("assertion", ""))
                    claims = jwt.decode(form["assertion"], service.public_pem, algorithms=["RS256"],
                                        audience=service.token_url, options={"require": ["exp", "iat", "iss"]})
                except (jwt.PyJWTError, KeyError) as exc:
                    return self._answer(400, {"error": "invalid_grant", "error_description": str(exc)})
                if (claims["iss"] != service.credentials["client_email"] or FCM_SCOPE not in claims.get("scope", "")
                        or header.get("kid") != service.credentials["private_key_id"]):
                    return self._answer(400, {"error": "invalid_grant", "error_description": "bad iss/scope/kid"})
                token = "ya29." + secrets.token_urlsafe(24)
                with service.rec.lock:
                    service.access_tokens[token] = time.time() + 3599
                    service.token_requests += 1
                return self._answer(200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"})

            def _send(self, body: bytes):
                project = service.credentials["project_id"]
                auth = self.headers.get("authorization", "")
                token = auth[len("Bearer "):] if auth.startswith("Bearer ") else ""
                if service.access_tokens.get(token, 0) < time.time():
                    return self._answer(401, {"error": {"code": 401, "status": "UNAUTHENTICATED",
                                                        "message": "Request had invalid authentication credentials."}})
                if self.path != f"/v1/projects/{project}/messages:send":
                    return self._answer(404, {"error": {"code": 404, "status": "NOT_FOUND",
                                                        "message": "Requested entity was not found."}})
                try:
                    message = json.loads(body)["message"]
                    device = message["token"]
                    assert all(isinstance(v, str) for v in message.get("data", {}).values())
                except (ValueError, KeyError, AssertionError):
                    return self._answer(400, {"error": {"code": 400, "status": "INVALID_ARGUMENT",
                                                        "message": "Invalid JSON payload received."}})
                entry = {"path": self.path, "token": device, "message": message, "at": time.time(),
                         "headers": {k.lower(): v for k, v in self.headers.items()}}
                scripted = service.rec.next_scripted(device)
                if scripted is None and device in service.unregistered:
                    scripted = (404, {}, {"error": {"code": 404, "message": "Requested entity was not found.",
                                                    "status": "NOT_FOUND", "details": [{
                                                        "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                                                        "errorCode": "UNREGISTERED"}]}})
                status, headers, answer = scripted or (200, {}, {
                    "name": f"projects/{project}/messages/{uuid.uuid4().int % 10**19}"})
                entry["status"] = status
                service.rec.record(entry)
                return self._answer(status, answer, headers)

        return Handler


# --- APNs (HTTP/2) ------------------------------------------------------------------------

class APNsService:
    """h2c with prior knowledge; one thread per connection."""

    PUSH_TYPES = {"alert", "background", "voip", "complication", "fileprovider", "mdm", "liveactivity",
                  "location", "pushtotalk"}

    def __init__(self, key_file: str, key_id: str, team_id: str, topic: str, port: int = 0,
                 host: str = "127.0.0.1"):
        with open(key_file, "rb") as fh:
            self.public_pem = public_pem_of(fh.read())
        self.key_id, self.team_id, self.topic = key_id, team_id, topic
        self.host, self.port = host, port
        self.rec = _Recorder()
        self.unregistered: set[str] = set()
        self.bad_tokens: set[str] = set()
        self._sock: socket.socket | None = None
        self._stopped = threading.Event()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self):
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((self.host, self.port))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self):
        self._stopped.set()
        if self._sock is not None:
            self._sock.close()

    def script(self, token, *answers):
        self.rec.script(token, *answers)

    def wait(self, predicate=lambda r: True, count=1, timeout=5.0):
        return self.rec.wait(predicate, count, timeout)

    def matching(self, predicate=lambda r: True):
        return self.rec.matching(predicate)

    def _accept(self):
        while not self._stopped.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _check(self, headers: dict, path: str, body: bytes) -> tuple[int, dict, dict | None]:
        """What APNs checks, in its order; (status, extra headers, error body)."""
        if headers.get(":method") != "POST":
            return 405, {}, {"reason": "MethodNotAllowed"}
        if not path.startswith("/3/device/"):
            return 404, {}, {"reason": "BadPath"}
        auth = headers.get("authorization", "")
        if not auth.startswith("bearer "):
            return 403, {}, {"reason": "MissingProviderToken"}
        try:
            token = auth[len("bearer "):]
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(token, self.public_pem, algorithms=["ES256"], options={"require": ["iat", "iss"]})
        except jwt.PyJWTError:
            return 403, {}, {"reason": "InvalidProviderToken"}
        if header.get("kid") != self.key_id or claims["iss"] != self.team_id:
            return 403, {}, {"reason": "InvalidProviderToken"}
        if claims["iat"] < time.time() - 3600:
            return 403, {}, {"reason": "ExpiredProviderToken"}
        if headers.get("apns-topic") != self.topic:
            return 400, {}, {"reason": "TopicDisallowed" if headers.get("apns-topic") else "MissingTopic"}
        if headers.get("apns-push-type") not in self.PUSH_TYPES:
            return 400, {}, {"reason": "InvalidPushType"}
        try:
            payload = json.loads(body)
            assert isinstance(payload.get("aps"), dict)
        except (ValueError, AssertionError):
            return 400, {}, {"reason": "PayloadEmpty" if not body else "BadPayload"}
        if len(body) > 4096:
            return 413, {}, {"reason": "PayloadTooLarge"}
        device = path[len("/3/device/"):]
        if device in self.bad_tokens:
            return 400, {}, {"reason": "BadDeviceToken"}
        if device in self.unregistered:
            return 410, {}, {"reason": "Unregistered", "timestamp": int(time.time() * 1000)}
        return 200, {}, None

    def _serve(self, conn: socket.socket):
        import h2.config
        import h2.connection
        import h2.events

        h2conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False,
                                                                      header_encoding="utf-8"))
        h2conn.initiate_connection()
        conn.sendall(h2conn.data_to_send())
        streams: dict[int, dict] = {}
        try:
            while not self._stopped.is_set():
                data = conn.recv(65535)
                if not data:
                    break
                for event in h2conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        streams[event.stream_id] = {"headers": dict(event.headers), "body": b""}
                    elif isinstance(event, h2.events.DataReceived):
                        streams[event.stream_id]["body"] += event.data
                        h2conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded):
                        self._respond(h2conn, event.stream_id, streams.pop(event.stream_id))
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        return
                out = h2conn.data_to_send()
                if out:
                    conn.sendall(out)
        except OSError:
            pass
        finally:
            conn.close()

    def _respond(self, h2conn, stream_id: int, request: dict):
        headers, body = request["headers"], request["body"]
        path = headers.get(":path", "")
        device = path[len("/3/device/"):] if path.startswith("/3/device/") else ""
        status, extra, error = self._check(headers, path, body)
        scripted = self.rec.next_scripted(device) if status == 200 else None
        if scripted is not None:
            status, extra, error = scripted
        apns_id = headers.get("apns-id") or str(uuid.uuid4()).upper()
        entry = {"path": path, "token": device, "headers": headers, "status": status, "at": time.time(),
                 "body": json.loads(body) if body and status != 400 else body}
        self.rec.record(entry)
        out = json.dumps(error).encode() if error else b""
        response_headers = [(":status", str(status)), ("apns-id", apns_id)] + list(extra.items())
        if out:
            response_headers += [("content-type", "application/json"), ("content-length", str(len(out)))]
        h2conn.send_headers(stream_id, response_headers, end_stream=not out)
        if out:
            h2conn.send_data(stream_id, out, end_stream=True)


def serve(argv: list[str] | None = None) -> None:
    """Run one stand-in in its own process (for benchmarks):

        python -m devtools.push_servers webpush PORT
        python -m devtools.push_servers fcm PORT CREDENTIALS_JSON
    """
    import sys

    args = argv if argv is not None else sys.argv[1:]
    kind, port = args[0], int(args[1])
    if kind == "webpush":
        service = WebPushService(port=port)
    elif kind == "fcm":
        with open(args[2]) as fh:
            service = FCMService(json.load(fh), port=port)
    else:
        raise SystemExit(f"unknown service {kind!r}")
    # A benchmark sends many thousands: keep no request bodies around.
    service.rec.record = lambda entry: None
    service.start()
    print(f"{kind} listening on {service.url}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    serve()
