"""POST/GET /v1/files: training corpora (UTF-8 text or JSONL) and MIDI primers (purpose "music") under the data
directory.

An upload is read as it arrives (multipart/form-data, parsed by python-multipart's streaming parser): the
file part goes into a temporary file beside its final place, counted against the upload limit and checked
as UTF-8 on the way, then fsynced and renamed; any failure (too large, not text, a client gone) removes it.
"""

from __future__ import annotations

import asyncio
import codecs
import os
import tempfile
from pathlib import Path

from fastapi import APIRouter, Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from sqlalchemy import select
from starlette.requests import ClientDisconnect

from genloom.serve.database import File, new_id
from genloom.serve.errors import ApiError
from genloom.serve.protocol import FileList, FileObject
from genloom.serve.routes.deps import require_db, timestamp, v1

router = APIRouter()
TEXT_SUFFIXES = {".txt", ".jsonl", ".md", ".text"}
MIDI_SUFFIXES = {".mid", ".midi"}  # binary: checked for the MIDI header instead of UTF-8
PURPOSES = ("fine-tune", "assistants", "music")  # assistants: documents for /v1/vector_stores; music: MIDI primers
MAX_FIELD_BYTES = 1024  # a form field other than the file (purpose)
UPLOAD_FORM = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"],
    "properties": {"file": {"type": "string", "format": "binary"},
                   "purpose": {"type": "string", "enum": list(PURPOSES), "default": "fine-tune"}}}}}}}


def file_object(rec) -> FileObject:
    return FileObject(id=rec.id, bytes=rec.bytes, created_at=timestamp(rec.created_at), filename=rec.filename,
                      purpose=rec.purpose)


class TextUpload:
    """The callbacks of one streamed multipart body: the `file` part into a temporary file in `folder`."""

    def __init__(self, folder: Path, limit: int):
        self.folder, self.limit = folder, limit
        self.fields: dict[str, str] = {}
        self.lists: dict[str, list[str]] = {}  # repeated fields (timestamp_granularities[]) in order
        self.filename: str | None = None
        self.size, self.blank, self.tmp, self._out = 0, True, None, None
        self.midi, self._head = False, b""
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._name = self._field = self._value = None
        self._header, self._headers = [b"", b""], {}

    def callbacks(self) -> dict:
        return {"on_part_begin": self._part_begin, "on_header_field": self._header_field,
                "on_header_value": self._header_value, "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished, "on_part_data": self._part_data,
                "on_part_end": self._part_end}

    def _part_begin(self):
        self._headers, self._header, self._name, self._value = {}, [b"", b""], None, None

    def _header_field(self, data, start, end):
        self._header[0] += data[start:end]

    def _header_value(self, data, start, end):
        self._header[1] += data[start:end]

    def _header_end(self):
        self._headers[self._header[0].strip().lower()] = self._header[1].strip()
        self._header = [b"", b""]

    ONE_FILE, DEFAULT_NAME = "Send one file per upload.", "upload.txt"

    def _headers_finished(self):
        _, opts = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = opts.get(b"name", b"").decode("utf-8", "replace")
        if self._name != "file":
            self._value = b""
            return
        if self.filename is not None:
            raise ApiError(400, self.ONE_FILE, param="file")
        name = opts.get(b"filename", b"").decode("utf-8", "replace") or self.DEFAULT_NAME
        self.filename = Path(name).name
        self._accept(self.filename)
        self._out = self._open()

    def _accept(self, filename: str) -> None:
        """Refuse a file type before any of it is read (here: UTF-8 text or MIDI)."""
        suffix = Path(filename).suffix.lower()
        self.midi = suffix in MIDI_SUFFIXES
        if suffix not in TEXT_SUFFIXES and not self.midi:
            raise ApiError(400, f"Unsupported file type '{suffix or filename}'; upload one of "
                           f"{', '.join(sorted(TEXT_SUFFIXES))} (UTF-8 text) or {', '.join(sorted(MIDI_SUFFIXES))} "
                           f"(MIDI, purpose music).", param="file")

    def _open(self):
        """Where the file's bytes go: a temporary file in `folder` (renamed into place by `commit`)."""
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".upload-", suffix=".tmp")
        self.tmp = Path(tmp)
        return os.fdopen(fd, "wb")

    def _part_data(self, data, start, end):
        chunk = data[start:end]
        if self._name != "file":
            self._value += chunk
            if len(self._value) > MAX_FIELD_BYTES:
                raise ApiError(400, f"Form field '{self._name}' is longer than {MAX_FIELD_BYTES} bytes.",
                               param=self._name)
            return
        self.size += len(chunk)
        if self.size > self.limit:
            raise ApiError(413, f"File is larger than the upload limit of {self.limit} bytes.", param="file")
        if self.midi:
            self._midi(chunk)
        else:
            self._text(chunk)
        self._out.write(chunk)

    def _part_end(self):
        if self._name == "file" and self.midi:
            self._midi(b"", final=True)
        elif self._name == "file":
            self._text(b"", final=True)
        elif self._name:
            value = self._value.decode("utf-8", "replace")
            self.fields[self._name] = value  # the last value of a repeated field; `lists` keeps them all
            self.lists.setdefault(self._name, []).append(value)

    def _text(self, chunk: bytes, final: bool = False):
        try:
            text = self._decoder.decode(chunk, final)
        except UnicodeDecodeError:
            raise ApiError(400, "File is not UTF-8 text.", param="file") from None
        self.blank = self.blank and not text.strip()

    def _midi(self, chunk: bytes, final: bool = False):
        """A MIDI file starts with its header chunk 'MThd' (the rest is read when the file is used)."""
        if len(self._head) < 4:
            self._head = (self._head + chunk)[:4]
        if not b"MThd".startswith(self._head) or final and 0 < len(self._head) < 4:
            raise ApiError(400, "File is not MIDI (no MThd header).", param="file")
        self.blank = not self._head

    def commit(self, path: Path) -> None:
        """fsync the temporary file and rename it to `path` (the same folder: an atomic rename)."""
        self._out.flush()
        os.fsync(self._out.fileno())
        self._out.close()
        os.replace(self.tmp, path)
        self.tmp = None

    def discard(self) -> None:
        if self._out is not None and not self._out.closed:
            self._out.close()
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)


async def read_upload(request: Request, upload, *, what: str = "the file",
                      fields: str = "the fields 'file' and 'purpose'") -> None:
    """Feed the body to `upload`'s streaming multipart parser (its `callbacks()`) as it arrives; nothing but the
    current chunk is held in memory. The upload routes (files, transcriptions, provenance) all read this way."""
    ctype, opts = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or not opts.get(b"boundary"):
        raise ApiError(400, f"Send {what} as multipart/form-data with {fields}.", param="file")
    parser = MultipartParser(opts[b"boundary"], upload.callbacks())
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except FormParserError as e:
        raise ApiError(400, f"Malformed multipart body: {e}.", param="file") from None


@router.post("/v1/files", dependencies=v1, openapi_extra=UPLOAD_FORM)
async def upload_file(request: Request) -> FileObject:
    """Upload a training corpus (UTF-8 text or JSONL with a "text" field) or, with purpose "assistants", a document
    for a vector store (Markdown, text, JSONL question/answer pairs), up to the server's upload limit."""
    db = require_db(request)
    upload = TextUpload(db.files_dir(), request.app.state.max_upload_bytes)
    try:
        await read_upload(request, upload)
        purpose = upload.fields.get("purpose", "fine-tune")
        if purpose not in PURPOSES:
            raise ApiError(400, f"Unsupported purpose '{purpose}'; choose one of {', '.join(PURPOSES)}.",
                           param="purpose")
        if upload.filename is None:
            raise ApiError(400, "Missing required parameter: 'file'.", param="file")
        if upload.blank:
            raise ApiError(400, "File is empty.", param="file")
        if upload.midi != (purpose == "music"):
            raise ApiError(400, "A MIDI file is uploaded with purpose 'music', and purpose 'music' takes a MIDI "
                           f"file ({', '.join(sorted(MIDI_SUFFIXES))}).", param="purpose")
        fid = new_id("file")
        rel = fid + Path(upload.filename).suffix.lower()  # one of TEXT/MIDI_SUFFIXES: the user's name is never a path
        await asyncio.to_thread(upload.commit, db.files_dir() / rel)
        rec = File(id=fid, filename=upload.filename[:255], purpose=purpose, bytes=upload.size, path=rel, meta={})
        try:
            await asyncio.to_thread(_add, db, rec)
        except BaseException:
            (db.files_dir() / rel).unlink(missing_ok=True)
            raise
        return file_object(rec)
    except ClientDisconnect:
        raise ApiError(400, "The client went away during the upload.", param="file") from None
    finally:
        upload.discard()


def _add(db, rec: File) -> None:
    with db.session.begin() as s:
        s.add(rec)


@router.get("/v1/files", dependencies=v1)
async def list_files(request: Request) -> FileList:
    db = require_db(request)
    with db.session() as s:
        rows = list(s.scalars(select(File).order_by(File.created_at.desc()).limit(100)))
    return FileList(data=[file_object(r) for r in rows])


@router.get("/v1/files/{file_id}", dependencies=v1)
async def get_file(file_id: str, request: Request) -> FileObject:
    rec = require_db(request).get_file(file_id)
    if rec is None:
        raise ApiError(404, f"No such file: '{file_id}'.", param="file_id", code="file_not_found")
    return file_object(rec)
