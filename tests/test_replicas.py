"""Serving past one process: two real `genloom serve --no-jobs` replicas and two `genloom worker` processes on one
database and one data directory, run with the commands of README's deployment recipe (on loopback).

A job created through one replica is listed, read, paged and cancelled through the other, and the cancel reaches
the worker training it; one worker is killed (`kill -9`) mid-job and the job finishes exactly once on the other,
resumed from its checkpoint; files, history and fine-tuned models written through one replica are served by both.
On SQLite (one machine, one data directory) always, and on PostgreSQL when GENLOOM_TEST_DATABASE_URL names one
(.ci/run starts one); a worker pointed at a database without the schema stops with one line.
"""

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import assert_one_line_error
from sqlalchemy import create_engine

try:
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx

from genloom.serve.database import Database, head_revision, schema_revision

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PG = os.environ.get("GENLOOM_TEST_DATABASE_URL")
BACKENDS = ["sqlite", "postgresql"]  # without a server the postgresql case skips, named in the summary
TEXT = "\n".join(f"User: how do I reset my password {i}?\nBot: Open settings, then security, then reset." for i in range(60))
TRAIN = {"batch_size": 4, "log_interval": 1, "warmup_steps": 1, "eval_interval": 1000, "eval_batches": 1,
         "ckpt_interval": 10, "threads": 1}


@pytest.fixture(params=BACKENDS)
def db_url(request):
    """'' (SQLite in the data directory) or the URL of a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return ""
    if not PG:
        pytest.skip("GENLOOM_TEST_DATABASE_URL is not set: no PostgreSQL server to test against "
                    "(.ci/run starts one when run as root)")
    eng = create_engine(PG)
    with eng.begin() as c:
        c.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
    eng.dispose()
    return PG


def recipe() -> list[list[str]]:
    """The `genloom serve` and `genloom worker` command lines of README's ```bash replicas block."""
    block = re.search(r"```bash replicas\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert block, "README has no ```bash replicas block"
    lines = [ln.split("#")[0].strip().removesuffix("&").strip() for ln in block.group(1).splitlines()]
    return [shlex.split(ln) for ln in lines if ln.startswith("genloom ")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(cond, timeout: float, what):
    deadline = time.monotonic() + timeout
    while not (value := cond()):
        assert time.monotonic() < deadline, what() if callable(what) else what
        time.sleep(0.05)
    return value


class Cluster:
    """README's commands with $DB and $DATA filled in, on loopback ports; test-sized threads and lease."""

    def __init__(self, db: str, data: Path, logs: Path):
        self.env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        self.db, self.data, self.logs, self.procs = db, data, logs, []
        self.commands = recipe()

    def start(self, kind: str, i: int) -> subprocess.Popen:
        cmd = [c for c in self.commands if c[1] == kind][i]
        args = [a.replace("$DB", self.db).replace("$DATA", str(self.data)) for a in cmd[2:]]
        port = None
        if "--port" in args:
            port = _free_port()
            args[args.index("--port") + 1] = str(port)
            args[args.index("--host") + 1] = "127.0.0.1"
        args += ["--threads", "1", "--job-max-threads", "1"] + (["--lease-seconds", "2"] if kind == "worker" else [])
        log = self.logs / f"{kind}{i}.log"
        proc = subprocess.Popen([sys.executable, "-m", "genloom.cli", kind, *args], cwd=ROOT, env=self.env,
                                stdout=log.open("ab"), stderr=subprocess.STDOUT)
        proc.url, proc.log = f"http://127.0.0.1:{port}", log
        self.procs.append(proc)
        return proc

    def healthy(self, proc) -> None:
        def up():
            assert proc.poll() is None, proc.log.read_text()[-3000:]
            try:
                return httpx.get(f"{proc.url}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False
        _wait(up, 120, lambda: proc.log.read_text()[-3000:])

    def tail(self) -> str:
        return "\n".join(f"--- {p.log.name}\n{p.log.read_text()[-1500:]}" for p in self.procs)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


def test_readme_recipe_runs_replicas_and_workers():
    cmds = recipe()
    assert [c[:2] for c in cmds] == [["genloom", "serve"]] * 2 + [["genloom", "worker"]] * 2
    assert all("--no-jobs" in c for c in cmds[:2]) and all('$DB' in c and "$DATA" in c for c in cmds)


def test_worker_on_a_database_without_the_schema_is_one_line(tmp_path, run_main):
    """A worker never migrates: no schema (or an older one) is one line and exit code 2, naming what to do."""
    chat = ROOT / "models" / "chat"
    line = assert_one_line_error(*run_main("worker", "--data-dir", tmp_path / "d", "--model", chat))
    assert "no genloom schema" in line and f"needs revision {head_revision()}" in line and "genloom serve" in line
    assert not (tmp_path / "d" / "genloom.db").exists()  # the check created no database
    Database(data_dir=tmp_path / "old").close()  # a server created it; then an older genloom's revision
    eng = create_engine(f"sqlite:///{tmp_path / 'old' / 'genloom.db'}")
    with eng.begin() as c:
        c.exec_driver_sql("UPDATE alembic_version SET version_num = '0001'")
    eng.dispose()
    line = assert_one_line_error(*run_main("worker", "--data-dir", tmp_path / "old", "--model", chat))
    assert "schema revision 0001" in line and "a worker never migrates" in line


@pytest.mark.slow
def test_sigterm_stops_a_worker_mid_job_and_requeues_it(tmp_path):
    """`genloom worker` on SIGTERM (Ctrl-C alike): the step ends, a checkpoint is written, the job goes back to
    the queue and the worker exits 0; the next worker resumes from that checkpoint."""
    data = tmp_path / "data"
    db = Database(data_dir=data)  # what a server does first: the schema
    rec = db.add_file("support.txt", TEXT.encode(), "fine-tune")
    job = db.create_job("chat", {"train": {**TRAIN, "max_steps": 400, "ckpt_interval": 1000}}, rec.id)
    cluster = Cluster("", data, tmp_path)
    worker = cluster.start("worker", 0)
    try:
        _wait(lambda: len([e for e in db.events(job.id, limit=1000) if "loss" in e.data]) >= 3, 120, cluster.tail)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0, cluster.tail()
    finally:
        cluster.stop()
    done = db.get_job(job.id)
    events = [e.message for e in db.events(job.id, limit=1000)]
    assert done.status == "queued" and done.worker_id is None, events
    assert events[-1].startswith("worker stopped (SIGTERM"), events
    assert (data / "jobs" / job.id / "run" / "last.pt").is_file()  # written by the stop (none due before step 1000)


@pytest.mark.slow
def test_two_replicas_two_workers_cancel_across_and_kill_9(db_url, tmp_path):
    data, logs = tmp_path / "data", tmp_path / "logs"
    logs.mkdir()
    cluster, first = Cluster(db_url, data, logs), None
    try:
        a, b = cluster.start("serve", 0), cluster.start("serve", 1)  # together: they take turns migrating
        url = db_url or f"sqlite:///{data.resolve() / 'genloom.db'}"
        _wait(lambda: schema_revision(url) == head_revision(), 120, cluster.tail)  # a server migrated it
        workers = [cluster.start("worker", 0), cluster.start("worker", 1)]
        cluster.healthy(a), cluster.healthy(b)
        A, B = httpx.Client(base_url=a.url, timeout=30), httpx.Client(base_url=b.url, timeout=30)
        db = Database(db_url, data_dir=data, upgrade=False)

        # files and history written through one replica are served by the other
        f = A.post("/v1/files", files={"file": ("support.txt", TEXT.encode())}, data={"purpose": "fine-tune"}).json()
        assert B.get(f"/v1/files/{f['id']}").json()["bytes"] == len(TEXT.encode())
        done = B.post("/v1/completions", json={"model": "chat", "prompt": "User: hi\nBot:", "max_tokens": 3, "seed": 1})
        assert done.status_code == 200, done.text
        hist = A.get("/ui/api/history").json()["data"]
        assert [(h["model"], h["usage"]) for h in hist] == [("chat", {k: done.json()["usage"][k] for k in hist[0]["usage"]})]

        def create(client, steps):
            r = client.post("/v1/fine_tuning/jobs", json={"model": "chat", "training_file": f["id"],
                                                          "genloom_config": {"train": {**TRAIN, "max_steps": steps}}})
            assert r.status_code == 200, r.text
            return r.json()["id"]

        def steps(jid):
            return [e.data["step"] for e in db.events(jid, limit=10_000) if "loss" in e.data]

        def holder(jid):
            w = db.get_job(jid).worker_id
            return int(w.split(":")[1]) if w else None

        # job 1 through A, seen through B; job 2 through B goes to the other worker, cancelled through A
        long, short = create(A, 40), create(B, 400)
        assert {long, short} <= {j["id"] for j in B.get("/v1/fine_tuning/jobs").json()["data"]}
        assert {long, short} <= {j["id"] for j in A.get("/v1/fine_tuning/jobs").json()["data"]}
        _wait(lambda: steps(long) and steps(short), 120, cluster.tail)
        assert {holder(long), holder(short)} == {w.pid for w in workers}  # one job each
        cancelled = A.post(f"/v1/fine_tuning/jobs/{short}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled", cancelled.text
        stopped = lambda: [e for e in B.get(f"/v1/fine_tuning/jobs/{short}/events?limit=1000").json()["data"]
                           if e["message"].startswith("job cancelled: training stopped")]
        _wait(stopped, 30, cluster.tail)  # written by the worker, wherever it runs
        assert B.get(f"/v1/fine_tuning/jobs/{short}").json()["status"] == "cancelled"
        again = B.post(f"/v1/fine_tuning/jobs/{short}/cancel")
        assert again.status_code == 400 and "already cancelled" in again.json()["error"]["message"]
        assert len(steps(short)) < 400

        # kill -9 of the worker training job 1 after its first checkpoint: the other takes it over, once
        _wait(lambda: len(steps(long)) >= 12, 120, cluster.tail)
        first = holder(long)
        os.kill(first, signal.SIGKILL)
        killed_at = max(steps(long))
        other = next(w.pid for w in workers if w.pid != first)
        job = _wait(lambda: (j := B.get(f"/v1/fine_tuning/jobs/{long}").json())["status"] in ("succeeded", "failed")
                    and j, 120, cluster.tail)
        events = db.events(long, limit=10_000)
        assert job["status"] == "succeeded", [e.message for e in events]
        assert holder(long) == other
        assert steps(long) == list(range(1, 41))  # each step once, never backwards
        assert sum(e.message.startswith("job succeeded") for e in events) == 1
        assert any("ran out: job taken over" in e.message for e in events)
        starts = [e.data["step"] for e in events if e.message.startswith("training started")]
        assert len(starts) == 2 and starts[0] == 0 and 10 <= starts[1] <= killed_at and starts[1] % 10 == 0, starts
        assert sorted(p.name for p in (data / "models").iterdir()) == [job["fine_tuned_model"]]

        # events paged through either replica; the fine-tuned model served by both
        page = A.get(f"/v1/fine_tuning/jobs/{long}/events?limit=5").json()["data"]
        rest = B.get(f"/v1/fine_tuning/jobs/{long}/events?limit=1000&after={page[-1]['id']}").json()["data"]
        assert [e["id"] for e in page + rest] == [f"ftevent-{e.id}" for e in events]
        for client in (A, B):
            _wait(lambda c=client: job["fine_tuned_model"] in [m["id"] for m in c.get("/v1/models").json()["data"]],
                  30, cluster.tail)
        assert workers[[w.pid for w in workers].index(first)].wait(5) == -signal.SIGKILL
    finally:
        cluster.stop()
    assert [p.returncode for p in cluster.procs if p.pid != first][2:] == [0], cluster.tail()  # a worker's clean stop
    assert all("Application shutdown complete" in p.log.read_text() for p in (a, b)), cluster.tail()
