"""`genloom serve` binds to loopback unless told otherwise (--host 0.0.0.0 exposes it), down to uvicorn."""

from __future__ import annotations

import pytest

from genloom.serve import app as server


@pytest.fixture
def captured(monkeypatch):
    """server.serve and uvicorn.run replaced by recorders: what the CLI asked for, and what reached uvicorn."""
    calls = {}

    def fake_serve(paths, **kw):
        calls["serve"] = (paths, kw)

    monkeypatch.setattr(server, "serve", fake_serve)
    return calls


def test_cli_default_host_is_loopback(run_main, captured, tmp_path):
    code, out, err = run_main("serve", "--model", tmp_path / "m", "--no-jobs")
    assert code == 0, err
    paths, kw = captured["serve"]
    assert kw["host"] == "127.0.0.1" and kw["port"] == 8000
    assert "http://127.0.0.1:8000" in err


def test_cli_host_option_is_passed_on(run_main, captured, tmp_path):
    code, out, err = run_main("serve", "--model", tmp_path / "m", "--host", "0.0.0.0", "--port", "9123")
    assert code == 0, err
    assert captured["serve"][1]["host"] == "0.0.0.0" and captured["serve"][1]["port"] == 9123


def test_help_names_the_default(run_main):
    code, out, err = run_main("serve", "--help")
    assert code == 0 and "127.0.0.1" in out and "0.0.0.0 exposes it" in out


def test_library_serve_defaults_to_loopback(monkeypatch):
    seen = {}
    monkeypatch.setattr(server, "create_app", lambda paths, **kw: ("app", paths, kw))
    monkeypatch.setattr(server.uvicorn, "run", lambda app, **kw: seen.update(kw, app=app))
    server.serve(["m"])
    assert seen["host"] == "127.0.0.1" and seen["app"][0] == "app"
