"""What reaches the server's app: body caps on the bytes actually read (chunked bodies too), streamed uploads,
request ids and real statuses on every response (500s included), the Host check, CORS and Origin checks,
truthful OPTIONS/Allow, and keys that take effect at once. Real uvicorn servers on free loopback ports."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import tracemalloc

import pytest

try:
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx

from conftest import assert_one_line_error
from test_api_text import ROOT, Server, wait_for

from genloom.serve import app as server
from genloom.serve.app import create_app
from genloom.serve.auth import Auth
from genloom.serve.database import Database

VAE = str(ROOT / "models" / "fmnist-vae")  # the smallest served model: the tests here are about transport
MiB = 1 << 20
UPLOAD_LIMIT = 3 * MiB
PUBLIC = "https://gen.example.org/base"
APP_ORIGIN = "https://app.example"


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """Defaults: loopback host names only, no CORS origins, URLs from the address the request came in on."""
    data = tmp_path_factory.mktemp("plain")
    s = Server(create_app([VAE], data_dir=str(data), jobs=False, max_upload_bytes=UPLOAD_LIMIT))
    yield s, data
    s.close()


@pytest.fixture(scope="module")
def configured(tmp_path_factory):
    data = tmp_path_factory.mktemp("configured")
    s = Server(create_app([VAE], data_dir=str(data), jobs=False, allowed_hosts=["gen.lan"], public_url=PUBLIC,
                          cors_origins=[APP_ORIGIN]))
    yield s, data
    s.close()


def raw_request(port: int, head: str, body_chunks=(), stall: bool = False, timeout: float = 10.0):
    """Send `head` and chunked `body_chunks` on a raw socket (a thread sends while this one reads); returns
    (status, headers, body, bytes the client managed to send before the answer came)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(head.encode())
    sent = [0]

    def send_body():
        try:
            for chunk in body_chunks:
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                sent[0] += len(chunk)
            if not stall:
                sock.sendall(b"0\r\n\r\n")
        except OSError:  # the server answered and closed: what a refused body looks like
            pass

    sender = threading.Thread(target=send_body, daemon=True)
    sender.start()
    buf = b""
    try:
        while b"\r\n\r\n" not in buf:
            data = sock.recv(65536)
            if not data:
                break
            buf += data
        sent_at_answer = sent[0]
        head_bytes, _, rest = buf.partition(b"\r\n\r\n")
        lines = head_bytes.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
        n = int(headers.get("content-length", 0))
        while len(rest) < n:
            data = sock.recv(65536)
            if not data:
                break
            rest += data
    finally:
        sock.close()
        sender.join(30)
    return status, headers, rest, sent_at_answer


def chunked_head(path: str, port: int, content_type: str = "application/json") -> str:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n")


# ---- 1. body cap on the bytes read ----------------------------------------------------------------------


def test_chunked_body_over_the_cap_is_refused_without_waiting_for_the_rest(plain):
    """1.25 MiB of a chunked body that never ends: a cap counted on bytes read answers 413 at once."""
    s, _ = plain
    chunk = b"x" * 65536
    status, headers, body, _ = raw_request(s.port, chunked_head("/v1/chat/completions", s.port),
                                           [b'{"model": "fmnist-vae", "messages": "'] + [chunk] * 20, stall=True)
    assert status == 413 and headers.get("x-request-id")
    assert json.loads(body)["error"]["type"] == "invalid_request_error"


def test_chunked_20mb_body_is_refused_after_about_1mib_and_never_buffered(plain):
    s, _ = plain
    chunk = b"x" * 65536  # sent 320 times: the client allocates nothing per chunk
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        status, headers, _, sent = raw_request(s.port, chunked_head("/v1/completions", s.port), [chunk] * 320)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert status == 413 and headers.get("x-request-id")
    assert sent < 16 * MiB, f"the answer came only after {sent} bytes of the 20 MB body"
    assert peak < 8 * MiB, f"serving a refused 20 MB body allocated {peak / MiB:.1f} MiB at its peak"


def test_content_length_over_the_cap_still_refused_at_once(plain):
    s, _ = plain
    r = httpx.post(f"{s.url}/v1/completions", content=b"x" * (MiB + 10), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.headers.get("x-request-id")


# ---- 2. uploads stream to disk under their own limit ------------------------------------------------------


def _files_on_disk(data):
    return sorted(p.name for p in (data / "files").iterdir()) if (data / "files").is_dir() else []


def test_a_2mb_jsonl_upload_passes_the_json_body_cap(plain):
    s, data = plain
    text = "".join(json.dumps({"text": f"line {i} " + "x" * 90}) + "\n" for i in range(20000)).encode()
    assert 2 * 10**6 < len(text) < UPLOAD_LIMIT
    r = httpx.post(f"{s.url}/v1/files", files={"file": ("corpus.jsonl", text)}, data={"purpose": "fine-tune"})
    assert r.status_code == 200, r.text
    f = r.json()
    assert f["bytes"] == len(text) and f["filename"] == "corpus.jsonl" and f["purpose"] == "fine-tune"
    stored = Database(data_dir=data).get_file(f["id"])
    assert (data / "files" / stored.path).read_bytes() == text
    assert not [n for n in _files_on_disk(data) if n.endswith(".tmp")]


def test_upload_over_its_limit_is_413_and_leaves_no_file(plain):
    s, data = plain
    before = _files_on_disk(data)
    r = httpx.post(f"{s.url}/v1/files", files={"file": ("big.txt", b"a" * (UPLOAD_LIMIT + 1))})
    assert r.status_code == 413 and r.json()["error"]["param"] == "file"
    assert _files_on_disk(data) == before


def test_chunked_upload_over_its_limit_is_refused_while_it_streams(plain):
    """The limit counts bytes read: the 413 comes while the client is still sending, and no partial file stays."""
    s, data = plain
    before = _files_on_disk(data)
    boundary = "b0undary"
    part = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.txt\"\r\n"
            "Content-Type: text/plain\r\n\r\n").encode()
    chunk = b"a" * 65536
    status, _, body, _ = raw_request(s.port, chunked_head("/v1/files", s.port, f"multipart/form-data; boundary="
                                                          f"{boundary}"), [part] + [chunk] * 60, stall=True)
    assert status == 413, body
    assert wait_for(lambda: _files_on_disk(data) == before), _files_on_disk(data)


def test_upload_checks_still_hold(plain):
    s, data = plain
    r = httpx.post(f"{s.url}/v1/files", files={"file": ("x.bin", b"\xff\xfe\x00")})
    assert r.status_code == 400 and r.json()["error"]["param"] == "file"
    r = httpx.post(f"{s.url}/v1/files", files={"file": ("x.txt", b"\xff\xfe\x00")})
    assert r.status_code == 400 and "UTF-8" in r.json()["error"]["message"]
    r = httpx.post(f"{s.url}/v1/files", files={"file": ("x.txt", b"  \n")})
    assert r.status_code == 400 and "empty" in r.json()["error"]["message"]
    r = httpx.post(f"{s.url}/v1/files", files={"file": ("x.txt", b"hi")}, data={"purpose": "batch"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "purpose"
    r = httpx.post(f"{s.url}/v1/files", data={"purpose": "fine-tune"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "file"
    r = httpx.post(f"{s.url}/v1/files", json={"file": "x"})
    assert r.status_code == 400
    assert not [n for n in _files_on_disk(data) if n.endswith(".tmp")]


# ---- 3. request ids and real statuses everywhere ------------------------------------------------------------


def test_nul_in_a_static_path_is_not_a_500(plain):
    s, _ = plain
    r = httpx.get(f"{s.url}/ui/app.js%00")
    assert r.status_code in (400, 404) and r.headers.get("x-request-id")


def test_an_unhandled_error_is_an_openai_500_with_its_request_id_logged(plain, caplog):
    s, _ = plain

    async def boom():
        raise RuntimeError("a bug")

    s.app.add_api_route("/test-only/boom", boom)
    caplog.set_level(logging.INFO, logger="genloom.serve")
    r = httpx.get(f"{s.url}/test-only/boom", headers={"x-request-id": "trace-123"})
    assert r.status_code == 500
    assert r.json()["error"]["type"] == "server_error" and "a bug" not in r.text
    assert r.headers.get("x-request-id") == "trace-123"

    def http_lines():  # the access line is written just after the answer is sent
        return [e for e in (json.loads(rec.getMessage()) for rec in caplog.records
                                                    if rec.name == "genloom.serve" and rec.getMessage().startswith("{"))
                if e.get("event") == "http" and e.get("path") == "/test-only/boom"]

    assert wait_for(http_lines), "no access-log line for the 500"
    assert http_lines()[-1]["status"] == 500 and http_lines()[-1]["request_id"] == "trace-123"


@pytest.mark.parametrize("method,path", [("GET", "/nope"), ("DELETE", "/v1/files"), ("POST", "/v1/completions")])
def test_errors_carry_a_request_id(plain, method, path):
    s, _ = plain
    r = httpx.request(method, f"{s.url}{path}", content=b"{")
    assert r.status_code in (400, 404, 405) and len(r.headers.get("x-request-id", "")) >= 8


# ---- 4. Host check and URLs from the public base URL -----------------------------------------------------------


@pytest.mark.parametrize("host,ok", [("127.0.0.1", True), ("localhost", True), ("[::1]", True),
                                     ("LOCALHOST.", True), ("evil.example", False), ("127.0.0.1.evil.example", False),
                                     ("gen.lan", False), ("", False)])
def test_only_configured_host_names_are_served(plain, host, ok):
    s, _ = plain
    r = httpx.get(f"{s.url}/v1/models", headers={"host": f"{host}:{s.port}" if host else ""})
    assert (r.status_code == 200) == ok, (host, r.status_code, r.text)
    if not ok:
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_host" and r.headers.get("x-request-id")


def test_operator_allowed_hosts_and_public_url_host(configured):
    s, _ = configured
    for host in ("gen.lan", "gen.example.org", "localhost"):
        assert httpx.get(f"{s.url}/v1/models", headers={"host": host}).status_code == 200, host
    assert httpx.get(f"{s.url}/v1/models", headers={"host": "evil.example"}).status_code == 400


def _image_url(s, host):
    r = httpx.post(f"{s.url}/v1/images/generations", headers={"host": host},
                   json={"model": "fmnist-vae", "n": 1, "response_format": "url", "seed": 1})
    assert r.status_code == 200, r.text
    return r.json()["data"][0]["url"]


def test_image_urls_come_from_the_server_address_not_the_host_header(plain):
    s, _ = plain
    url = _image_url(s, f"localhost:{s.port}")
    assert url.startswith(f"http://127.0.0.1:{s.port}/v1/images/") and url.endswith(".png")
    assert httpx.get(url).headers["content-type"] == "image/png"


def test_image_urls_come_from_the_public_url(configured):
    s, _ = configured
    url = _image_url(s, "gen.lan")
    assert url.startswith(f"{PUBLIC}/v1/images/img-") and url.endswith(".png")


# ---- 5. CORS, Origin and Allow -----------------------------------------------------------------------------------


def test_cross_site_requests_get_no_cors_and_state_changes_are_refused(plain):
    s, data = plain
    r = httpx.get(f"{s.url}/v1/models", headers={"origin": "https://evil.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    before = _files_on_disk(data)
    for origin in ("https://evil.example", "null", f"http://127.0.0.1:{s.port + 1}"):
        r = httpx.post(f"{s.url}/v1/files", files={"file": ("a.txt", b"hello")}, headers={"origin": origin})
        assert r.status_code == 403 and r.json()["error"]["code"] == "origin_not_allowed", origin
        assert "access-control-allow-origin" not in r.headers
    assert _files_on_disk(data) == before
    pre = httpx.options(f"{s.url}/v1/files", headers={"origin": "https://evil.example",
                                                      "access-control-request-method": "POST"})
    assert "access-control-allow-origin" not in pre.headers


def test_same_origin_browser_requests_pass(plain):
    s, _ = plain
    for origin in (s.url, f"http://localhost:{s.port}"):
        host = origin.split("//")[1]
        r = httpx.post(f"{s.url}/v1/files", files={"file": ("a.txt", b"hello")},
                       headers={"origin": origin, "host": host})
        assert r.status_code == 200, (origin, r.text)


def test_listed_origins_get_cors_answers(configured):
    s, _ = configured
    pre = httpx.options(f"{s.url}/v1/files", headers={"origin": APP_ORIGIN, "access-control-request-method": "POST"})
    assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == APP_ORIGIN
    r = httpx.post(f"{s.url}/v1/files", files={"file": ("a.txt", b"hello")}, headers={"origin": APP_ORIGIN})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == APP_ORIGIN
    r = httpx.post(f"{s.url}/v1/files", files={"file": ("a.txt", b"hello")}, headers={"origin": "https://evil.example"})
    assert r.status_code == 403 and "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize("path,methods", [("/v1/files", {"GET", "POST"}), ("/v1/files/file-x", {"GET"}),
                                          ("/v1/completions", {"POST"}), ("/health", {"GET"}),
                                          ("/ui/app.js", {"GET", "HEAD"})])
def test_options_and_405_tell_the_truth(plain, path, methods):
    s, _ = plain
    r = httpx.options(f"{s.url}{path}")
    assert r.status_code == 204 and set(r.headers["allow"].split(", ")) == methods | {"OPTIONS"}
    wrong = next(m for m in ("DELETE", "PUT", "PATCH") if m not in methods)
    r = httpx.request(wrong, f"{s.url}{path}")
    assert r.status_code == 405 and set(r.headers["allow"].split(", ")) == methods | {"OPTIONS"}
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_options_on_an_unknown_path_is_404(plain):
    s, _ = plain
    assert httpx.options(f"{s.url}/v1/nothing-here").status_code == 404


# ---- 6. keys take effect at once -----------------------------------------------------------------------------------


def test_a_new_key_closes_the_server_at_once_and_revoking_opens_it(tmp_path):
    db = Database(data_dir=tmp_path)
    auth = Auth(None, db)
    assert auth.mode() == "open"
    Database(data_dir=tmp_path).create_key("laptop")  # another handle, as `genloom keys create` is
    assert auth.mode() == "keys"
    Database(data_dir=tmp_path).revoke_all_keys()
    assert wait_for(lambda: auth.mode() == "open", timeout=auth.cache_s + 1)


def test_keyless_requests_fail_right_after_the_first_key(tmp_path):
    s = Server(create_app([VAE], data_dir=str(tmp_path), jobs=False))
    try:
        assert httpx.get(f"{s.url}/v1/models").status_code == 200
        _, secret = Database(data_dir=tmp_path).create_key("laptop")
        t0 = time.monotonic()
        r = httpx.get(f"{s.url}/v1/models")
        assert r.status_code == 401, f"a keyless request passed {time.monotonic() - t0:.2f} s after the first key"
        assert httpx.get(f"{s.url}/v1/models", headers={"authorization": f"Bearer {secret}"}).status_code == 200
    finally:
        s.close()


# ---- the CLI's options -------------------------------------------------------------------------------------------


def test_serve_passes_the_browser_options_through(run_main, monkeypatch):
    seen = {}
    monkeypatch.setattr(server, "serve", lambda paths, **kw: seen.update(kw))
    code, _, err = run_main("serve", "-m", VAE, "--allowed-hosts", "gen.lan, box.local", "--allowed-hosts", "x.lan",
                            "--public-url", PUBLIC, "--cors-origins", APP_ORIGIN)
    assert code == 0, err
    assert seen["allowed_hosts"] == ["gen.lan", "box.local", "x.lan"] and seen["public_url"] == PUBLIC
    assert seen["cors_origins"] == [APP_ORIGIN]


@pytest.mark.parametrize("args,words", [(["--public-url", "ftp://gen.example"], "invalid public URL 'ftp://gen.example'"),
                                        (["--cors-origins", "https://app.example/path"], "invalid CORS origin")])
def test_serve_rejects_bad_browser_options_in_one_line(run_main, args, words):
    line = assert_one_line_error(*run_main("serve", "-m", VAE, *args))
    assert words in line
