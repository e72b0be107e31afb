"""The text engine in its own process: the server's event loop and the decoding steps stop sharing one GIL.

In one process the engine's worker thread gives up the GIL around every torch op of a step (dozens per
step) and has to win it back from the event loop, which meanwhile frames and writes the previous step's SSE
chunks; at 16 rows the two take turns instead of running on two cores, and a step took twice as long in the
server as alone (bench/RESULTS.md, "Serving: the engine in its own process"). vLLM splits the same way (its V1
EngineCore runs in a child process; the API server keeps tokenisation and detokenised output).

EngineProcess has the TextEngine interface the server uses (submit, stats, stop and the RequestHandle it returns,
with events, aevents, result, cancel): the request is checked here (genloom.serve.engine.checked_request, so a bad
prompt is a GenloomError at once) and the queue bound is held here (max_batch + max_queue requests in flight);
the child process loads the model itself, runs a TextEngine and sends each step's events back in one message.
The child is `python -m genloom.serve.engine_process FD` on one end of a socket pair; messages are JSON, so
nothing is unpickled on either side.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path

import torch

import genloom
from genloom.checkpoints import load_model
from genloom.errors import GenloomError
from genloom.models.runtime import prepare
from genloom.safety.watermark import Secret, Watermarks
from genloom.sample import SamplingParams
from genloom.serve.engine import (
    Event,
    QueueFull,
    RequestHandle,
    TextEngine,
    checked_request,
    decode_threads,
    wake_all,
)

log = logging.getLogger(__name__)
_ids = itertools.count(1)
START_TIMEOUT_S = 600.0  # loading (and compiling) a model in the child
STOP_TIMEOUT_S = 30.0


class EngineGone(GenloomError):
    """The engine's process has exited: no request can be served by it any more (an HTTP layer answers 503)."""


class EngineProcess:
    """A TextEngine for the model at `path`, in a child process: a fresh interpreter, sharing no GIL with this one."""

    def __init__(self, path: str | Path, tokenizer, config, *, max_batch: int = 16, max_queue: int = 64,
                 name: str = "", watermarks=None, dtype: str = "float32", compile: bool = False, device: str = "cpu",
                 threads: int | None = None):
        """`tokenizer` and `config`: the model's, to check prompts here; `threads`: the child's intra-op threads
        (default decode_threads of this process's torch threads: a core stays with the server)."""
        if max_batch < 1 or max_queue < 0:
            raise GenloomError(f"max_batch must be >= 1 and max_queue >= 0 (got {max_batch}, {max_queue})")
        self.tok, self.cfg, self.name = tokenizer, config, name
        self.max_batch, self.max_queue = max_batch, max_queue
        self.threads = threads or decode_threads(torch.get_num_threads())
        secret = watermarks.secret.raw.hex() if watermarks is not None and watermarks.on else None
        spec = {"path": str(path), "name": name, "max_batch": max_batch, "dtype": dtype, "compile": compile,
                "device": device, "threads": self.threads, "key": secret}
        # a fresh interpreter on one end of a socket pair (not multiprocessing's spawn, which re-imports the
        # caller's __main__ and so fails in a script without a main guard); the spec, key included, goes through
        # the socket, never the command line
        ours, theirs = socket.socketpair()
        root = str(Path(genloom.__file__).resolve().parent.parent)  # the child imports this very genloom
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])}
        self._proc = subprocess.Popen([sys.executable, "-m", "genloom.serve.engine_process", str(theirs.fileno())],
                                      pass_fds=(theirs.fileno(),), env=env)
        theirs.close()
        self._conn = Connection(ours.detach())
        self._conn.send_bytes(json.dumps(spec).encode())
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()
        self._handles: dict[str, RequestHandle] = {}
        self._stats: dict = {}
        self._gone: str | None = None  # why the child is gone
        self._stopping = False
        try:
            hello = self._recv(START_TIMEOUT_S)
        except (EOFError, OSError, TimeoutError) as e:
            self._kill()
            raise GenloomError(f"the engine process for {name or path} did not start: {e!r} "
                               f"(exit code {self._proc.returncode})") from None
        if "error" in hello:
            self._kill()
            raise GenloomError(hello["error"])
        self._stats = hello["s"]
        self.pid = self._proc.pid
        self._reader = threading.Thread(target=self._read, name=f"genloom-engine-reader-{name}", daemon=True)
        self._reader.start()

    # ----- the TextEngine interface

    def submit(self, prompt: str | list[int], sp: SamplingParams) -> RequestHandle:
        """Check and queue a request (GenloomError for a bad prompt or parameters, QueueFull when max_batch +
        max_queue requests are in flight, EngineGone when the child has exited)."""
        ids, sp = checked_request(self.tok, self.cfg, prompt, sp)
        with self._lock:
            if self._gone is not None:
                raise EngineGone(self._gone)
            if self._stopping:
                raise GenloomError("the engine is stopped")
            if len(self._handles) >= self.max_batch + self.max_queue:
                raise QueueFull(f"{len(self._handles)} requests are in flight (max_batch {self.max_batch} + "
                                f"max_queue {self.max_queue})")
            h = RequestHandle(self, ids, sp, f"{self.name or 'req'}-{next(_ids)}")
            self._handles[h.id] = h
        try:
            self._send(["submit", h.id, ids, dataclasses.asdict(sp)])
        except OSError as e:  # the child is gone: this request fails, and the reader fails the others
            with self._lock:
                self._handles.pop(h.id, None)
            raise EngineGone(f"the engine process for {self.name} has exited ({e})") from None
        return h

    def stats(self) -> dict:
        out = dict(self._stats)  # the child's TextEngine.stats() as of its last message (the first: its hello)
        out.update(name=self.name, max_batch=self.max_batch, max_queue=self.max_queue, pid=self.pid,
                   alive=self._gone is None)
        return out

    def start(self) -> None:
        """The child runs from the constructor on (TextEngine's start, for the same calls)."""

    def stop(self) -> None:
        """Cancel everything pending (events end with "cancelled"), let the child exit, and reap it."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
        try:
            self._send(["stop"])
        except OSError:
            pass
        self._reader.join(STOP_TIMEOUT_S)
        try:
            self._proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.warning("engine %s: the engine process did not exit in %.0f s; terminating it", self.name,
                        STOP_TIMEOUT_S)
            self._kill()
        self._end_all(cancel=True)
        self._conn.close()

    def _cancelled(self, h: RequestHandle) -> None:  # RequestHandle.cancel
        try:
            self._send(["cancel", h.id])
        except OSError:
            pass

    # ----- the pipe

    def _send(self, msg: list) -> None:
        data = json.dumps(msg).encode()
        with self._send_lock:
            self._conn.send_bytes(data)

    def _recv(self, timeout: float | None = None) -> dict:
        if timeout is not None and not self._conn.poll(timeout):
            raise TimeoutError(f"no word from the engine process within {timeout:.0f} s")
        return json.loads(self._conn.recv_bytes())

    def _read(self) -> None:
        """The child's messages, one per step: each row's event, failures and the engine's counters."""
        try:
            while True:
                msg = self._recv()
                if msg.get("bye"):
                    return
                self._deliver(msg)
        except (EOFError, OSError) as e:
            code = self._proc.poll()
            why = f"the engine process for {self.name} exited (exit code {code}, {type(e).__name__})"
            with self._lock:
                self._gone = why
            if not self._stopping:
                log.error("engine %s: %s; its requests fail", self.name, why)
            self._end_all(cancel=False, why=why)

    def _deliver(self, msg: dict) -> None:
        woken: dict = {}
        done = []
        for rid, text, token, finish, stop_reason in msg.get("e", ()):
            h = self._handles.get(rid)
            if h is None:
                continue
            if token is not None:
                h.completion_tokens += 1
            h._push(Event(text, token, finish, stop_reason), woken)
            if finish is not None:
                done.append(rid)
        for rid, error in msg.get("f", ()):
            h = self._handles.get(rid)
            if h is not None:
                h._fail(RuntimeError(error))
                done.append(rid)
        if "s" in msg:
            self._stats = msg["s"]
        with self._lock:
            for rid in done:
                self._handles.pop(rid, None)
        wake_all(woken)

    def _end_all(self, *, cancel: bool, why: str = "") -> None:
        with self._lock:
            pending, self._handles = list(self._handles.values()), {}
        for h in pending:
            if cancel:
                h._push(Event("", None, "cancelled"))
            else:
                h._fail(RuntimeError(why))

    def _kill(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait(STOP_TIMEOUT_S)


# ----- the child


class _ForwardedHandle(RequestHandle):
    """The child's handle: its events go to the engine's outbox, sent to the parent at the end of the step."""

    def __init__(self, engine, *args):
        super().__init__(engine, *args)
        engine.by_id[self.id] = self  # before the worker can see it: a cancel always finds it

    def _push(self, ev: Event, woken: dict | None = None) -> None:
        self._engine._outbox(("e", [self.id, ev.text, ev.token, ev.finish_reason, ev.stop_reason]))
        if ev.finish_reason is not None:
            self._done = True

    def _fail(self, error: BaseException) -> None:
        if not self._done:
            self._done = True
            self._engine._outbox(("f", [self.id, str(error)]))
            self._engine.flush()  # now: a failed step may be followed by no other step to carry it


class _ChildEngine(TextEngine):
    """A TextEngine whose requests' events leave through `conn`, one message per step."""

    Handle = _ForwardedHandle

    def __init__(self, *args, conn, **kw):
        super().__init__(*args, **kw)
        self._conn = conn
        self._out: dict[str, list] = {"e": [], "f": []}
        self._out_lock = threading.Lock()
        self.by_id: dict[str, RequestHandle] = {}

    def _outbox(self, item: tuple[str, list]) -> None:
        with self._out_lock:
            self._out[item[0]].append(item[1])

    def step(self) -> None:
        try:
            super().step()
        finally:
            self.flush()

    def flush(self) -> None:
        with self._out_lock:
            out, self._out = self._out, {"e": [], "f": []}
            if not out["e"] and not out["f"]:
                return
            out["s"] = self.stats()
            for rid, *rest in out["e"]:
                if rest[2] is not None:
                    self.by_id.pop(rid, None)
            for rid, _ in out["f"]:
                self.by_id.pop(rid, None)
            self._conn.send_bytes(json.dumps(out).encode())  # under the lock: one writer at a time


def _child_main(conn) -> None:
    """Load the model the parent's first message names, run its engine, take the parent's requests until it says
    stop (or is gone)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent stops the engine
    try:
        spec = json.loads(conn.recv_bytes())
        loaded = load_model(spec["path"], device=spec["device"])
        model = prepare(loaded.model, spec["dtype"], spec["compile"], device=spec["device"])
        marks = Watermarks(Secret(bytes.fromhex(spec["key"]))) if spec["key"] else None
        # the parent holds the queue bound; the child queues whatever it is sent
        engine = _ChildEngine(model, loaded.tokenizer, max_batch=spec["max_batch"], max_queue=1 << 30,
                              name=spec["name"], watermarks=marks, threads=spec["threads"], conn=conn)
        engine.start()
    except Exception as e:  # noqa: BLE001 - the parent raises it as the load error
        conn.send_bytes(json.dumps({"error": f"{type(e).__name__}: {e}"}).encode())
        return
    conn.send_bytes(json.dumps({"ready": True, "s": engine.stats()}).encode())
    try:
        while True:
            op, *args = json.loads(conn.recv_bytes())
            if op == "stop":
                break
            if op == "submit":
                rid, ids, sp = args
                try:
                    engine.submit(ids, SamplingParams(**sp), rid=rid)
                except Exception as e:  # noqa: BLE001 - checked in the parent already; this request alone fails
                    engine.by_id.pop(rid, None)
                    engine._outbox(("f", [rid, f"generation failed: {e}"]))
                    engine.flush()
            elif op == "cancel":
                h = engine.by_id.get(args[0])
                if h is not None:
                    h.cancel()  # a waiting request ends now, a running one at the worker's next step
                    engine.flush()
    except (EOFError, OSError):  # the parent is gone
        pass
    engine.stop()
    try:
        engine.flush()
        conn.send_bytes(b'{"bye": true}')
    except OSError:
        pass


if __name__ == "__main__":  # python -m genloom.serve.engine_process FD (EngineProcess starts it)
    _child_main(Connection(int(sys.argv[1])))
