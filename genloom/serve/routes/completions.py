"""POST /v1/completions and /v1/chat/completions: parse, submit to the model's engine, stream or collect the reply."""

from __future__ import annotations

import asyncio
import functools
import json
import time
from dataclasses import dataclass, replace

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from genloom.errors import GenloomError
from genloom.knowledge.grounding import CUT, NOT_FOUND, STOP, Grounding, context_block, copy_through, fitting
from genloom.safety import labels
from genloom.safety.policy import FINISH, OutputGuard, merge, output_guard, screen
from genloom.serve.engine import QueueFull
from genloom.serve.engine_process import EngineGone
from genloom.serve.errors import ApiError
from genloom.serve.logs import log_event
from genloom.serve.models import ServedModel, text_model
from genloom.serve.openapi import responses
from genloom.serve.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    Delta,
    FileCitation,
    Source,
    Usage,
    new_id,
)
from genloom.serve.retrieval import KbRef, retrieve
from genloom.serve.retrieval import Source as RetrievedSource
from genloom.serve.routes.deps import v1

router = APIRouter()
DISCONNECT_POLL_S = 0.25
SSE_EVENT = {"type": "object", "required": ["data"],  # per event (OpenAPI 3.1: the schema of one event)
             "properties": {"data": {"type": "string", "description": "a JSON chunk (or an error), last [DONE]"}}}
STREAM = {200: {"description": "The completion; with stream: true, server-sent events of chunks ending in "
                               "`data: [DONE]`", "content": {"text/event-stream": {"schema": SSE_EVENT}}}}


@router.post("/v1/completions", dependencies=v1, response_model=CompletionResponse,
             responses={**STREAM, **responses(503)})
async def completions(body: CompletionRequest, request: Request):
    served = text_model(request.app.state, body.model)
    _unsupported(body.logprobs, "logprobs", ok=lambda v: not v)
    _unsupported(body.suffix, "suffix")
    _unsupported(body.best_of, "best_of", ok=lambda v: v == body.n)
    prompts = body.prompts()
    limits = request.app.state.limits
    if not prompts:
        raise ApiError(400, "prompt must not be empty.", param="prompt")
    if len(prompts) > limits.max_prompts:
        raise ApiError(400, f"At most {limits.max_prompts} prompts per request (got {len(prompts)}).", param="prompt")
    flagged = await asyncio.to_thread(screen, request.app.state.moderation, prompts, route="/v1/completions")
    ids = await asyncio.to_thread(lambda: [_encode(served, p) for p in prompts])  # tokenising is CPU work
    job = _submit(request, served, body, ids, extra_stop=[], max_tokens=body.max_tokens, param="max_tokens")
    job.route, job.params = "/v1/completions", body.model_dump(exclude_unset=True, exclude_none=True)  # as sent
    job.guard, job.flagged = output_guard(request.app.state.moderation, job.route), flagged
    echo = [""] * len(ids) * body.n
    if body.echo:
        echo = await asyncio.to_thread(lambda: [served.tokenizer.decode(i) for i in ids for _ in range(body.n)])
    if body.stream:
        return _sse(_completion_chunks(request, job, body, echo))
    texts, reasons = await _collect(request, job)
    labeler = request.app.state.labeler
    choices = [CompletionChoice(index=i, text=labels.text_notice(echo[i] + t, labeler.policy), finish_reason=r)
               for i, (t, r) in enumerate(zip(texts, reasons))]
    return CompletionResponse(id=job.id, model=served.name, choices=choices, usage=job.usage(),
                              aigc=labels.aigc_object(job.id, served.name, job.params or {}, labeler))


@router.post("/v1/chat/completions", dependencies=v1, response_model=ChatCompletionResponse,
             responses={**STREAM, **responses(503)})
async def chat_completions(body: ChatCompletionRequest, request: Request):
    """A reply to the conversation; grounded (serve/retrieval.py) when the model has a knowledge base or the
    request a file_search tool: the passages found for the last user message go in the prompt, and with the
    reply as its `sources` (nothing relevant found: grounding.NOT_FOUND, and nothing is generated)."""
    served = text_model(request.app.state, body.model)
    _unsupported(body.logprobs, "logprobs", ok=lambda v: not v)
    _unsupported(body.top_logprobs, "top_logprobs", ok=lambda v: not v)
    _unsupported(body.response_format, "response_format", ok=lambda v: v == {"type": "text"})
    messages = [(m.role, m.text()) for m in body.messages]
    max_tokens, param = body.max_new_tokens()
    _check(request, body, 1, max_tokens=max_tokens, param=param)
    flagged = await asyncio.to_thread(screen, request.app.state.moderation, [c for r, c in messages if r != "assistant"],
                                      route="/v1/chat/completions", param="messages")
    refs, grounding = _knowledge(request, served, body)
    sources: list[Source] | None = None
    if refs:
        question = next((c for r, c in reversed(messages) if r == "user"), "")
        if not question.strip():
            raise ApiError(400, "A grounded chat needs a user message to search the documents for.", param="messages")
        try:
            sources = await asyncio.to_thread(retrieve, refs, question, grounding)
        except GenloomError as e:
            raise ApiError(400, f"{e}.", param="messages") from None
        if not sources:
            await asyncio.to_thread(_encode, served, served.template.render(messages), "messages")  # still fits?
            return await _not_found(request, served, body)
    reserve = min(max_tokens or request.app.state.limits.max_tokens, served.context // 4)  # room for the reply

    def encode():  # off the event loop: a long conversation takes a while to tokenise
        return _fit(served, messages, sources or [], grounding, reserve)

    ids, used, shown = await asyncio.to_thread(encode)
    sources = None if sources is None else used
    stop = served.template.stop + (STOP if sources else [])
    job = _submit(request, served, body, [ids], extra_stop=stop, max_tokens=max_tokens, param=param)
    job.route, job.params = "/v1/chat/completions", body.model_dump(exclude_unset=True, exclude_none=True)  # as sent
    job.sources = None if sources is None else [_source(s) for s in sources]
    if sources:
        job.copied = (shown, grounding)
    job.guard, job.flagged = output_guard(request.app.state.moderation, job.route), flagged
    if body.stream:
        return _sse(_chat_chunks(request, job, body))
    texts, reasons = await _collect(request, job)
    labeler = request.app.state.labeler
    choices = [ChatChoice(index=i, message=_message(labels.text_notice(t.lstrip(), labeler.policy), job.sources),
                          finish_reason=r) for i, (t, r) in enumerate(zip(texts, reasons))]
    return ChatCompletionResponse(id=job.id, model=served.name, choices=choices, usage=job.usage(),
                                  aigc=labels.aigc_object(job.id, served.name, job.params or {}, labeler))


# ---- grounding ----


def _knowledge(request: Request, served: ServedModel, body: ChatCompletionRequest) -> tuple[list[KbRef], Grounding]:
    """The bases to search and how: the request's file_search tool (its vector stores), else the model's base."""
    tools = body.tools if body.tool_choice != "none" else None
    if not tools:
        if served.kb_building is not None:
            raise ApiError(503, f"The knowledge base '{served.kb_building}' that `{served.name}` answers from is "
                           "being built; retry shortly.", type="server_error", code="knowledge_base_building",
                           headers={"Retry-After": "10"})
        if served.kb_error is not None:
            raise ApiError(503, f"The knowledge base that `{served.name}` answers from could not be built "
                           f"({served.kb_error}).", type="server_error", code="knowledge_base_unavailable")
        return ([served.kb] if served.kb is not None else []), served.grounding
    tool, kbs = tools[0], request.app.state.kbs
    refs = []
    for i, store_id in enumerate(tool.vector_store_ids):
        if kbs is None or not kbs.exists(store_id):
            raise ApiError(400, f"No vector store found with id '{store_id}'"
                           + ("" if kbs is not None else " (this server keeps no data directory)") + ".",
                           param=f"tools[0].vector_store_ids[{i}]", code="vector_store_not_found")
        refs.append(KbRef(kbs, store_id))
    g = served.grounding
    return refs, replace(g, k=tool.max_num_results or g.k,
                         min_cosine=g.min_cosine if tool.min_cosine is None else tool.min_cosine)


def _fit(served: ServedModel, messages, sources: list[RetrievedSource], grounding: Grounding,
         reserve: int) -> tuple[list[int], list[RetrievedSource], list[str]]:
    """The prompt's token ids with as many of the passages (best first) as leave `reserve` tokens for the reply
    (at least one: a grounded prompt that cannot hold one passage is a 400 like any prompt that is too long), those
    sources, and what the prompt shows of each (Passage.prompt_text)."""
    def prompt_of(shown: list[str]) -> str:
        return served.template.render(messages, context_block(shown, grounding))

    shown = [s.hit.passage.prompt_text() for s in sources]
    n = fitting(shown, prompt_of, lambda p: len(served.tokenizer.encode(p)), served.context - reserve)
    return _encode(served, prompt_of(shown[:n]), "messages"), sources[:n], shown[:n]


def _source(s: RetrievedSource) -> Source:
    p = s.hit.passage
    return Source(vector_store_id=s.store_id, file_id=s.file_id, passage_id=p.id, source=p.source,
                  heading=p.heading, score=round(s.hit.score, 6), cosine=round(s.hit.cosine, 6), text=p.text)


def _message(content: str, sources: list[Source] | None) -> AssistantMessage:
    if sources is None:
        return AssistantMessage(content=content)
    notes = [FileCitation(file_id=s.file_id, filename=s.source, index=i) for i, s in enumerate(sources)]
    return AssistantMessage(content=content, annotations=notes, sources=sources)


async def _not_found(request: Request, served: ServedModel, body: ChatCompletionRequest):
    """Nothing relevant in the documents: say so (grounding.NOT_FOUND) instead of letting the model invent."""
    job = _Job(new_id("chatcmpl"), served, [], [], time.perf_counter(), route="/v1/chat/completions",
               params=body.model_dump(exclude_unset=True, exclude_none=True), texts=[NOT_FOUND] * body.n, sources=[])
    log_event("grounding_not_found", request_id=request.state.request_id, id=job.id, model=served.name)
    await _record(request, job)
    if not body.stream:
        choices = [ChatChoice(index=i, message=_message(NOT_FOUND, []), finish_reason="stop") for i in range(body.n)]
        return ChatCompletionResponse(id=job.id, model=served.name, choices=choices, usage=job.usage())

    async def chunks():
        for i in range(body.n):
            yield _chat_chunk(job, i, Delta(role="assistant", content="", sources=[]))
            yield _chat_chunk(job, i, Delta(content=NOT_FOUND))
            yield _chat_chunk(job, i, Delta(), "stop")
        if _include_usage(body):
            yield ChatCompletionChunk(id=job.id, model=served.name, choices=[], usage=job.usage()).model_dump()

    return _sse(chunks())


# ---- submitting ----


@dataclass
class _Job:
    """One API request as engine requests: choice i of prompt p is handles[p * n + i]."""

    id: str
    served: ServedModel
    handles: list
    prompt_lens: list[int]
    t0: float
    route: str = ""
    params: dict | None = None  # the request as sent, for the history (and the UI's "regenerate")
    texts: list | None = None
    sources: list[Source] | None = None  # a grounded chat's passages (None: not grounded)
    guard: OutputGuard | None = None  # moderation of the output as it streams (genloom.safety.policy)
    flagged: dict | None = None  # the prompt's moderation verdict under a flag policy
    copied: tuple[list[str], Grounding] | None = None  # a grounded chat's Doc passages, for copy_through

    def usage(self) -> Usage:
        prompt = sum(self.prompt_lens)
        done = sum(h.completion_tokens or 0 for h in self.handles)
        return Usage(prompt_tokens=prompt, completion_tokens=done, total_tokens=prompt + done)


def _unsupported(value, param: str, ok=lambda v: v is None) -> None:
    if value is not None and not ok(value):
        raise ApiError(400, f"'{param}' is not supported by genloom models.", param=param, code="unsupported_parameter")


def _encode(served: ServedModel, prompt: str | list[int], param: str = "prompt") -> list[int]:
    if isinstance(prompt, str):
        ids = served.tokenizer.encode(prompt)
    else:
        vocab = served.tokenizer.vocab_size
        bad = next((t for t in prompt if not 0 <= t < vocab), None)
        if bad is not None:
            raise ApiError(400, f"Token id {bad} is outside the vocabulary of `{served.name}` (0..{vocab - 1}).",
                           param=param)
        ids = list(prompt)
    if not ids:
        raise ApiError(400, f"'{param}' must not be empty: give at least one token of text.", param=param)
    if len(ids) > served.context:
        raise ApiError(400, f"This model's maximum context length is {served.context} tokens, however your "
                       f"prompt is {len(ids)} tokens. Shorten it.", param=param, code="context_length_exceeded")
    return ids


def _check(request: Request, body, n_prompts: int, *, max_tokens: int | None,
           param: str) -> None:
    """The request against the server's limits (a 400 naming the field), before any work is done for it."""
    limits = request.app.state.limits
    if max_tokens is not None and not 1 <= max_tokens <= limits.max_tokens:
        raise ApiError(400, f"'{param}' must be between 1 and {limits.max_tokens} (got {max_tokens}).", param=param)
    if body.n > limits.max_n:
        raise ApiError(400, f"'n' must be at most {limits.max_n} (got {body.n}).", param="n")
    stop = body.stop_list()
    if len(stop) > limits.max_stop:
        raise ApiError(400, f"'stop' takes at most {limits.max_stop} sequences (got {len(stop)}).", param="stop")
    _unsupported(body.logit_bias, "logit_bias", ok=lambda v: not v)
    if n_prompts * body.n > request.app.state.capacity:  # could never fit: a 400, not a 429 to retry forever
        raise ApiError(400, f"{n_prompts} prompt(s) x n={body.n} needs {n_prompts * body.n} engine slots; this "
                       f"server holds {request.app.state.capacity} (max_batch + max_queue).", param="n")
    wanted = max_tokens if max_tokens is not None else limits.max_tokens
    if (body.min_tokens or 0) > wanted:
        raise ApiError(400, f"'min_tokens' must be at most {param} ({wanted}) (got {body.min_tokens}).",
                       param="min_tokens")


def _submit(request: Request, served: ServedModel, body, ids: list[list[int]], *, extra_stop: list[str],
            max_tokens: int | None, param: str) -> _Job:
    """Check the request against the limits, then submit n engine requests per prompt (seeds seed, seed+1, ...)."""
    _check(request, body, len(ids), max_tokens=max_tokens, param=param)
    limits = request.app.state.limits
    wanted = max_tokens if max_tokens is not None else limits.max_tokens
    handles = []
    try:
        for prompt in ids:
            for j in range(body.n):
                most = max(1, min(wanted, served.context - len(prompt) + 1))  # the rest of the context
                sp = body.to_sampling_params(max_new_tokens=most, extra_stop=extra_stop, choice=j)
                handles.append(served.engine.submit(prompt, sp))
    except QueueFull:
        for h in handles:
            h.cancel()
        retry = str(limits.retry_after_s)
        raise ApiError(429, f"The server is busy ({served.name}'s queue is full); retry after {retry} s.",
                       type="rate_limit_error", code="rate_limit_exceeded", headers={"Retry-After": retry}) from None
    except EngineGone as e:  # the model's engine process has exited: the server's fault, not the request's
        for h in handles:
            h.cancel()
        raise ApiError(503, f"{served.name} cannot decode: {e}", type="server_error", code="engine_gone") from None
    except GenloomError as e:
        for h in handles:
            h.cancel()
        raise ApiError(400, str(e)) from None
    return _Job(new_id("cmpl" if isinstance(body, CompletionRequest) else "chatcmpl"), served, handles,
                [len(p) for p in ids], time.perf_counter())


# ---- consuming ----


async def _events(request: Request, job: _Job, poll: bool):
    """Yield (choice, event) from every handle as they come; cancel what is left on exit or on disconnect.

    With `poll` the client's connection is checked every DISCONNECT_POLL_S (plain responses); a stream is
    cancelled by Starlette itself when its client goes, which ends this generator the same way.
    """
    metrics, name = request.app.state.metrics, job.served.name
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(i, handle):
        try:
            async for ev in metrics.watch(handle, name, job.t0):
                await queue.put((i, ev))
        except Exception as e:  # noqa: BLE001 - the engine failed this request: tell the client, not a hang
            queue.put_nowait((i, e))
        finally:
            queue.put_nowait((i, None))

    tasks = [asyncio.create_task(pump(i, h)) for i, h in enumerate(job.handles)]
    open_, finished = len(tasks), set()
    job.texts = [""] * len(job.handles)
    last_poll = time.monotonic()
    try:
        while open_:
            try:
                i, ev = await asyncio.wait_for(queue.get(), DISCONNECT_POLL_S) if poll else await queue.get()
            except asyncio.TimeoutError:
                i = ev = None
            if poll and time.monotonic() - last_poll >= DISCONNECT_POLL_S:
                last_poll = time.monotonic()
                if await request.is_disconnected():
                    log_event("client_disconnected", request_id=request.state.request_id, id=job.id)
                    return
            if i is None:
                continue
            if ev is None:
                open_ -= 1
                continue
            if isinstance(ev, Exception):
                raise ApiError(500, f"Generation failed: {ev}", type="server_error")
            if job.copied is not None and ev.stop_reason == CUT:  # the reply copied a Doc line to its cut
                said = job.texts[i] + ev.text
                ev = replace(ev, text=ev.text + copy_through(said, *job.copied)[len(said):])
            if job.guard is not None and job.guard.due(i, job.texts[i] + ev.text, ev):  # moderation of the output so far:
                ev = await asyncio.to_thread(job.guard.step, i, job.texts[i] + ev.text, ev)  # a harmful turn ends it
                if ev is None:
                    continue
                if ev.finish_reason == FINISH:
                    job.handles[i].cancel()
            if ev.finish_reason:
                finished.add(i)
            job.texts[i] += ev.text
            yield i, ev
    finally:
        for i, h in enumerate(job.handles):
            if i not in finished:
                h.cancel()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        log_event("generation", request_id=request.state.request_id, id=job.id, model=name, n=len(job.handles),
                  finished=len(finished), **job.usage().model_dump(),
                  ms=round(1000 * (time.perf_counter() - job.t0), 1))
        await _record(request, job)


async def _record(request: Request, job: _Job) -> None:
    """Store the request and its output in the history (and the key's usage), off the event loop."""
    db = request.app.state.db
    if db is None or not job.route:
        return
    usage = job.usage()
    texts = [t.lstrip() if job.route.endswith("chat/completions") else t for t in (job.texts or [])]
    output = {"text": texts[0] if len(texts) == 1 else texts, "produce_id": job.id}  # the aigc ProduceID
    if job.sources is not None:
        output["sources"] = [s.model_dump() for s in job.sources]
    if moderation := merge(job.flagged, *(job.guard.flags if job.guard else [])):
        output["moderation"] = moderation  # flag policy: what was flagged, served anyway
    try:
        await asyncio.to_thread(
            db.log_request, route=job.route, model=job.served.name, params=job.params or {}, output=output,
            key_id=getattr(request.state, "key_id", None),
            prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
            latency_ms=round(1000 * (time.perf_counter() - job.t0)))
    except Exception as e:  # noqa: BLE001 - a history write must never fail the request
        log_event("history_write_failed", request_id=request.state.request_id, error=str(e))


async def _collect(request: Request, job: _Job) -> tuple[list[str], list[str]]:
    texts = [""] * len(job.handles)
    reasons = ["cancelled"] * len(job.handles)
    async for i, ev in _events(request, job, poll=True):
        texts[i] += ev.text
        if ev.finish_reason:
            reasons[i] = ev.finish_reason
    return texts, reasons


class Encoded(str):
    """A chunk already encoded as JSON: _sse sends it as it is."""


PLACEHOLDER = "\x00genloom content\x00"  # no id, model name or index holds it


def content_chunks(job: _Job):
    """(choice, text) -> the encoded chunk of that content delta. The chunk is encoded once per choice around a
    placeholder and each delta's text goes in its place: the bytes json.dumps gives for the whole chunk, with one
    `created` for the stream (as OpenAI's chunks have) and a fraction of the cost per token."""
    parts: dict[int, list[str]] = {}

    def encode(i: int, text: str) -> Encoded:
        if i not in parts:
            whole = json.dumps(_chat_chunk(job, i, Delta(content=PLACEHOLDER)), ensure_ascii=False)
            parts[i] = whole.split(json.dumps(PLACEHOLDER, ensure_ascii=False))
        head, tail = parts[i]
        return Encoded(head + json.dumps(text, ensure_ascii=False) + tail)

    return encode


def _sse(chunks) -> StreamingResponse:
    async def frames():
        try:
            async for chunk in chunks:
                yield f"data: {chunk if isinstance(chunk, Encoded) else json.dumps(chunk, ensure_ascii=False)}\n\n"
        except ApiError as e:  # the status line is gone already: the error travels as an event, as vLLM does
            err = {"message": e.message, "type": e.type, "param": e.param, "code": e.code}
            yield f"data: {json.dumps({'error': err}, ensure_ascii=False)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(frames(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _include_usage(body) -> bool:
    return bool(body.stream_options and body.stream_options.include_usage)


async def _completion_chunks(request: Request, job: _Job, body: CompletionRequest, echo: list[str]):
    labeler = request.app.state.labeler
    first = set(range(len(echo)))  # each choice's first chunk carries the aigc label (and the notice when on)

    def chunk(i, text, reason=None):
        out = CompletionResponse(id=job.id, model=job.served.name,
                                 choices=[CompletionChoice(index=i, text=text, finish_reason=reason)]).model_dump()
        if i in first:
            first.discard(i)
            out["aigc"] = labels.aigc_object(job.id, job.served.name, job.params or {}, labeler)
            out["choices"][0]["text"] = labels.text_notice(text, labeler.policy)
        return out

    for i, e in enumerate(echo):
        if e:
            yield chunk(i, e)
    async for i, ev in _events(request, job, poll=False):
        if ev.text or ev.finish_reason:
            yield chunk(i, ev.text, ev.finish_reason)
    if _include_usage(body):
        yield CompletionResponse(id=job.id, model=job.served.name, choices=[], usage=job.usage()).model_dump()


def _chat_chunk(job: _Job, i: int, delta: Delta, reason=None) -> dict:
    out = ChatCompletionChunk(id=job.id, model=job.served.name,
                              choices=[ChatChunkChoice(index=i, delta=delta, finish_reason=reason)]).model_dump()
    out["choices"][0]["delta"] = delta.model_dump(exclude_none=True)
    return out


async def _chat_chunks(request: Request, job: _Job, body: ChatCompletionRequest):
    chunk, content = functools.partial(_chat_chunk, job), content_chunks(job)
    started = [False] * len(job.handles)  # a reply's leading whitespace (after "Bot:") is dropped, as in plain mode
    labeler = request.app.state.labeler
    notice = labels.text_notice("", labeler.policy)
    aigc = labels.aigc_object(job.id, job.served.name, job.params or {}, labeler)
    for i in range(len(job.handles)):  # a grounded reply's sources come first, for a UI to show them at once
        yield {**chunk(i, Delta(role="assistant", content=notice, sources=job.sources)), "aigc": aigc}
    async for i, ev in _events(request, job, poll=False):
        text = ev.text if started[i] else ev.text.lstrip()
        started[i] = started[i] or bool(text)
        if text:
            yield content(i, text)
        if ev.finish_reason:
            yield chunk(i, Delta(), ev.finish_reason)
    if _include_usage(body):
        out = ChatCompletionChunk(id=job.id, model=job.served.name, choices=[], usage=job.usage()).model_dump()
        yield out
