"""`genloom kb`: knowledge bases (documents split into passages, MiniLM embeddings + BM25, hybrid search)."""

from __future__ import annotations

import datetime as dt
import json

import click

from genloom.cli.base import _threads, cli
from genloom.knowledge import MODES, KnowledgeBases, read_source

DEFAULT_ROOT = "genloom-data/kb"  # the default server data directory's kb/ (what `genloom serve` shows)
_dir = click.option("--dir", "root", default=DEFAULT_ROOT, show_default=True,
                    help="The folder that holds the knowledge bases.")


@cli.group()
def kb():
    """Knowledge bases: Markdown, text and JSONL Q/A documents (or a corpus by name: chatterbot, ...) split into
    passages and indexed for search with all-MiniLM-L6-v2 embeddings and BM25.

    \b
    genloom kb create docs --from handbook/        index a folder (re-run: only changed files are re-embedded)
    genloom kb add docs faq.jsonl                  add or replace one document
    genloom kb search docs "reset my password" -k 5 --mode hybrid
    genloom kb list
    """


@kb.command("create")
@click.argument("name")
@click.option("--from", "sources", multiple=True, required=True,
              help="A .md/.markdown/.txt/.text/.jsonl file, a folder of them, or a corpus name (chatterbot); repeat.")
@_dir
@click.option("--threads", type=int, default=0)
def kb_create(name, sources, root, threads):
    """Create or refresh NAME from documents: new and changed ones are embedded, removed ones dropped."""
    _threads(threads)
    kbs = KnowledgeBases(root)
    kbs.path(name)  # a bad name fails before any document is read
    docs = [d for s in sources for d in read_source(s)]
    change = kbs.update(name, docs, drop_missing=True, meta={"sources": list(sources)})
    click.echo(f"{name}: {change.summary()} ({kbs.path(name)})")


@kb.command("add")
@click.argument("name")
@click.argument("source")
@_dir
@click.option("--threads", type=int, default=0)
def kb_add(name, source, root, threads):
    """Add documents (a file, a folder or a corpus name) to NAME, replacing those with the same name."""
    _threads(threads)
    kbs = KnowledgeBases(root)
    kbs.require(name)
    change = kbs.update(name, read_source(source))
    click.echo(f"{name}: {change.summary()}")


@kb.command("search")
@click.argument("name")
@click.argument("query")
@click.option("-k", "k", type=click.IntRange(1, 100), default=5, show_default=True, help="Passages to show.")
@click.option("--mode", type=click.Choice(MODES), default="hybrid", show_default=True,
              help="bm25: exact words; embeddings: meaning; hybrid: both, by reciprocal rank fusion.")
@click.option("--json", "as_json", is_flag=True, help="One JSON list: passage, rank, score, cosine, bm25.")
@_dir
def kb_search(name, query, k, mode, as_json, root):
    """The passages of NAME that best match QUERY, best first, with their source and heading."""
    hits = KnowledgeBases(root).search(name, query, k=k, mode=mode)
    if as_json:
        click.echo(json.dumps([{**h.passage.to_json(), "rank": h.rank, "score": h.score, "cosine": h.cosine,
                                "bm25": h.bm25} for h in hits], indent=1, ensure_ascii=False))
        return
    if not hits:
        click.echo("no passage matches", err=True)
    for h in hits:
        where = h.passage.source + (f" > {h.passage.heading}" if h.passage.heading else "")
        text = " ".join(h.passage.text.split())
        click.echo(f"{h.rank}. [{h.score:.3f}] {where} ({h.passage.id})\n   {text[:300]}{'...' if len(text) > 300 else ''}")


@kb.command("list")
@click.option("--json", "as_json", is_flag=True)
@_dir
def kb_list(as_json, root):
    """The knowledge bases in --dir: documents, passages, last update."""
    kbs = KnowledgeBases(root)
    rows = [{"name": n, "documents": len(m["documents"]), "passages": m["passages"], "updated_at": m["updated_at"]}
            for n in kbs.names() for m in [kbs.manifest(n)]]
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    if not rows:
        click.echo(f"no knowledge bases in {root}; create one with `genloom kb create NAME --from FOLDER`", err=True)
    for r in rows:
        when = dt.datetime.fromtimestamp(r["updated_at"], dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        click.echo(f"{r['name']}  {r['documents']} documents, {r['passages']} passages, updated {when}")
