"""Server storage on SQLite (always) and PostgreSQL (when GENLOOM_TEST_DATABASE_URL names one; CI sets it)."""

import os
import sqlite3
import uuid

import pytest
from sqlalchemy import create_engine, inspect

from conftest import assert_one_line_error
from genloom.errors import GenloomError
from genloom.serve.database import Database

PG = os.environ.get("GENLOOM_TEST_DATABASE_URL")
BACKENDS = ["sqlite"] + (["postgresql"] if PG else [])


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path):
    if request.param == "sqlite":
        st = Database(data_dir=tmp_path)
    else:  # a fresh schema per test: drop everything first
        eng = create_engine(PG)
        with eng.begin() as c:
            c.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
        eng.dispose()
        st = Database(PG, data_dir=tmp_path)
    yield st
    st.close()


def test_schema_is_migrated_by_alembic(store):
    tables = set(inspect(store.engine).get_table_names())
    assert {"api_keys", "requests", "usage", "files", "jobs", "job_events", "alembic_version"} <= tables
    with store.engine.connect() as c:
        assert c.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == "0001"


def test_sqlite_runs_in_wal_mode(tmp_path):
    Database(data_dir=tmp_path).create_key("x")
    assert sqlite3.connect(tmp_path / "genloom.db").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_keys_are_hashed_verified_and_revoked(store):
    assert not store.any_keys()
    key, secret = store.create_key("ci", rate_limit=30)
    assert secret.startswith("gl-") and len(secret) > 40 and store.any_keys()
    with store.engine.connect() as c:  # the secret itself is nowhere in the database
        row = c.exec_driver_sql("SELECT key_hash, prefix FROM api_keys").one()
    assert secret not in row[0] and row[1] == secret[:11]
    assert store.verify_key(secret).id == key.id
    assert store.verify_key(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert store.verify_key("") is None and store.verify_key("sk-" + secret[3:]) is None
    store.revoke_key(key.prefix)
    assert store.verify_key(secret) is None
    with pytest.raises(GenloomError, match="no API key 'nope'"):
        store.revoke_key("nope")


def test_history_and_usage(store):
    key, _ = store.create_key("a")
    for i in range(3):
        store.log_request(route="/v1/completions", model="chat", params={"n": i}, output={"text": "x"},
                          key_id=key.id, prompt_tokens=2, completion_tokens=5)
    store.log_request(route="/v1/images/generations", model="ddpm", params={}, output={}, images=4)
    assert [r.params["n"] for r in store.history(route="/v1/completions")] == [2, 1, 0]
    mine = store.usage(key.id)
    assert len(mine) == 1 and (mine[0].requests, mine[0].prompt_tokens, mine[0].completion_tokens) == (3, 6, 15)
    assert store.usage("")[0].images == 4


def test_jobs_survive_a_restart(store):
    a = store.create_job("chat", {"train": {"max_steps": 10}})
    b = store.create_job("kjv", {})
    store.set_job(a.id, "running")
    store.add_event(a.id, "step 5", {"step": 5, "loss": 2.5})
    assert store.recover_jobs() == [a.id]  # what a restarted server does first
    assert store.get_job(a.id).status == "queued" and store.next_queued_job().id == a.id
    msgs = [e.message for e in store.events(a.id)]
    assert msgs[0] == "job queued" and "re-queued" in msgs[-1] and store.events(a.id)[1].data["loss"] == 2.5
    store.set_job(b.id, "succeeded", fine_tuned_model="kjv-ft")
    assert store.get_job(b.id).finished_at is not None
    with pytest.raises(GenloomError, match="unknown job status 'done'"):
        store.set_job(b.id, "done")


def test_file_names_never_become_paths(store):
    rec = store.add_file("../../etc/passwd.TXT", b"hello", "fine-tune")
    path = store.file_path(rec)
    assert path.read_bytes() == b"hello" and path.parent == store.files_dir().resolve()
    assert rec.filename == "passwd.TXT" and rec.path.endswith(".txt") and ".." not in rec.path
    rec.path = "../../outside"
    with pytest.raises(GenloomError, match="outside the files folder"):
        store.file_path(rec)


def test_unreachable_database_is_one_line(tmp_path):
    with pytest.raises(GenloomError, match=r"cannot open database postgresql\+psycopg://u:\*\*\*@127.0.0.1:1/x"):
        Database("postgresql+psycopg://u:secret@127.0.0.1:1/x", data_dir=tmp_path)


def test_keys_cli(run_main, tmp_path):
    import json

    code, out, err = run_main("keys", "create", "--name", "laptop", "--data-dir", tmp_path)
    assert code == 0, err
    secret = out.strip().splitlines()[-1]
    assert secret.startswith("gl-")
    code, out, err = run_main("keys", "list", "--data-dir", tmp_path, "--json")
    rows = json.loads(out)
    assert rows[0]["name"] == "laptop" and rows[0]["revoked"] is False and secret not in out
    code, out, err = run_main("keys", "revoke", rows[0]["id"], "--data-dir", tmp_path)
    assert code == 0 and Database(data_dir=tmp_path).verify_key(secret) is None
    code, out, err = run_main("keys", "revoke", "key-" + uuid.uuid4().hex[:8], "--data-dir", tmp_path)
    assert "no API key" in assert_one_line_error(code, out, err)
