"""GB 45438-2025 content labels: the implicit `AIGC` record in each format's metadata, visible marks, notices, cues.

The implicit label is the JSON object of GB 45438-2025 (Annex E / TC260's practice guide): Label ("1": generated
by AI), ContentProducer, ProduceID (unique per output), ReservedCode1, ContentPropagator, PropagateID, ReservedCode2.
Where it goes:

    PNG   XMP packet (TC260 namespace, property TC260:AIGC) in an iTXt chunk `XML:com.adobe.xmp` (Pillow)
    JPEG  the same XMP packet in an APP1 segment (inserted after SOI/APP0; JPEG data untouched)
    WebP  the same XMP packet in a RIFF `XMP ` chunk with the VP8X flag (Pillow, lossless re-encode)
    WAV   an ID3v2 tag in a RIFF `id3 ` chunk, frame TXXX:AIGC (mutagen; exiftool and ffprobe read it)
    MP3   ID3v2 frame TXXX:AIGC (mutagen)
    FLAC, Ogg Vorbis/Opus   Vorbis comment AIGC=... (mutagen)
    MIDI  a text meta event (FF 01) "AIGC {...}" at the start of the first track (mido)
    text  YAML front matter `aigc:` (files) or an `aigc` object (API responses)

`label_bytes(data, fmt, meta, labeler)` is the one hook every output site calls: the visible mark on images
(genloom.safety.marks), the implicit label, then the C2PA manifest last (genloom.safety.manifests: it hashes the
final bytes). A label that cannot be written raises.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

import mido
import numpy as np
import mutagen
from mutagen.flac import FLAC
from mutagen.id3 import ID3, TXXX
from mutagen.mp3 import MP3
from mutagen.wave import WAVE
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from genloom.errors import GenloomError, choices
from genloom.files import append_text, atomic_write_bytes
from genloom.safety import manifests
from genloom.safety.keys import CERT_NAME, SigningIdentity, keys_dir, load_identity
from genloom.safety.marks import TEXT_NOTICE, add_tone_cue_wav, visible_mark

TC260_NS = "http://www.tc260.org.cn/ns/AIGC/1.0/"
FIELDS = ("Label", "ContentProducer", "ProduceID", "ReservedCode1", "ContentPropagator", "PropagateID",
          "ReservedCode2")
IMAGE_FORMATS = ("png", "jpeg", "webp")
AUDIO_FORMATS = ("wav", "mp3", "flac", "ogg")
FORMATS = (*IMAGE_FORMATS, *AUDIO_FORMATS, "midi", "text")
POSITIONS = ("bottom-right", "bottom-left", "top-right", "top-left")
C2PA_MODES = ("auto", "on", "off")
SUFFIXES = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp", ".wav": "wav", ".mp3": "mp3",
            ".flac": "flac", ".ogg": "ogg", ".opus": "ogg", ".mid": "midi", ".midi": "midi", ".md": "text",
            ".txt": "text"}


class LabelError(GenloomError):
    """A label that could not be written or a format no label exists for."""


@dataclass(frozen=True, kw_only=True)
class LabelPolicy:
    """What an operator switches: every label on by default except the text notice and the audio cue (GB 45438
    makes explicit labels on images mandatory, on text and audio it allows other forms: see README)."""
    implicit: bool = True
    visible_mark: bool = True
    mark_text: str = "AI生成 AI-generated"
    mark_position: str = "bottom-right"
    text_notice: bool = False
    audio_cue: bool = False
    c2pa: str = "auto"  # auto: sign when the installation has a signing key; on: required; off
    producer: str = "genloom"
    propagator: str = ""

    def check(self) -> None:
        if self.mark_position not in POSITIONS:
            raise LabelError(f"unknown mark position '{self.mark_position}'; choose one of {choices(POSITIONS)}")
        if self.c2pa not in C2PA_MODES:
            raise LabelError(f"unknown C2PA mode '{self.c2pa}'; choose one of {choices(C2PA_MODES)}")
        if self.visible_mark and not self.mark_text.strip():
            raise LabelError("the visible mark's text is empty; give --mark-text or switch the mark off")

    def describe(self, signing: bool) -> list[str]:
        """One line per switch, as `genloom serve` and `genloom generate` log them at start-up."""
        on = {True: "on", False: "OFF"}
        return [f"labels: implicit AIGC metadata {on[self.implicit]}",
                f"labels: visible image mark {on[self.visible_mark]} ({self.mark_position}, '{self.mark_text}')",
                (f"labels: text notice {'on' if self.text_notice else 'off'}; audio tone cue "
                 f"{'on' if self.audio_cue else 'off'}"),
                f"labels: C2PA manifests {'on' if signing else 'OFF'} (mode {self.c2pa})"]


@dataclass(frozen=True)
class Labeler:
    """A policy and the signing identity C2PA uses (None: no manifests)."""
    policy: LabelPolicy = field(default_factory=LabelPolicy)
    identity: SigningIdentity | None = None

    def warnings(self) -> list[str]:
        off = [n for n, v in (("implicit labels", self.policy.implicit), ("the visible image mark",
                                                                            self.policy.visible_mark)) if not v]
        return [f"{n} switched off: outputs are not labelled as GB 45438-2025 requires" for n in off]


@dataclass(frozen=True)
class OutputMeta:
    """What a label says about one output."""
    produce_id: str
    model: str = ""
    parameters: dict = field(default_factory=dict)
    title: str = ""


def new_produce_id(prefix: str = "aigc") -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def parameters_hash(parameters: dict) -> str:
    """SHA-256 of the generation parameters as canonical JSON (what ReservedCode1 and the C2PA action carry)."""
    text = json.dumps(parameters, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def aigc_record(meta: OutputMeta, policy: LabelPolicy) -> dict:
    """The GB 45438-2025 implicit-label object, fields in the standard's order."""
    return {"Label": "1", "ContentProducer": policy.producer, "ProduceID": meta.produce_id,
            "ReservedCode1": "sha256:" + parameters_hash(meta.parameters), "ContentPropagator": policy.propagator,
            "PropagateID": "", "ReservedCode2": ""}


def xmp_packet(record: dict) -> str:
    body = escape(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
    return ('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
            '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            f'<rdf:Description rdf:about="" xmlns:TC260="{TC260_NS}"><TC260:AIGC>{body}</TC260:AIGC>'
            '</rdf:Description></rdf:RDF></x:xmpmeta>\n<?xpacket end="w"?>')


def record_from_xmp(xmp) -> dict | None:
    """The AIGC object of an XMP packet (element or attribute form), None when it has none."""
    if isinstance(xmp, bytes):
        xmp = xmp.decode("utf-8", "replace")
    start, end = xmp.find("<x:xmpmeta"), xmp.rfind("</x:xmpmeta>")
    if start < 0 or end < 0:
        return None
    try:
        root = ET.fromstring(xmp[start:end + len("</x:xmpmeta>")])
    except ET.ParseError:
        return None
    tag = f"{{{TC260_NS}}}AIGC"
    for el in root.iter():
        value = el.text if el.tag == tag else el.attrib.get(tag)
        if value:
            return _parse_record(value)
    return None


def _parse_record(text: str) -> dict | None:
    try:
        rec = json.loads(text)
    except ValueError:
        return None
    return rec if isinstance(rec, dict) else None


# -- formats ----------------------------------------------------------------------------------------------------

def detect_format(data: bytes) -> str | None:
    """The format of some bytes by their magic numbers; "text" for UTF-8 text; None otherwise."""
    head = data[:16]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head.startswith(b"fLaC"):
        return "flac"
    if head.startswith(b"OggS"):
        return "ogg"
    if head.startswith(b"MThd"):
        return "midi"
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "mp3"
    if b"\x00" not in data[:4096]:
        try:
            data.decode("utf-8")
            return "text"
        except UnicodeDecodeError:
            return None
    return None


def _png_write(data: bytes, xmp: str | None, mark=None) -> bytes:
    """Re-encode (lossless) with every text chunk kept, the XMP packet as iTXt `XML:com.adobe.xmp`."""
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        info = PngInfo()
        for k, v in getattr(img, "text", {}).items():
            if k == "XML:com.adobe.xmp":
                continue
            try:
                v.encode("latin-1")
                info.add_text(k, v)
            except UnicodeEncodeError:
                info.add_itxt(k, v)
        if xmp is not None:
            info.add_itxt("XML:com.adobe.xmp", xmp)
        out = mark(img) if mark else img
        buf = io.BytesIO()
        out.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def _jpeg_write(data: bytes, xmp: str) -> bytes:
    """Insert an APP1 XMP segment after SOI (and JFIF APP0); an older XMP segment is dropped. Pillow can write
    JPEG XMP only by re-encoding (lossy), so the segment is spliced in (read back by exiftool in the tests)."""
    sig = b"http://ns.adobe.com/xap/1.0/\x00"
    payload = sig + xmp.encode("utf-8")
    if len(payload) + 2 > 0xFFFF:
        raise LabelError("the XMP packet is too long for one JPEG APP1 segment")
    segment = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    pos, kept = 2, [data[:2]]
    while pos + 4 <= len(data) and data[pos] == 0xFF and data[pos + 1] in (0xE0, 0xE1):
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        seg = data[pos:pos + 2 + length]
        if not (data[pos + 1] == 0xE1 and seg[4:4 + len(sig)] == sig):
            kept.append(seg)
        pos += 2 + length
    return b"".join(kept) + segment + data[pos:]


def _webp_write(data: bytes, xmp: str | None, mark=None) -> bytes:
    """Pillow writes the `XMP ` chunk and the VP8X flag; the image is re-encoded losslessly (decoded pixels kept)."""
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        keep = img.info.get("xmp") if xmp is None else xmp.encode("utf-8")
        out = mark(img) if mark else img
        buf = io.BytesIO()
        out.save(buf, format="WEBP", lossless=True, exact=True, **({"xmp": keep} if keep else {}))
    return buf.getvalue()


def _mutagen_write(data: bytes, fmt: str, value: str) -> bytes:
    buf = io.BytesIO(data)
    try:
        if fmt in ("mp3", "wav"):
            f = MP3(buf) if fmt == "mp3" else WAVE(buf)
            if f.tags is None:
                f.add_tags()
            f.tags.delall("TXXX:AIGC")
            f.tags.add(TXXX(encoding=3, desc="AIGC", text=[value]))
            buf.seek(0)
            f.save(buf)
        else:
            f = FLAC(buf) if fmt == "flac" else mutagen.File(buf)
            if f is None:
                raise LabelError("not an Ogg Vorbis/Opus/FLAC stream mutagen can tag")
            if f.tags is None:
                f.add_tags()
            f.tags["AIGC"] = [value]
            buf.seek(0)
            f.save(buf)
    except mutagen.MutagenError as e:
        raise LabelError(f"could not write the {fmt} label: {e}") from None
    return buf.getvalue()


def _mutagen_read(data: bytes, fmt: str) -> dict | None:
    buf = io.BytesIO(data)
    try:
        if fmt == "mp3":
            tags = ID3(buf)
            frame = tags.get("TXXX:AIGC")
            return _parse_record(frame.text[0]) if frame else None
        f = WAVE(buf) if fmt == "wav" else FLAC(buf) if fmt == "flac" else mutagen.File(buf)
    except mutagen.MutagenError:
        return None
    if f is None or f.tags is None:
        return None
    if fmt == "wav":
        frame = f.tags.get("TXXX:AIGC")
        return _parse_record(frame.text[0]) if frame else None
    values = f.tags.get("AIGC") or f.tags.get("aigc")
    return _parse_record(values[0]) if values else None


def _midi_write(data: bytes, record: dict) -> bytes:
    try:
        mid = mido.MidiFile(file=io.BytesIO(data))
    except (OSError, EOFError, ValueError, KeyError) as e:
        raise LabelError(f"not a MIDI file mido can read ({e})") from None
    text = "AIGC " + json.dumps(record, separators=(",", ":"))  # ASCII: ensure_ascii escapes the rest
    track = mid.tracks[0]
    track[:] = [m for m in track if not (m.type == "text" and m.text.startswith("AIGC "))]
    track.insert(0, mido.MetaMessage("text", text=text, time=0))
    buf = io.BytesIO()
    mid.save(file=buf)
    return buf.getvalue()


def _midi_read(data: bytes) -> dict | None:
    try:
        mid = mido.MidiFile(file=io.BytesIO(data))
    except (OSError, EOFError, ValueError, KeyError):
        return None
    for track in mid.tracks:
        for m in track:
            if m.type == "text" and m.text.startswith("AIGC "):
                return _parse_record(m.text[5:])
    return None


def front_matter(record: dict) -> str:
    """YAML front matter holding the record (JSON is YAML: one flow mapping, no YAML library needed to write)."""
    return "---\naigc: " + json.dumps(record, ensure_ascii=False) + "\n---\n"


def _text_read(data: bytes) -> dict | None:
    text = data.decode("utf-8", "replace")
    if not text.startswith("---\n"):
        return None
    end = text.find("\n---", 4)
    for line in text[4:max(0, end)].splitlines():
        if line.startswith("aigc:"):
            return _parse_record(line[5:].strip())
    return None


def read_label(data: bytes, fmt: str) -> dict | None:
    """The implicit AIGC record a file carries (None when it carries none)."""
    if fmt in IMAGE_FORMATS:
        try:
            with Image.open(io.BytesIO(data)) as img:
                xmp = img.info.get("XML:com.adobe.xmp") or img.info.get("xmp")
        except OSError:
            return None
        return record_from_xmp(xmp) if xmp else None
    if fmt in AUDIO_FORMATS:
        return _mutagen_read(data, fmt)
    if fmt == "midi":
        return _midi_read(data)
    if fmt == "text":
        return _text_read(data)
    return None


# -- the hook ---------------------------------------------------------------------------------------------------

def text_notice(text: str, policy: LabelPolicy) -> str:
    """The text with the explicit notice before it, when the operator switched notices on."""
    return f"{TEXT_NOTICE}\n{text}" if policy.text_notice else text


def implicit_label(data: bytes, fmt: str, record: dict) -> bytes:
    """The bytes with the AIGC record embedded where `fmt` keeps metadata."""
    if fmt == "png":
        return _png_write(data, xmp_packet(record))
    if fmt == "jpeg":
        return _jpeg_write(data, xmp_packet(record))
    if fmt == "webp":
        return _webp_write(data, xmp_packet(record))
    if fmt in AUDIO_FORMATS:
        return _mutagen_write(data, fmt, json.dumps(record, ensure_ascii=False, separators=(",", ":")))
    if fmt == "midi":
        return _midi_write(data, record)
    if fmt == "text":
        return front_matter(record).encode() + data
    raise LabelError(f"no label for format '{fmt}'; choose one of {choices(FORMATS)}")


def mark_image(data: bytes, fmt: str, policy: LabelPolicy) -> bytes:
    """The encoded image with the visible mark drawn: PNG (its text chunks kept) and WebP losslessly re-encoded,
    JPEG re-encoded at quality 95 (a caller that keeps JPEG pixels dear marks them with `visible_mark` first)."""
    def mark(img):
        return visible_mark(img, policy.mark_text, policy.mark_position)
    if fmt == "png":
        return _png_write(data, None, mark)
    if fmt == "webp":
        return _webp_write(data, None, mark)
    with Image.open(io.BytesIO(data)) as img:
        buf = io.BytesIO()
        mark(img).convert("RGB").save(buf, "JPEG", quality=95)
    return buf.getvalue()


def label_bytes(data: bytes, fmt: str, meta: OutputMeta, labeler: Labeler, *, marked: bool = False) -> bytes:
    """Visible mark (images; `marked`: the pixels already carry it, see `pixel_marker`) -> implicit AIGC label ->
    C2PA manifest (signed last, over the final bytes)."""
    policy = labeler.policy
    if fmt not in FORMATS:
        raise LabelError(f"no label for format '{fmt}'; choose one of {choices(FORMATS)}")
    try:
        visible = policy.visible_mark and fmt in IMAGE_FORMATS and not marked
        out = mark_image(data, fmt, policy) if visible else data
        if policy.implicit:
            out = implicit_label(out, fmt, aigc_record(meta, policy))
    except (OSError, ValueError, EOFError, struct.error) as e:  # Pillow, mutagen, mido on a damaged file
        raise LabelError(f"could not label the {fmt} file: {e}") from None
    if policy.implicit and read_label(out, fmt) is None:
        raise LabelError(f"the {fmt} label did not read back after writing")
    if labeler.identity is not None and fmt in manifests.FORMATS:
        out = manifests.sign(out, fmt, labeler.identity, model=meta.model,
                             parameters_sha256=parameters_hash(meta.parameters), title=meta.title or meta.produce_id)
    return out


def label_file(path, fmt: str | None, meta: OutputMeta, labeler: Labeler) -> Path:
    """Label a written file in place (atomically); its format from `fmt` or its bytes."""
    path = Path(path)
    data = path.read_bytes()
    fmt = fmt or detect_format(data)
    if fmt is None:
        raise LabelError(f"{path}: not an image, audio, MIDI or text file; cannot label it")
    atomic_write_bytes(path, label_bytes(data, fmt, meta, labeler))
    return path


def make_labeler(policy: LabelPolicy, data_dir=None, *, cert: str | None = None, key: str | None = None) -> Labeler:
    """The policy checked and, unless C2PA is off, the signing identity: the operator's cert/key or the
    installation's chain in DATA/keys (mode auto: none there means no manifests; mode on: an error)."""
    policy.check()
    if policy.c2pa == "off":
        if cert or key:
            raise LabelError("--c2pa-cert/--c2pa-key given with C2PA manifests off: drop them or use --c2pa on")
        return Labeler(policy, None)
    if policy.c2pa == "auto" and not (cert or key) and (data_dir is None or not (keys_dir(data_dir) / CERT_NAME).is_file()):
        return Labeler(policy, None)
    return Labeler(policy, load_identity(data_dir, cert=cert, key=key))


def log_output(path, meta: OutputMeta, fmt: str) -> None:
    """The CLI's history record: one JSON line per output in `aigc-log.jsonl` beside it, keyed by ProduceID."""
    path = Path(path)
    row = {"ProduceID": meta.produce_id, "file": path.name, "format": fmt, "model": meta.model,
           "parameters_sha256": parameters_hash(meta.parameters), "parameters": meta.parameters}
    path.parent.mkdir(parents=True, exist_ok=True)
    append_text(path.parent / "aigc-log.jsonl", json.dumps(row, ensure_ascii=False, default=str) + "\n")


def pixel_marker(labeler: Labeler):
    """The visible mark as a function on (H, W, C) uint8 pixels, or None when it is off: the images pipeline draws
    it BEFORE the invisible watermark, so the mark never covers the watermark (on a 28x28 image it would cover a
    third of it); their PNGs are then labelled with `marked=True`."""
    policy = labeler.policy
    if not policy.visible_mark:
        return None

    def mark(pixels: np.ndarray) -> np.ndarray:
        img = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
        out = np.asarray(visible_mark(img, policy.mark_text, policy.mark_position))
        return out[..., None] if pixels.shape[-1] == 1 else out
    return mark


def finisher(labeler: Labeler, model: str, parameters: dict | None = None, *, marked: bool = False):
    """`finish(data, params_or_suffix, path) -> data` for the pipelines' file writers: each file gets its own
    ProduceID, its labels, and its line in the folder's aigc-log.jsonl (`marked`: see `label_bytes`)."""
    def finish(data: bytes, extra, path) -> bytes:
        path = Path(path)
        fmt = SUFFIXES.get(path.suffix.lower()) or detect_format(data)
        params = extra if isinstance(extra, dict) else (parameters or {})
        meta = OutputMeta(new_produce_id("gl"), model=model, parameters=params, title=path.name)
        out = label_bytes(data, fmt, meta, labeler, marked=marked)
        log_output(path, meta, fmt)
        return out
    return finish


def aigc_object(produce_id: str, model: str, parameters: dict, labeler: Labeler) -> dict | None:
    """The `aigc` object of an API response (None when implicit labels are switched off)."""
    if not labeler.policy.implicit:
        return None
    return aigc_record(OutputMeta(produce_id, model=model, parameters=parameters), labeler.policy)


def wav_cue(labeler: Labeler):
    """The WAV filter that puts the audible cue before rendered audio, or None when the cue is off."""
    return add_tone_cue_wav if labeler.policy.audio_cue else None
