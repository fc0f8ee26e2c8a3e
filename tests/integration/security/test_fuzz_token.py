"""Property/fuzz tests of ``POST /oauth2/token`` over real HTTP against the real service, on both backends.

The invariant: whatever arrives, never a 5xx and never an ``access_token``
unless the request is a correct client-credentials grant. Each class of bad
request is generated so that it is bad *by construction* (the RFC says so,
whatever the parser does), and the same service must still issue a token to
the correct request before and after, so "no token" is not vacuous.

Throttling is raised out of the way: a 429 would also be "no token", and the
fuzzer would stop reaching the parser after the first few failures.
"""

from __future__ import annotations

import base64
import http.client
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus, urlencode, urlsplit

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from tests.integration.security.conftest import Registered, Service, StartService

from credward.domain.oauth import FORM_CONTENT_TYPE, MAX_BODY_BYTES

pytestmark = pytest.mark.integration

EXAMPLES_PER_KIND = 40
SCHEMATHESIS_EXAMPLES = 200
GRANT = "client_credentials"
ALLOWED_AUDIENCE = "https://storage.example"
RFC_ERRORS = {
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "invalid_scope",
    "invalid_target",
    "unauthorized_client",
    "unsupported_grant_type",
    "temporarily_unavailable",
}
UNTHROTTLED = {"throttle_client_failures": "1000000000", "throttle_ip_failures": "1000000000"}
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES_PER_KIND,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)


@dataclass(frozen=True)
class Attempt:
    """One HTTP request to the token endpoint, and why it must not yield a token."""

    why: str
    body: bytes
    headers: tuple[tuple[str, str | bytes], ...] = (("content-type", FORM_CONTENT_TYPE),)


@dataclass(frozen=True)
class Good:
    """The one correct client of the service under test, and the scopes it holds."""

    client_id: str
    secret: str
    scopes: frozenset[str]


def form(*pairs: tuple[str, str]) -> bytes:
    return urlencode(list(pairs)).encode()


def basic(client_id: str, secret: str) -> str:
    """RFC 6749 §2.3.1: form-encode each part, then base64 ``id:secret``."""
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def with_auth(
    method: str, client_id: str, secret: str, *pairs: tuple[str, str], content_type: str = FORM_CONTENT_TYPE
) -> tuple[bytes, tuple[tuple[str, str | bytes], ...]]:
    """A body and headers authenticating by ``client_secret_basic`` or ``client_secret_post``."""
    headers: tuple[tuple[str, str | bytes], ...] = (("content-type", content_type),)
    if method == "basic":
        return form(*pairs), (*headers, ("authorization", basic(client_id, secret)))
    return form(*pairs, ("client_id", client_id), ("client_secret", secret)), headers


methods = st.sampled_from(["basic", "post"])
short_text = st.text(max_size=60)
header_text = short_text.filter(lambda t: "\r" not in t and "\n" not in t)


def huge_text(min_size: int = 2_000, max_size: int = 60_000) -> st.SearchStrategy[str]:
    """Big values cheaply: a short random chunk repeated (Hypothesis is slow at drawing huge strings)."""
    return st.tuples(st.text(min_size=1, max_size=12), st.integers(min_size, max_size)).map(
        lambda t: (t[0] * (t[1] // len(t[0]) + 1))[: t[1]]
    )


# --- the kinds of bad request; each builds Attempts for one Good client ----------------------------------------


def bad_grant_type(good: Good) -> st.SearchStrategy[Attempt]:
    grant = st.one_of(
        st.none(),
        st.sampled_from(["", "password", "authorization_code", "refresh_token", "CLIENT_CREDENTIALS", GRANT + " "]),
        short_text.filter(lambda g: g != GRANT),
    )

    def build(g: str | None, method: str) -> Attempt:
        pairs = [] if g is None else [("grant_type", g)]
        body, headers = with_auth(method, good.client_id, good.secret, *pairs)
        return Attempt(f"grant_type={g!r}", body, headers)

    return st.builds(build, grant, methods)


def wrong_secret(good: Good) -> st.SearchStrategy[Attempt]:
    secret = st.one_of(
        short_text,
        st.just(good.secret[:-1]),
        st.just(good.secret + "x"),
        st.just(good.secret.upper()),
        st.just(" " + good.secret),
    ).filter(lambda s: s != good.secret)

    def build(s: str, method: str) -> Attempt:
        body, headers = with_auth(method, good.client_id, s, ("grant_type", GRANT))
        return Attempt(f"wrong secret {s!r} by {method}", body, headers)

    return st.builds(build, secret, methods)


def missing_secret(good: Good) -> st.SearchStrategy[Attempt]:
    b64_id = base64.b64encode(good.client_id.encode()).decode()
    return st.sampled_from(
        [
            Attempt("no client authentication at all", form(("grant_type", GRANT))),
            Attempt("client_id without client_secret", form(("grant_type", GRANT), ("client_id", good.client_id))),
            Attempt(
                "empty client_secret",
                form(("grant_type", GRANT), ("client_id", good.client_id), ("client_secret", "")),
            ),
            Attempt(
                "Basic with an empty secret",
                form(("grant_type", GRANT)),
                (("content-type", FORM_CONTENT_TYPE), ("authorization", basic(good.client_id, ""))),
            ),
            Attempt(
                "Basic with the id only, no colon",
                form(("grant_type", GRANT)),
                (("content-type", FORM_CONTENT_TYPE), ("authorization", "Basic " + b64_id)),
            ),
            Attempt(
                "client_secret without client_id",
                form(("grant_type", GRANT), ("client_secret", good.secret)),
            ),
        ]
    )


def unknown_client(good: Good) -> st.SearchStrategy[Attempt]:
    client_id = st.one_of(
        short_text, st.just(good.client_id.upper()), st.just(good.client_id + " "), st.just(good.client_id[:-1])
    ).filter(lambda c: c != good.client_id)

    def build(c: str, method: str) -> Attempt:
        body, headers = with_auth(method, c, good.secret, ("grant_type", GRANT))
        return Attempt(f"unknown client {c!r} with the right secret by {method}", body, headers)

    return st.builds(build, client_id, methods)


B64_ALPHABET = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


def latin1_basic(text: str) -> bytes:
    """``Basic <text>`` as raw header bytes (UTF-8: what a careless client would put on the wire)."""
    return b"Basic " + text.encode()


def malformed_basic(good: Good) -> st.SearchStrategy[Attempt]:
    valid_b64 = basic(good.client_id, good.secret).removeprefix("Basic ")
    header = st.one_of(
        # not base64 at all
        header_text.filter(lambda t: any(c not in B64_ALPHABET for c in t.strip())).map(latin1_basic),
        # base64 of something that has no id:secret separator
        st.binary(max_size=80).filter(lambda b: b":" not in b).map(lambda b: "Basic " + base64.b64encode(b).decode()),
        # base64 of bytes that are not UTF-8
        st.binary(max_size=40).map(lambda b: "Basic " + base64.b64encode(b"\xff\xfe" + b + b":\xc3\x28").decode()),
        # the right credentials under another scheme
        st.sampled_from(["Bearer", "Digest", "Negotiate", "Token", "Basicx"]).map(lambda s: f"{s} {valid_b64}"),
        st.sampled_from(["Basic", "Basic ", "Basic ====", "Basic Og==", " ", "Basic " + valid_b64 + "!"]),
        # raw bytes that are not even ASCII
        st.binary(min_size=1, max_size=40).map(lambda b: b"Basic \xff" + b.replace(b"\r", b"").replace(b"\n", b"")),
    )

    def build(h: str | bytes) -> Attempt:
        return Attempt(
            f"Authorization: {h!r}",
            form(("grant_type", GRANT)),
            (("content-type", FORM_CONTENT_TYPE), ("authorization", h)),
        )

    return st.builds(build, header)


def duplicated_params(good: Good) -> st.SearchStrategy[Attempt]:
    """RFC 6749 §3.2: request parameters MUST NOT be included more than once."""

    @st.composite
    def build(draw: st.DrawFn) -> Attempt:
        method = draw(methods)
        scope = sorted(good.scopes)[0]
        pairs = [("grant_type", GRANT), ("scope", scope)]
        if method == "post":
            pairs += [("client_id", good.client_id), ("client_secret", good.secret)]
        else:
            pairs += [("client_id", good.client_id)]  # allowed once with Basic when it matches
        name, value = draw(st.sampled_from(pairs))
        again = draw(st.one_of(st.just(value), short_text.filter(bool)))
        ordered = draw(st.permutations([*pairs, (name, again)]))
        headers: tuple[tuple[str, str | bytes], ...] = (("content-type", FORM_CONTENT_TYPE),)
        if method == "basic":
            headers += (("authorization", basic(good.client_id, good.secret)),)
        return Attempt(f"{name} twice ({value!r}, {again!r}) by {method}", form(*ordered), headers)

    return build()


def conflicting_auth(good: Good) -> st.SearchStrategy[Attempt]:
    """RFC 6749 §2.3: a client MUST NOT use more than one authentication method in a request."""
    auth = (("content-type", FORM_CONTENT_TYPE), ("authorization", basic(good.client_id, good.secret)))
    return st.one_of(
        st.just(
            Attempt(
                "Basic and client_secret in the body",
                form(("grant_type", GRANT), ("client_id", good.client_id), ("client_secret", good.secret)),
                auth,
            )
        ),
        short_text.filter(lambda c: c not in ("", good.client_id)).map(
            lambda c: Attempt(
                f"Basic for one client, client_id {c!r} in the body",
                form(("grant_type", GRANT), ("client_id", c)),
                auth,
            )
        ),
    )


def huge_values(good: Good) -> st.SearchStrategy[Attempt]:
    @st.composite
    def build(draw: st.DrawFn) -> Attempt:
        method = draw(methods)
        big = draw(huge_text())
        where = draw(st.sampled_from(["grant_type", "client_id", "client_secret", "scope", "audience", "padding"]))
        client_id, secret = good.client_id, good.secret
        pairs: list[tuple[str, str]] = [("grant_type", GRANT)]
        if where == "grant_type":
            pairs = [("grant_type", GRANT + big)]
        elif where == "client_id":
            client_id = big
        elif where == "client_secret":
            secret = big
        elif where == "scope":
            pairs.append(("scope", "storage.read:/nowhere/" + big))
        elif where == "audience":
            pairs.append(("audience", "https://nowhere.example/" + big))
        else:  # a body over the service's limit, even if the rest is right
            pairs.append(("padding", "x" * (MAX_BODY_BYTES + draw(st.integers(1, 200_000)))))
        body, headers = with_auth(method, client_id, secret, *pairs)
        return Attempt(f"huge {where} ({len(body)} body bytes) by {method}", body, headers)

    return build()


INVALID_UTF8 = [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80", b"\xe2\x82"]


def non_utf8(good: Good) -> st.SearchStrategy[Attempt]:
    """Invalid UTF-8, raw or percent-encoded, inside a parameter that decides the outcome."""

    @st.composite
    def build(draw: st.DrawFn) -> Attempt:
        method = draw(methods)
        bad = draw(st.sampled_from(INVALID_UTF8))
        raw = draw(st.booleans())
        target = draw(st.sampled_from(["grant_type", "client_id", "client_secret", "scope"]))
        values = {
            "grant_type": GRANT.encode(),
            "client_id": quote_plus(good.client_id).encode(),
            "client_secret": quote_plus(good.secret).encode(),
            "scope": b"",
        }
        values[target] += bad if raw else "".join(f"%{b:02X}" for b in bad).encode()
        headers: tuple[tuple[str, str | bytes], ...] = (("content-type", FORM_CONTENT_TYPE),)
        if method == "basic":  # the credentials travel base64-encoded in the header, bad bytes and all
            creds = values.pop("client_id") + b":" + values.pop("client_secret")
            headers += (("authorization", "Basic " + base64.b64encode(creds).decode()),)
        if target != "scope":
            values.pop("scope")
        body = b"&".join(k.encode() + b"=" + v for k, v in values.items())
        return Attempt(f"{'raw' if raw else 'percent-encoded'} {bad!r} in {target} by {method}", body, headers)

    return build()


def wrong_content_type(good: Good) -> st.SearchStrategy[Attempt]:
    def is_form(ct: str) -> bool:
        return ct.split(";", 1)[0].strip().lower() == FORM_CONTENT_TYPE

    content_type = st.one_of(
        st.none(),
        st.sampled_from(
            [
                "application/json",
                "text/plain",
                "multipart/form-data; boundary=x",
                "application/x-www-form-urlencodedx",
                "application/x-www-form",
                "form-urlencoded",
                "",
            ]
        ),
        header_text.filter(lambda t: not is_form(t)),
    )

    @st.composite
    def build(draw: st.DrawFn) -> Attempt:
        ct = draw(content_type)
        method = draw(methods)
        body, headers = with_auth(method, good.client_id, good.secret, ("grant_type", GRANT))
        if ct is not None and ct.startswith("application/json"):
            payload: dict[str, str] = {"grant_type": GRANT}
            if method == "post":
                payload |= {"client_id": good.client_id, "client_secret": good.secret}
            body = json.dumps(payload).encode()
        kept = tuple(h for h in headers if h[0] != "content-type")
        if ct is not None:
            kept = (("content-type", ct.encode()), *kept)
        return Attempt(f"content type {ct!r} by {method}", body, kept)

    return build()


DOT_SEGMENTS = ("/../", "/./", "/..", "//")


def _within(token: str, held: str) -> bool:
    """True when ``token`` is a held scope or a clean sub-path of one: a legitimate down-scoping."""
    if token == held:
        return True
    return token.startswith(held + "/") and not any(seg in token[len(held) :] + "/" for seg in ("/../", "/./", "//"))


def bogus_scopes(good: Good) -> st.SearchStrategy[Attempt]:
    def legit(token: str) -> bool:
        return any(_within(token, held) for held in good.scopes)

    structured = st.builds(
        lambda verb, path: f"{verb}:{path}",
        st.sampled_from(["storage.read", "storage.modify", "storage.create", "storage.stage", "compute.read"]),
        st.sampled_from(["/", "/etc", "/dat", "/data2", "/datax", "/data/../etc", "/data/./../etc", "/data/out/.."]),
    )
    token = st.one_of(
        structured,
        st.sampled_from(["storage.modify:/data", "openid", "offline_access", "*", "storage.read", "read:/data"]),
        st.text(min_size=1, max_size=40).filter(lambda t: not t.isspace() and " " not in t),
    ).filter(lambda t: not legit(t))

    @st.composite
    def build(draw: st.DrawFn) -> Attempt:
        bogus = draw(st.lists(token, min_size=1, max_size=3))
        ok = draw(st.lists(st.sampled_from(sorted(good.scopes)), max_size=2))
        tokens = draw(st.permutations([*bogus, *ok]))
        scope = " ".join(tokens)
        body, headers = with_auth(draw(methods), good.client_id, good.secret, ("grant_type", GRANT), ("scope", scope))
        return Attempt(f"scope {scope!r} (holds {sorted(good.scopes)})", body, headers)

    return build()


def bogus_audiences(good: Good) -> st.SearchStrategy[Attempt]:
    def allowed(value: str) -> bool:
        return value.strip().rstrip("/").lower() == ALLOWED_AUDIENCE.lower()

    value = st.one_of(
        st.sampled_from(
            [
                ALLOWED_AUDIENCE + ".evil",
                ALLOWED_AUDIENCE + "@evil.example",
                "https://evil.example/" + ALLOWED_AUDIENCE,
                "http://storage.example",
                "https://storage.example:8443",
                ALLOWED_AUDIENCE + "#frag",
                "storage.example",
                "*",
            ]
        ),
        short_text.filter(bool),
    ).filter(lambda v: v.strip() and not allowed(v))

    @st.composite
    def build(draw: st.DrawFn) -> Attempt:
        bad = draw(value)
        param = draw(st.sampled_from(["audience", "resource"]))
        pairs = [("grant_type", GRANT), (param, bad)]
        if draw(st.booleans()):
            pairs.insert(1, (param, ALLOWED_AUDIENCE))  # one good and one bad value: all must be allowed
        body, headers = with_auth(draw(methods), good.client_id, good.secret, *pairs)
        return Attempt(f"{param}={bad!r} (allowed: {ALLOWED_AUDIENCE})", body, headers)

    return build()


def repeated_headers(good: Good) -> st.SearchStrategy[Attempt]:
    """Two Authorization or two Content-Type headers: HTTP stacks disagree on which counts, so neither may."""
    good_auth = basic(good.client_id, good.secret)
    other_auth = st.one_of(
        st.just(good_auth),
        header_text.map(lambda t: "Basic " + base64.b64encode(t.encode()).decode()),
        st.sampled_from(["Bearer x", "Basic Ym9ndXM6Ym9ndXM=", ""]),
    )
    content_types = st.one_of(st.just(FORM_CONTENT_TYPE), st.sampled_from(["application/json", "text/plain", ""]))

    @st.composite
    def build(draw: st.DrawFn) -> Attempt:
        if draw(st.booleans()):
            values = draw(st.permutations([good_auth, draw(other_auth)]))
            auths = tuple(("authorization", v) for v in values)
            headers: tuple[tuple[str, str | bytes], ...] = (("content-type", FORM_CONTENT_TYPE), *auths)
        else:
            values = draw(st.permutations([FORM_CONTENT_TYPE, draw(content_types)]))
            headers = (*(("content-type", v) for v in values), ("authorization", good_auth))
        ordered = draw(st.permutations(headers))
        return Attempt(f"repeated header: {ordered!r}", form(("grant_type", GRANT)), tuple(ordered))

    return build()


KINDS: dict[str, Callable[[Good], st.SearchStrategy[Attempt]]] = {
    "bad grant_type": bad_grant_type,
    "wrong secret": wrong_secret,
    "missing secret": missing_secret,
    "unknown client": unknown_client,
    "malformed Basic header": malformed_basic,
    "duplicated parameters": duplicated_params,
    "two authentication methods": conflicting_auth,
    "huge values": huge_values,
    "non-UTF-8 bytes": non_utf8,
    "wrong content type": wrong_content_type,
    "bogus scopes": bogus_scopes,
    "bogus audiences": bogus_audiences,
    "repeated headers": repeated_headers,
}


# --- running them -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status_code: int
    headers: dict[str, str]
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


class RawClient:
    """HTTP/1.1 with keep-alive that sends header bytes exactly as given.

    httpx and h11 (rightly) refuse to *send* non-ASCII or oddly spaced header
    values, which are exactly what the server must survive; ``http.client``
    passes bytes through and only refuses header injection (bare CR/LF).
    """

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @staticmethod
    def _answer_before_close(conn: http.client.HTTPConnection) -> Reply | None:
        """The response the server sent before closing the connection, if one is waiting to be read."""
        sock = conn.sock
        if sock is None:
            return None
        received = b""
        try:
            sock.settimeout(5)
            while b"\r\n\r\n" not in received and (chunk := sock.recv(65536)):
                received += chunk
        except OSError:
            pass
        head, _, body = received.partition(b"\r\n\r\n")
        parts = head.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            return None
        headers = {}
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        return Reply(int(parts[1]), headers, body)

    def post(self, path: str, body: bytes, headers: tuple[tuple[str, str | bytes], ...]) -> Reply:
        for attempt in (1, 2):  # a second try only covers an idle keep-alive connection the server closed
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            conn = self._conn
            try:
                conn.putrequest("POST", path, skip_accept_encoding=True)
                for name, value in headers:
                    conn.putheader(name, value)
                conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body)
                response = conn.getresponse()
                reply = Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
            except (ConnectionResetError, BrokenPipeError):
                # The server may answer (431, 413) and close while the rest is still being sent: that answer
                # counts. A connection closed with no answer at all is no refusal, and fails the attempt.
                early = self._answer_before_close(conn)
                self.close()
                if early is not None:
                    return early
                if attempt == 2:
                    raise
                continue
            except http.client.RemoteDisconnected:
                self.close()
                if attempt == 2:
                    raise
                continue
            if reply.headers.get("connection", "").lower() == "close":
                self.close()
            return reply
        raise AssertionError("unreachable")


def assert_refused(response: Reply, why: str) -> None:
    assert response.status_code < 500, f"{why}: {response.status_code} {response.text[:300]}"
    assert b"access_token" not in response.content, f"{why}: a token was issued: {response.text[:300]}"
    assert 400 <= response.status_code < 500, f"{why}: {response.status_code} {response.text[:300]}"
    if response.headers.get("content-type", "").startswith("application/json"):
        error = json.loads(response.content).get("error")
        assert error in RFC_ERRORS, f"{why}: error {error!r} is not an RFC 6749 error code"
        if response.status_code == 401:
            assert "www-authenticate" in response.headers, f"{why}: 401 without WWW-Authenticate"


def good_token(http: httpx.Client, client: Registered) -> dict[str, str]:
    """The correct request still works: the service is up and "no token" above meant "refused"."""
    response = http.post(
        "/oauth2/token", data={"grant_type": GRANT}, auth=(client.client_id, client.secret), headers={}
    )
    assert response.status_code == 200, response.text
    body: dict[str, str] = response.json()
    assert body["access_token"]
    return body


def fuzz(raw: RawClient, kind: str, attempts: st.SearchStrategy[Attempt]) -> None:
    """Send ``EXAMPLES_PER_KIND`` requests of one kind; Hypothesis shrinks and reports the first that gets through."""

    @FUZZ_SETTINGS
    @given(attempt=attempts)
    def run(attempt: Attempt) -> None:
        note(f"{kind}: {attempt.why}")
        response = raw.post("/oauth2/token", attempt.body, attempt.headers)
        assert_refused(response, f"{kind}: {attempt.why}")

    run()


@pytest.fixture
def fuzz_target(start_service: StartService) -> tuple[Service, Registered]:
    service = start_service(**UNTHROTTLED)
    return service, service.register(audiences=(ALLOWED_AUDIENCE,))


def test_bad_token_requests_never_get_a_token_or_a_5xx(fuzz_target: tuple[Service, Registered]) -> None:
    service, client = fuzz_target
    with service.http() as http:
        issued = good_token(http, client)
        good = Good(client.client_id, client.secret, frozenset(issued["scope"].split()))
        raw = RawClient(service.base_url)
        try:
            for kind, strategy in KINDS.items():
                fuzz(raw, kind, strategy(good))
        finally:
            raw.close()
        good_token(http, client)


def test_schemathesis_against_the_openapi_document(fuzz_target: tuple[Service, Registered]) -> None:
    """Schema-driven cases (conforming and violating) from the service's own /openapi.json."""
    service, client = fuzz_target
    schema = schemathesis.openapi.from_url(service.base_url + "/openapi.json")
    operation = schema["/oauth2/token"]["POST"]
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))
    session = requests.Session()

    @settings(FUZZ_SETTINGS, max_examples=SCHEMATHESIS_EXAMPLES)
    @given(case=cases)
    def run(case: schemathesis.Case[Any]) -> None:
        response = case.call(base_url=service.base_url, session=session)
        why = f"schemathesis case: {case.as_curl_command()}"
        assert response.status_code < 500, f"{why}: {response.status_code} {response.text[:300]}"
        assert b"access_token" not in response.content, f"{why}: a token was issued"

    try:
        run()
    finally:
        session.close()
    with service.http() as http:
        good_token(http, client)
