"""`genloom serve` and `genloom keys`: the OpenAI-compatible server and its API keys."""

from __future__ import annotations

import json
from pathlib import Path

import click

from genloom import devices
from genloom.cli.base import _threads, cli
from genloom.cli.provenance import label_options, labeler_from_options
from genloom.errors import GenloomError
from genloom.knowledge import KnowledgeBases
from genloom.models.runtime import DTYPES, check_dtype
from genloom.safety.policy import MODES, load_policy
from genloom.serve import app as server
from genloom.serve.database import Database, redacted
from genloom.serve import jobs
from genloom.serve.jobs import JobLimits
from genloom.serve.models import ENGINES, bundled_model_paths, model_name
from genloom.serve.transport import parse_origins, parse_public_url


def _job_limit_options(f):
    """The --job-max-* options, the same on `genloom serve` and `genloom worker`."""
    opts = [
        click.option("--job-max-steps", default=JobLimits.max_steps, show_default=True, type=int,
                     help="Most training steps one fine-tuning job may ask for."),
        click.option("--job-max-threads", default=None, type=int, help="Most threads one job may use. Default: the CPU count."),
        click.option("--job-max-parameters", default=JobLimits.max_parameters, show_default=True, type=int,
                     help="Largest base model (parameters) a job may fine-tune."),
        click.option("--job-max-minutes", default=JobLimits.max_minutes, show_default=True, type=float,
                     help="Wall time after which a job fails."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _job_limits(steps, threads, parameters, minutes, **kw) -> JobLimits:
    return JobLimits(max_steps=steps, max_parameters=parameters, max_minutes=minutes,
                     **({"max_threads": threads} if threads is not None else {}), **kw)


@cli.command()
@click.option("--model", "-m", "models", multiple=True, help="A model folder to serve; repeat. Default: the bundled "
              "models (chat, kjv, tang, the fmnist-* image starters, and dcgan-faces / cdcgan-eyes / voice-joe once setup imported them).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind (0.0.0.0 exposes it).")
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--data-dir", default="genloom-data", show_default=True, help="History, files, jobs, keys, fine-tuned models.")
@click.option("--db", default=None, help="A SQLAlchemy URL instead of SQLite in the data directory.")
@click.option("--max-batch", default=16, show_default=True, type=int, help="Requests decoded together (continuous batching).")
@click.option("--max-queue", default=64, show_default=True, type=int, help="Waiting requests before 429s.")
@click.option("--max-tokens", default=1024, show_default=True, type=int, help="Upper limit of max_tokens per request.")
@click.option("--no-jobs", is_flag=True, help="Do not start the fine-tuning worker process.")
@click.option("--allowed-hosts", multiple=True, help="Host names served besides loopback and --host (comma-separated "
              "or repeated; '*' for any): other Host headers get 400, which stops DNS rebinding.")
@click.option("--public-url", default=None, help="Base of the URLs the server hands out (image URLs), e.g. "
              "https://gen.example.org behind a proxy. Default: the address a request came in on, http://HOST:PORT.")
@click.option("--cors-origins", multiple=True, help="Web origins (scheme://host[:port]) allowed to call the API from "
              "a browser (comma-separated or repeated). Default: none; other origins' writes get 403.")
@_job_limit_options
@click.option("--kb", "kb_pairs", multiple=True, metavar="MODEL=KB", help="Ground MODEL's chat replies in a knowledge "
              "base: KB is a base's name under DATA_DIR/kb (`genloom kb create`) or a knowledge-base folder; repeat "
              "per model. Default: the base a model folder's grounding.json names, if any.")
@click.option("--threads", type=int, default=0)
@click.option("--dtype", type=click.Choice(DTYPES), default=None,
              help="Text models run in this dtype (default: int8 for an int8 export, else float32).")
@click.option("--compile", "compile_decode", is_flag=True,
              help="Compile text models' decode step ahead of time (AOTInductor, cached on disk per model).")
@click.option("--engine", type=click.Choice(ENGINES), default="thread", show_default=True,
              help="Where each text model decodes: thread (a thread of the server) or process (a child process per "
              "text model, so the HTTP side and the decoding steps do not share one Python GIL: faster under "
              "concurrent clients, at about 5 s more start-up and 400 MiB more memory per text model).")
@click.option("--device", default="auto", show_default=True, help="Where the models run: auto (a GPU when there is "
              "one), cpu, cuda, cuda:N or mps.")
@label_options
@click.option("--watermark", type=click.Choice(["on", "off"]), default="on", show_default=True,
              help="Mark every text, image and audio output with the installation's key (DATA_DIR/watermark.key); "
              "off is logged as a warning.")
@click.option("--moderation", type=click.Choice(MODES), default=None, help="Moderation of prompts and outputs: block "
              "(refuse with a 400 / end a stream with content_filter), flag (serve and record), off. Default: the "
              "policy file's mode, else block.")
@click.option("--moderation-policy", default=None, help="A TOML or JSON policy file: mode and per-category thresholds.")
def serve(models, host, port, data_dir, db, max_batch, max_queue, max_tokens, no_jobs, allowed_hosts, public_url,
          cors_origins, job_max_steps, job_max_threads, job_max_parameters, job_max_minutes, kb_pairs, threads, dtype,
          compile_decode, engine, device, watermark, moderation, moderation_policy, **label_kw):
    """The OpenAI-compatible API and the web UI (http://HOST:PORT/ui/)."""
    _threads(threads)
    labeler = labeler_from_options(data_dir, **label_kw)  # a bad switch or a missing certificate: one line, first
    devices.resolve(device)  # no such device: one line, before anything starts
    if dtype is not None:
        check_dtype(dtype)  # a dtype this machine cannot run: one line, before anything starts
    policy = load_policy(moderation_policy, moderation)  # a bad file or category: one line, before anything starts
    limits = _job_limits(job_max_steps, job_max_threads, job_max_parameters, job_max_minutes)
    paths = list(models) or [str(p) for p in bundled_model_paths()]
    if not paths:
        raise GenloomError("no models to serve: pass --model FOLDER (the bundled models are in models/ of a "
                           "genloom checkout; scripts/setup.sh imports the pretrained GANs)")
    parse_public_url(public_url), parse_origins(_split(cors_origins))  # a bad value is one line, before anything starts
    kb = _kb_pairs(kb_pairs)
    server.resolve_kbs([model_name(p) for p in paths], kb, KnowledgeBases(Path(data_dir) / "kb"))  # fail early
    for line in labeler.policy.describe(labeler.identity is not None):  # every label switch, at start-up
        click.echo(f"genloom: {line}", err=True)
    for line in labeler.warnings():
        click.echo(f"genloom: warning: {line}", err=True)
    click.echo(f"genloom: serving {', '.join(Path(p).name for p in paths)} on http://{host}:{port} "
               f"(web UI: http://{host}:{port}/ui/); {policy.describe()}", err=True)
    server.serve(paths, host=host, port=port, data_dir=data_dir, db_url=db, max_batch=max_batch, max_queue=max_queue,
        max_tokens=max_tokens, jobs=not no_jobs, allowed_hosts=_split(allowed_hosts), public_url=public_url,
        cors_origins=_split(cors_origins), job_limits=limits, kb=kb, device=device, dtype=dtype,
        compile_decode=compile_decode, engine=engine, labeler=labeler, watermark=watermark, moderation=policy)


@cli.command()
@click.option("--db", default=None, help="The SQLAlchemy URL of the servers' database (PostgreSQL when workers and "
              "replicas run on several machines). Default: SQLite in --data-dir.")
@click.option("--data-dir", default="genloom-data", show_default=True, help="The servers' data directory (a shared "
              "mount across machines): uploaded files, job folders, fine-tuned models.")
@click.option("--model", "-m", "models", multiple=True, help="A base model folder jobs may fine-tune, the same the "
              "servers serve; repeat. Default: the bundled models.")
@click.option("--lease-seconds", default=JobLimits.lease_s, show_default=True, type=float, help="The claim on a "
              "job, renewed while it trains: a worker that dies gives its job to another after this long.")
@_job_limit_options
@click.option("--threads", type=int, default=0)
def worker(db, data_dir, models, lease_seconds, job_max_steps, job_max_threads, job_max_parameters, job_max_minutes,
           threads):
    """Run fine-tuning jobs from the database of `genloom serve` replicas (started with --no-jobs), on any machine.

    Each job is trained by exactly one worker (a lease in the database); a worker killed mid-job gives it to
    another after --lease-seconds, which resumes it from its checkpoint. Ctrl-C or SIGTERM: the job in hand
    writes a checkpoint and goes back to the queue. The database must have been opened by `genloom serve`
    once (the server creates and upgrades the schema; a worker never does).
    """
    _threads(threads)
    if not lease_seconds > 0:
        raise GenloomError(f"--lease-seconds must be > 0, got {lease_seconds:g}")
    limits = _job_limits(job_max_steps, job_max_threads, job_max_parameters, job_max_minutes, lease_s=lease_seconds)
    paths = list(models) or [str(p) for p in bundled_model_paths()]
    missing = [p for p in paths if not Path(p).exists()]
    if missing or not paths:
        raise GenloomError(f"model not found: {', '.join(missing)}" if missing else "no base models: pass --model FOLDER")
    bases = {model_name(p): str(Path(p).resolve()) for p in paths}
    Database(db, data_dir=data_dir, upgrade=False).close()  # no schema: one line, before anything starts
    click.echo(f"genloom: worker running fine-tuning jobs from {redacted(db) if db else Path(data_dir) / 'genloom.db'} on "
               f"{', '.join(bases)} (data: {data_dir}); Ctrl-C stops it after a checkpoint", err=True)
    jobs.worker_loop(db, data_dir, str(Path(data_dir) / "models"), bases, limits=limits, signals=True)


def _kb_pairs(pairs) -> dict[str, str]:
    """--kb MODEL=KB options as {model: kb}."""
    out: dict[str, str] = {}
    for pair in pairs:
        model, sep, kb = pair.partition("=")
        if not sep or not model.strip() or not kb.strip():
            raise GenloomError(f"--kb takes MODEL=KB (a served model's name and a knowledge base), got {pair!r}")
        if model.strip() in out:
            raise GenloomError(f"--kb names model '{model.strip()}' twice: one knowledge base per model")
        out[model.strip()] = kb.strip()
    return out


def _split(values) -> list[str]:
    """Repeated and comma-separated option values as one list."""
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


@cli.group()
def keys():
    """API keys of `genloom serve`.

    \b
    keys mode: while at least one key is active (not revoked), every route but /health needs one.
    open mode: with no active key, the server serves any request without a key.
    A new key takes effect at the server's next request; a revocation within 2 s (the server logs
    its mode at start-up and when it changes).
    `genloom keys open` revokes every key to return to open mode; revoking the last active key
    with `revoke` needs --open, so a server never opens by accident.
    """


def _db(data_dir, db):
    return Database(db, data_dir=data_dir)


_db_opts = [
    click.option("--data-dir", default="genloom-data", show_default=True, help="The server's data directory."),
    click.option("--db", default=None, help="A SQLAlchemy URL (default: SQLite in the data directory)."),
]


def _with_db(f):
    for opt in reversed(_db_opts):
        f = opt(f)
    return f


def _mode(n_active: int) -> str:
    return f"keys mode: {n_active} active key(s) required" if n_active else "open mode: no active key, any request is served"


@keys.command("create")
@click.option("--name", required=True, help="Who or what the key is for.")
@click.option("--rate-limit", type=int, default=0, show_default=True, help="Requests per minute (0: unlimited).")
@_with_db
def keys_create(name, rate_limit, data_dir, db):
    """Create a key; its secret is printed once (only a hash is stored)."""
    database = _db(data_dir, db)
    key, secret = database.create_key(name, rate_limit)
    click.echo(f"created {key.id} ({key.prefix}...) for '{name}'; the secret, shown only now:", err=True)
    click.echo(secret)
    click.echo(f"server: {_mode(database.count_active_keys())}", err=True)


@keys.command("list")
@click.option("--json", "as_json", is_flag=True)
@_with_db
def keys_list(as_json, data_dir, db):
    """List keys (id, prefix, name, created, revoked); secrets are never shown."""
    database = _db(data_dir, db)
    rows = [{"id": k.id, "prefix": k.prefix, "name": k.name, "rate_limit": k.rate_limit,
             "created_at": k.created_at.isoformat(timespec="seconds"), "revoked": k.revoked_at is not None}
            for k in database.list_keys()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        click.echo(f"{r['id']}  {r['prefix']}...  {r['name']}  created {r['created_at']}"
                   f"{'  REVOKED' if r['revoked'] else ''}")
    click.echo(f"server: {_mode(database.count_active_keys())}", err=True)


@keys.command("revoke")
@click.argument("key")
@click.option("--open", "open_", is_flag=True, help="Allow revoking the last active key (the server opens).")
@_with_db
def keys_revoke(key, open_, data_dir, db):
    """Revoke a key by id or prefix; requests with it get 401 from then on."""
    database = _db(data_dir, db)
    k = database.get_key(key)
    if k.revoked_at is None and database.count_active_keys() == 1 and not open_:
        raise GenloomError(f"{k.id} is the last active key: revoking it puts the server in open mode (any request "
                           "is served); pass --open to do so, or create another key first")
    k = database.revoke_key(k.id)
    click.echo(f"revoked {k.id} ({k.prefix}...); server: {_mode(database.count_active_keys())}")


@keys.command("open")
@_with_db
def keys_open(data_dir, db):
    """Return the server to open mode: revoke every active key, so any request is served without one."""
    database = _db(data_dir, db)
    n = database.count_active_keys()
    click.echo(f"revoking {n} active key(s): the server will serve any request without a key (open mode)", err=True)
    revoked = database.revoke_all_keys()
    click.echo(f"revoked {len(revoked)} key(s); server: {_mode(database.count_active_keys())}")
