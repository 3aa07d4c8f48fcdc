"""Request-line and header parsing for the edge's HTTP server (eventlet).

The standard library's `BaseHTTPRequestHandler.parse_request` reads the header
block with `http.client.parse_headers`, which runs it through the email package's
feed parser: about a tenth of the edge's CPU per connect in a connect storm
(py-spy, bench W1), for a dozen header lines. This reads them directly into the
same `http.client.HTTPMessage` that eventlet and the WSGI environ builder expect.

Same results as the standard library for well-formed requests; stricter where
RFC 9112 says a server must reject (section 5): obsolete line folding, whitespace
before the colon and lines that are not `name: value` are 400, where the feed
parser folded or skipped them. Size limits are eventlet's (its header file object
raises on an over-long line or block, answered with 400 by the server).
"""
from __future__ import annotations

import http.client
import re
from http import HTTPStatus

# The standard library's limit on the number of header lines (http.client._MAXHEADERS).
MAX_HEADERS = 100
# Longest line read at once; eventlet's header file object refuses far shorter ones.
MAX_LINE = 65536

# RFC 9110 section 5.1: a field name is a token.
_FIELD_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_VERSION = re.compile(r"HTTP/(\d{1,10})\.(\d{1,10})\Z")


class BadHeaders(Exception):
    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def read_headers(rfile) -> http.client.HTTPMessage:
    """The header block up to its empty line (or EOF), as an HTTPMessage."""
    headers = http.client.HTTPMessage()
    count = 0
    while True:
        raw = rfile.readline(MAX_LINE + 1)
        if raw in (b"\r\n", b"\n", b""):
            return headers
        if len(raw) > MAX_LINE:
            raise BadHeaders(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Line too long")
        count += 1
        if count > MAX_HEADERS:
            raise BadHeaders(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Too many headers")
        name, value = parse_header_line(raw.decode("iso-8859-1").rstrip("\r\n"))
        headers[name] = value


def parse_header_line(line: str) -> tuple[str, str]:
    """`name: value` of one header line (without its line ending), or BadHeaders."""
    if line[:1] in (" ", "\t"):
        raise BadHeaders(HTTPStatus.BAD_REQUEST, "Obsolete line folding")
    name, colon, value = line.partition(":")
    if not colon or not _FIELD_NAME.match(name):
        raise BadHeaders(HTTPStatus.BAD_REQUEST, "Bad header line")
    return name, value.strip(" \t")


class FastRequestParsing:
    """Mixin for a `BaseHTTPRequestHandler`: `parse_request` without the email parser.

    Sets what the standard library's sets (command, path, request_version,
    requestline, headers, close_connection) and answers errors the same way, except
    that an error in the request line gets a status line too.
    """

    def parse_request(self) -> bool:
        self.command = None
        # The standard library keeps HTTP/0.9 here until the version is read, so an
        # error in the request line is answered with a bare HTML page, no status line.
        self.request_version = "HTTP/1.0"
        self.close_connection = True
        requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        self.requestline = requestline
        words = requestline.split()
        if not words:
            return False
        if len(words) != 3:
            # HTTP/0.9 (two words) is not served: nothing speaks it any more.
            self.send_error(HTTPStatus.BAD_REQUEST, "Bad request syntax (%r)" % requestline)
            return False
        command, path, version = words
        match = _VERSION.match(version)
        if match is None:
            self.send_error(HTTPStatus.BAD_REQUEST, "Bad request version (%r)" % version)
            return False
        version_number = int(match.group(1)), int(match.group(2))
        if version_number >= (2, 0):
            self.send_error(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, "Invalid HTTP version (%s)" % version[5:])
            return False
        if version_number >= (1, 1) and self.protocol_version >= "HTTP/1.1":
            self.close_connection = False
        self.request_version = version
        self.command = command
        # As the standard library does: a path starting with '//' would read as an
        # absolute URI without a scheme to a client that gets it back in a redirect.
        self.path = "/" + path.lstrip("/") if path.startswith("//") else path

        try:
            self.headers = read_headers(self.rfile)
        except BadHeaders as exc:
            self.send_error(exc.status, exc.message)
            return False

        connection = self.headers.get("Connection", "").lower()
        if connection == "close":
            self.close_connection = True
        elif connection == "keep-alive" and self.protocol_version >= "HTTP/1.1":
            self.close_connection = False
        if (self.headers.get("Expect", "").lower() == "100-continue"
                and self.protocol_version >= "HTTP/1.1" and self.request_version >= "HTTP/1.1"):
            return self.handle_expect_100()
        return True
