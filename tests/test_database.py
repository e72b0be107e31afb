"""Server storage on SQLite (always) and PostgreSQL (when GENLOOM_TEST_DATABASE_URL names one; CI sets it)."""

import json
import os
import sqlite3
import subprocess
import threading
import sys
import time
import uuid
from pathlib import Path

import pytest
from conftest import assert_one_line_error
from sqlalchemy import create_engine, inspect

from genloom.errors import GenloomError
from genloom.serve.database import Database, database_url, head_revision, migrate, schema_revision

PG = os.environ.get("GENLOOM_TEST_DATABASE_URL")
ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ["sqlite", "postgresql"]  # without a server the postgresql cases skip, named in the summary


@pytest.fixture(params=BACKENDS)
def db(request, tmp_path):
    if request.param == "sqlite":
        db = Database(data_dir=tmp_path)
    elif not PG:
        pytest.skip("GENLOOM_TEST_DATABASE_URL is not set: no PostgreSQL server to test against "
                    "(.ci/run starts one when run as root)")
    else:  # a fresh schema per test: drop everything first
        eng = create_engine(PG)
        with eng.begin() as c:
            c.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
        eng.dispose()
        db = Database(PG, data_dir=tmp_path)
    yield db
    db.close()


def test_schema_is_migrated_by_alembic(db):
    tables = set(inspect(db.engine).get_table_names())
    assert {"api_keys", "requests", "usage", "files", "jobs", "job_events", "alembic_version"} <= tables
    with db.engine.connect() as c:
        assert c.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == "0002"


def test_sqlite_runs_in_wal_mode(tmp_path):
    Database(data_dir=tmp_path).create_key("x")
    assert sqlite3.connect(tmp_path / "genloom.db").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_keys_are_hashed_verified_and_revoked(db):
    assert db.count_active_keys() == 0
    key, secret = db.create_key("ci", rate_limit=30)
    assert secret.startswith("gl-") and len(secret) > 40 and db.count_active_keys() == 1
    with db.engine.connect() as c:  # the secret itself is nowhere in the database
        row = c.exec_driver_sql("SELECT key_hash, prefix FROM api_keys").one()
    assert secret not in row[0] and row[1] == secret[:11]
    assert db.verify_key(secret).id == key.id
    assert db.verify_key(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert db.verify_key("") is None and db.verify_key("sk-" + secret[3:]) is None
    db.revoke_key(key.prefix)
    assert db.verify_key(secret) is None and db.count_active_keys() == 0  # no active key: open mode
    with pytest.raises(GenloomError, match="no API key 'nope'"):
        db.revoke_key("nope")


def test_revoke_all_keys_returns_to_open_mode(db):
    a, _ = db.create_key("a")
    db.create_key("b")
    db.revoke_key(a.id)
    assert [k.name for k in db.revoke_all_keys()] == ["b"]  # only the still active ones
    assert db.count_active_keys() == 0 and all(k.revoked_at for k in db.list_keys())
    assert db.revoke_all_keys() == []


def test_history_and_usage(db):
    key, _ = db.create_key("a")
    for i in range(3):
        db.log_request(route="/v1/completions", model="chat", params={"n": i}, output={"text": "x"},
                          key_id=key.id, prompt_tokens=2, completion_tokens=5)
    db.log_request(route="/v1/images/generations", model="ddpm", params={}, output={}, images=4)
    assert [r.params["n"] for r in db.history(route="/v1/completions")] == [2, 1, 0]
    mine = db.usage(key.id)
    assert len(mine) == 1 and (mine[0].requests, mine[0].prompt_tokens, mine[0].completion_tokens) == (3, 6, 15)
    assert db.usage("")[0].images == 4


def test_jobs_survive_a_restart(db):
    a = db.create_job("chat", {"train": {"max_steps": 10}})
    b = db.create_job("kjv", {})
    db.set_job(a.id, "running")
    db.add_event(a.id, "step 5", {"step": 5, "loss": 2.5})
    assert db.recover_jobs() == [a.id]  # what a restarted server does first
    assert db.get_job(a.id).status == "queued" and db.next_queued_job().id == a.id
    msgs = [e.message for e in db.events(a.id)]
    assert msgs[0] == "job queued" and "re-queued" in msgs[-1] and db.events(a.id)[1].data["loss"] == 2.5
    db.set_job(b.id, "succeeded", fine_tuned_model="kjv-ft")
    assert db.get_job(b.id).finished_at is not None
    with pytest.raises(GenloomError, match="unknown job status 'done'"):
        db.set_job(b.id, "done")


@pytest.mark.parametrize("backend", BACKENDS)
def test_servers_starting_together_migrate_once(backend, tmp_path):
    """Replicas started at once on a fresh database (processes): one creates the schema, the others wait for it."""
    if backend == "sqlite":
        url = database_url(None, tmp_path)
    elif not PG:
        pytest.skip("GENLOOM_TEST_DATABASE_URL is not set: no PostgreSQL server to test against "
                    "(.ci/run starts one when run as root)")
    else:
        url, eng = PG, create_engine(PG)
        with eng.begin() as c:
            c.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
        eng.dispose()
    assert schema_revision(url) is None
    go = tmp_path / "go"  # each process imports first, then all migrate at once
    code = ("import os, sys, time\nfrom genloom.serve.database import migrate\n"
            "while not os.path.exists(sys.argv[1]): time.sleep(0.005)\nmigrate(sys.argv[2])")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(go), url], env=env, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    time.sleep(3)
    go.touch()
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    assert schema_revision(url) == head_revision() == "0002"


def test_replicas_logging_at_once_lose_no_history_nor_usage(db):
    """Eight handles (replicas) log a request at the same moment on a fresh day: eight rows, counts exact."""
    handles = [Database(db.url, data_dir=db.data_dir) for _ in range(8)]
    barrier, errors = threading.Barrier(8), []

    def log(h, i):
        barrier.wait()
        try:
            h.log_request(route="/v1/completions", model="chat", params={}, output={}, prompt_tokens=i,
                          completion_tokens=2, images=1)
        except Exception as e:  # noqa: BLE001 - collected for the assert
            errors.append(repr(e))

    threads = [threading.Thread(target=log, args=(h, i)) for i, h in enumerate(handles)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    [h.close() for h in handles]
    assert not errors, errors
    assert len(db.history(100)) == 8
    (u,) = db.usage()
    assert (u.requests, u.prompt_tokens, u.completion_tokens, u.images) == (8, sum(range(8)), 16, 8)


def test_cancel_is_conditional_on_the_job_still_running(db):
    """A cancel through one replica and a worker's end racing: whichever comes first holds."""
    a, b = db.create_job("chat", {}), db.create_job("chat", {})
    assert db.claim_job("w", 30).id == a.id and db.finish_job(a.id, "w", "succeeded", "done")
    assert db.cancel_job(a.id) is None and db.get_job(a.id).status == "succeeded"
    assert db.cancel_job(b.id).status == "cancelled" and db.events(b.id)[-1].message == "cancel requested"
    assert db.cancel_job(b.id) is None and db.cancel_job("ftjob-none") is None
    assert db.claim_job("w", 30) is None  # a cancelled job is never claimed


def test_file_names_never_become_paths(db):
    rec = db.add_file("../../etc/passwd.TXT", b"hello", "fine-tune")
    path = db.file_path(rec)
    assert path.read_bytes() == b"hello" and path.parent == db.files_dir().resolve()
    assert rec.filename == "passwd.TXT" and rec.path.endswith(".txt") and ".." not in rec.path
    rec.path = "../../outside"
    with pytest.raises(GenloomError, match="outside the files folder"):
        db.file_path(rec)


def test_unreachable_database_is_one_line(tmp_path):
    with pytest.raises(GenloomError, match=r"cannot open database postgresql\+psycopg://u:\*\*\*@127.0.0.1:1/x"):
        Database("postgresql+psycopg://u:secret@127.0.0.1:1/x", data_dir=tmp_path)


def test_keys_cli(run_main, tmp_path):
    code, out, err = run_main("keys", "create", "--name", "laptop", "--data-dir", tmp_path)
    assert code == 0, err
    secret = out.strip().splitlines()[-1]
    assert secret.startswith("gl-")
    code, out, err = run_main("keys", "list", "--data-dir", tmp_path, "--json")
    rows = json.loads(out)
    assert rows[0]["name"] == "laptop" and rows[0]["revoked"] is False and secret not in out
    code, out, err = run_main("keys", "revoke", rows[0]["id"], "--open", "--data-dir", tmp_path)  # the last one
    assert code == 0 and Database(data_dir=tmp_path).verify_key(secret) is None
    code, out, err = run_main("keys", "revoke", "key-" + uuid.uuid4().hex[:8], "--data-dir", tmp_path)
    assert "no API key" in assert_one_line_error(code, out, err)


def test_keys_cli_open_mode(run_main, tmp_path):
    """Revoking the last active key needs --open; `keys open` revokes every key; both say the mode."""
    for name in ("a", "b"):
        code, out, err = run_main("keys", "create", "--name", name, "--data-dir", tmp_path)
        assert code == 0 and "keys mode: " in err, err
    ids = [r["id"] for r in json.loads(run_main("keys", "list", "--data-dir", tmp_path, "--json")[1])]
    code, out, err = run_main("keys", "revoke", ids[0], "--data-dir", tmp_path)
    assert code == 0 and "keys mode: 1 active key(s)" in out
    code, out, err = run_main("keys", "revoke", ids[1], "--data-dir", tmp_path)
    msg = assert_one_line_error(code, out, err)
    assert "last active key" in msg and "--open" in msg and Database(data_dir=tmp_path).count_active_keys() == 1
    code, out, err = run_main("keys", "revoke", ids[1], "--open", "--data-dir", tmp_path)
    assert code == 0 and "open mode" in out and Database(data_dir=tmp_path).count_active_keys() == 0
    run_main("keys", "create", "--name", "c", "--data-dir", tmp_path)
    run_main("keys", "create", "--name", "d", "--data-dir", tmp_path)
    code, out, err = run_main("keys", "open", "--data-dir", tmp_path)
    assert code == 0 and "revoking 2 active key(s)" in err and "open mode" in out
    assert Database(data_dir=tmp_path).count_active_keys() == 0
    code, out, err = run_main("keys", "list", "--data-dir", tmp_path)
    assert "open mode" in err and out.count("REVOKED") == 4
