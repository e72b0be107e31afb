"""Jobs under faults: one worker per job (a lease in the database), idempotent events and exports, and a
`kill -9` of a real `genloom serve` whose worker must exit and whose job must finish exactly once.

The lease tests run on SQLite and, when GENLOOM_TEST_DATABASE_URL names one (CI sets it), PostgreSQL.
"""

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine

try:
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx

from genloom.serve.database import Database
from genloom.serve.jobs import publish

ROOT = Path(__file__).resolve().parent.parent
CHAT = ROOT / "models" / "chat"
PG = os.environ.get("GENLOOM_TEST_DATABASE_URL")
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.skipif(
    not PG, reason="GENLOOM_TEST_DATABASE_URL is not set (CI sets it to a PostgreSQL server)"))]
TEXT = "\n".join(f"User: how do I reset my password {i}?\nBot: Open settings, then security, then reset." for i in range(60))


@pytest.fixture(params=BACKENDS)
def url(request):
    """The database URL of a fresh database (None: SQLite in the test's data directory)."""
    if request.param == "sqlite":
        return None
    eng = create_engine(PG)
    with eng.begin() as c:
        c.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
    eng.dispose()
    return PG


def test_a_lease_is_held_renewed_and_lost(url, tmp_path):
    db = Database(url, data_dir=tmp_path)
    job = db.create_job("chat", {})
    a = db.claim_job("A", lease_s=0.5)
    assert (a.id, a.worker_id, a.status) == (job.id, "A", "running") and a.lease_expires_at is not None
    assert db.claim_job("B", lease_s=0.5) is None  # held
    assert db.renew_lease(job.id, "A", 0.5) and not db.renew_lease(job.id, "B", 0.5)
    time.sleep(0.7)  # A stops renewing: its lease runs out and B takes the job
    b = db.claim_job("B", lease_s=30)
    assert (b.id, b.worker_id) == (job.id, "B")
    assert not db.renew_lease(job.id, "A", 30)  # A learns it lost the job
    assert not db.finish_job(job.id, "A", "succeeded", "job succeeded: model 'x' registered", fine_tuned_model="x")
    assert db.finish_job(job.id, "B", "succeeded", "job succeeded: model 'y' registered", fine_tuned_model="y")
    assert not db.finish_job(job.id, "B", "succeeded", "job succeeded: model 'y' registered", fine_tuned_model="y")
    done = db.get_job(job.id)
    assert (done.status, done.fine_tuned_model) == ("succeeded", "y") and done.finished_at is not None
    assert [e.message for e in db.events(job.id)].count("job succeeded: model 'y' registered") == 1
    assert db.claim_job("C", lease_s=30) is None  # a finished job is never claimed again


def test_release_and_cancel(url, tmp_path):
    db = Database(url, data_dir=tmp_path)
    job = db.create_job("chat", {})
    db.claim_job("A", lease_s=30)
    assert not db.release_job(job.id, "B", "not mine")
    assert db.release_job(job.id, "A", "server gone: job released")
    assert (db.get_job(job.id).status, db.get_job(job.id).worker_id) == ("queued", None)
    assert db.claim_job("B", lease_s=30).id == job.id
    db.set_job(job.id, "cancelled")  # what the cancel route does
    assert not db.renew_lease(job.id, "B", 30) and db.claim_job("C", lease_s=30) is None


@pytest.mark.parametrize("workers", [2, 6])
def test_workers_racing_for_a_job_one_wins(url, tmp_path, workers):
    """Each round, several workers (threads, each with its own connection) claim at once: exactly one gets the job."""
    db = Database(url, data_dir=tmp_path)
    handles = [Database(url, data_dir=tmp_path) for _ in range(workers)]
    for _ in range(8):
        job = db.create_job("chat", {})
        barrier, won = threading.Barrier(workers), [None] * workers

        def claim(i, barrier, won):
            barrier.wait()
            won[i] = handles[i].claim_job(f"w{i}", lease_s=60)

        threads = [threading.Thread(target=claim, args=(i, barrier, won)) for i in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [i for i, j in enumerate(won) if j is not None]
        assert len(winners) == 1, won
        assert won[winners[0]].id == job.id and db.get_job(job.id).worker_id == f"w{winners[0]}"
    for h in handles:
        h.close()


def test_many_jobs_each_claimed_once(url, tmp_path):
    db = Database(url, data_dir=tmp_path)
    jobs = {db.create_job("chat", {}).id for _ in range(12)}
    claimed: list[tuple[str, int]] = []
    handles = [Database(url, data_dir=tmp_path) for _ in range(4)]  # opened (migrated) one at a time

    def worker(i):
        while (job := handles[i].claim_job(f"w{i}", lease_s=60)) is not None:
            claimed.append((job.id, i))
        handles[i].close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(j for j, _ in claimed) == sorted(jobs)
    assert all(db.get_job(j).worker_id == f"w{i}" for j, i in claimed)


def test_events_are_written_once_per_key(url, tmp_path):
    db = Database(url, data_dir=tmp_path)
    job = db.create_job("chat", {})
    assert db.add_event(job.id, "step 3/8: loss 2.0", {"step": 3, "loss": 2.0}, key="step:3")
    assert not db.add_event(job.id, "step 3/8: loss 2.0", {"step": 3, "loss": 2.0}, key="step:3")
    assert db.add_event(job.id, "note") and db.add_event(job.id, "note")  # without a key: every one is kept
    other = db.create_job("chat", {})
    assert db.add_event(other.id, "step 3/8: loss 1.0", {"step": 3, "loss": 1.0}, key="step:3")  # per job
    assert [e.message for e in db.events(job.id)] == ["job queued", "step 3/8: loss 2.0", "note", "note"]


def test_publish_is_atomic_and_never_clobbers(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    (models / ".ft-x.tmp-dead").mkdir()  # left by a worker killed mid-copy
    assert publish(CHAT, models / "ft-x", "ft-x", {"job": "a"}, "first")
    first = (models / "ft-x" / "config.json").read_bytes()
    assert json.loads(first)["card"]["job"] == "a"
    assert not publish(CHAT, models / "ft-x", "ft-x", {"job": "b"}, "second")  # a finished export stays
    assert (models / "ft-x" / "config.json").read_bytes() == first
    assert sorted(p.name for p in models.iterdir()) == ["ft-x"]


# ---- kill -9 of a real server ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(data: Path, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "genloom.cli", "serve", "--model", str(CHAT), "--data-dir", str(data),
           "--port", str(port), "--threads", "1", "--job-max-steps", "400", "--job-max-threads", "1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)


def _gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for a reaper counts as exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def _wait(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := cond()):
        assert time.monotonic() < deadline, what
        time.sleep(0.02)
    return value


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to see the worker exit")
def test_kill_9_of_worker_then_server_and_the_job_finishes_once(tmp_path):
    """kill -9 of the job worker (the server re-queues its job and starts another), then of the server (its
    worker stops within seconds); after a restart the job finishes once: each step recorded once, in
    order, one "succeeded", one export folder, resumed from its checkpoints."""
    data, log = tmp_path / "data", tmp_path / "serve.log"
    rng = random.Random(11)  # the steps after which the worker, then the server, die
    port = _free_port()
    server = _serve(data, port, log)
    try:
        base = f"http://127.0.0.1:{port}"
        f = httpx.post(f"{base}/v1/files", files={"file": ("support.txt", TEXT.encode())},
                       data={"purpose": "fine-tune"}).json()
        train = {"max_steps": 100, "batch_size": 4, "log_interval": 1, "warmup_steps": 1, "eval_interval": 50,
                 "eval_batches": 2, "ckpt_interval": 20, "threads": 1}
        job = httpx.post(f"{base}/v1/fine_tuning/jobs", json={"model": "chat", "training_file": f["id"],
                                                               "genloom_config": {"train": train}}).json()
        assert "id" in job, job
        db = Database(data_dir=data)

        def step():
            steps = [e.data["step"] for e in db.events(job["id"], limit=1000) if "loss" in e.data]
            return steps[-1] if steps else 0

        def worker_pid():
            holder = db.get_job(job["id"]).worker_id
            return int(holder.split(":")[1]) if holder else None

        kill_worker_at = rng.randint(25, 40)
        _wait(lambda: step() >= kill_worker_at, 120, f"no step {kill_worker_at}: {log.read_text()[-3000:]}")
        first = worker_pid()
        os.kill(first, signal.SIGKILL)
        _wait(lambda: worker_pid() not in (None, first), 30, "the server did not start a new worker for the job")
        kill_server_at = step() + rng.randint(10, 20)
        _wait(lambda: step() >= kill_server_at, 120, f"no step {kill_server_at}: {log.read_text()[-3000:]}")
        second = worker_pid()
        server.kill()  # kill -9: no shutdown code runs in the server
        server.wait()
        t0 = time.monotonic()
        _wait(lambda: _gone(second), 10, "the orphaned job worker is still running 10 s after its server died")
        exited_s = time.monotonic() - t0
        server_killed_at = step()
        server = _serve(data, port, log)
        done = _wait(lambda: (j := db.get_job(job["id"])).status in ("succeeded", "failed") and j, 180,
                     f"the job did not finish after the restart: {log.read_text()[-3000:]}")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    events = db.events(job["id"], limit=10_000)
    assert done.status == "succeeded", [e.message for e in events]
    steps = [e.data["step"] for e in events if "loss" in e.data]
    assert steps == list(range(1, 101)), steps  # each step once, progress never backwards
    assert sum(e.message.startswith("job succeeded") for e in events) == 1
    assert any(e.message.startswith(f"job worker {first} died") for e in events)
    starts = [e.data["step"] for e in events if e.message.startswith("training started")]
    assert len(starts) == 3 and starts[0] == 0, starts
    assert 20 <= starts[1] <= kill_worker_at and starts[1] % 20 == 0, starts  # the last checkpoint before kill -9
    assert starts[1] < starts[2] <= server_killed_at, starts  # the stopping worker wrote a checkpoint
    models = data / "models"
    assert sorted(p.name for p in models.iterdir()) == [done.fine_tuned_model]  # one export, no leftovers
    print(f"worker exited {exited_s:.2f} s after the server's kill -9; kills after steps {kill_worker_at} (worker), "
          f"{kill_server_at} (server)")
