"""POST /v1/provenance (a genloom extension): upload a file (multipart, field `file`), get its provenance report:
the GB 45438 label, the C2PA manifest and its validation, and every section the safety modules register."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from python_multipart.multipart import parse_options_header
from starlette.requests import ClientDisconnect

from genloom.errors import GenloomError
from genloom.safety import keys, watermark
from genloom.safety import provenance as prov
from genloom.serve.errors import ApiError
from genloom.serve.protocol import ProvenanceResponse
from genloom.serve.routes.deps import v1
from genloom.serve.routes.files import read_upload

router = APIRouter()
MAX_BYTES = 20 << 20  # the largest file a report is made for (read into memory: the Reader needs all of it)
FORM = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"], "properties": {"file": {"type": "string", "format": "binary"}}}}}}}


class _FilePart:
    """The `file` part of a multipart body, counted against `limit` as it arrives (other parts are ignored)."""

    def __init__(self, limit: int):
        self.limit, self.data, self.filename, self._take = limit, bytearray(), None, False
        self._headers, self._field, self._value = {}, b"", b""

    def callbacks(self) -> dict:
        return {"on_part_begin": self._begin, "on_header_field": self._hf, "on_header_value": self._hv,
                "on_header_end": self._he, "on_headers_finished": self._done, "on_part_data": self._body}

    def _begin(self):
        self._headers, self._field, self._value, self._take = {}, b"", b"", False

    def _hf(self, data, start, end):
        self._field += data[start:end]

    def _hv(self, data, start, end):
        self._value += data[start:end]

    def _he(self):
        self._headers[self._field.strip().lower()] = self._value.strip()
        self._field, self._value = b"", b""

    def _done(self):
        _, opts = parse_options_header(self._headers.get(b"content-disposition", b""))
        if opts.get(b"name") == b"file" and self.filename is None:
            self._take = True
            self.filename = opts.get(b"filename", b"upload").decode("utf-8", "replace")[:255] or "upload"

    def _body(self, data, start, end):
        if self._take:
            if len(self.data) + end - start > self.limit:
                raise ApiError(413, f"File is larger than the provenance limit of {self.limit} bytes.", param="file")
            self.data += data[start:end]


@router.post("/v1/provenance", dependencies=v1, openapi_extra=FORM, responses={413: {"description": "Too large"}})
async def provenance(request: Request) -> ProvenanceResponse:
    """The report `genloom provenance FILE` prints, for an uploaded image, audio, MIDI or text file."""
    part = _FilePart(getattr(request.app.state, "max_provenance_bytes", MAX_BYTES))
    try:
        await read_upload(request, part, fields="the field 'file'")
    except ClientDisconnect:
        raise ApiError(400, "The client went away during the upload.", param="file") from None
    if part.filename is None:
        raise ApiError(400, "Missing required parameter: 'file'.", param="file")
    data_dir = request.app.state.data_dir
    root = keys.keys_dir(data_dir) / keys.ROOT_NAME if data_dir is not None else None
    anchor = root.read_bytes() if root is not None and root.is_file() else None
    try:
        marks = request.app.state.watermarks
        secret = marks.secret if marks.on else watermark.existing_key(data_dir)
        rep = await asyncio.to_thread(prov.report, bytes(part.data), part.filename, trust_anchor=anchor, secret=secret)
    except GenloomError as e:
        raise ApiError(400, f"{e}.", param="file", code="unsupported_file") from None
    return ProvenanceResponse(**rep.to_dict())
