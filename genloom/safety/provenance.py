"""What a file says about where it came from: a report of sections (format, GB 45438 label, C2PA manifest, and any
section another module registers, e.g. a watermark detector), the same for `genloom provenance`, the API and the UI.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from genloom.errors import GenloomError
from genloom.safety import labels, manifests, watermark

KINDS = {**{f: "image" for f in labels.IMAGE_FORMATS}, **{f: "audio" for f in labels.AUDIO_FORMATS},
         "midi": "music", "text": "text"}


@dataclass
class Section:
    """One kind of evidence: `found` says whether the file carries it; `details` is its JSON; `lines` its text."""
    name: str
    found: bool
    summary: str
    details: dict = field(default_factory=dict)


@dataclass
class Report:
    filename: str
    format: str
    kind: str
    size: int
    sections: list[Section]

    def to_dict(self) -> dict:
        return {"object": "provenance", "filename": self.filename, "format": self.format, "kind": self.kind,
                "bytes": self.size, "sections": [asdict(s) for s in self.sections]}

    def text(self) -> str:
        out = [f"{self.filename}: {self.kind} ({self.format}, {self.size:,} bytes)"]
        for s in self.sections:
            out.append(f"  {s.name}: {s.summary}")
        return "\n".join(out)


Check = Callable[[bytes, str], Section]  # (file bytes, format) -> a section


def gb45438_section(data: bytes, fmt: str) -> Section:
    rec = labels.read_label(data, fmt)
    if rec is None:
        return Section("GB 45438 implicit label", False, "none")
    ok = rec.get("Label") in ("1", "2", "3")
    kind = {"1": "AI-generated", "2": "possibly AI-generated", "3": "suspected AI-generated"}.get(rec.get("Label"),
                                                                                                  "unknown Label")
    return Section("GB 45438 implicit label", ok, f"{kind}; producer {rec.get('ContentProducer') or '?'}, "
                   f"ProduceID {rec.get('ProduceID') or '?'}", {"aigc": rec})


def c2pa_section(data: bytes, fmt: str, trust_anchor: bytes | None = None) -> Section:
    name = "C2PA manifest"
    if fmt not in manifests.FORMATS:
        return Section(name, False, f"not applicable ({fmt} has no C2PA binding in c2pa-python)")
    m = manifests.read(data, fmt, trust_anchor)
    if m is None:
        return Section(name, False, "none")
    created = [a for a in m.get("actions", []) if a.get("action") == "c2pa.created"]
    what = ""
    if created:
        src = created[0].get("digitalSourceType", "").rsplit("/", 1)[-1]
        model = (created[0].get("parameters") or {}).get("model")
        what = f"; c2pa.created ({src}{', model ' + model if model else ''})"
    signer = m.get("signer", {})
    who = f"; signed by {signer.get('common_name')} ({signer.get('issuer')})" if signer else ""
    bad = f"; failures: {'; '.join(m['failures'][:3])}" if m.get("failures") else ""
    return Section(name, True, f"{m.get('state')}{what}{who}{bad}", m)


def watermark_section(data: bytes, fmt: str, secret: watermark.Secret | None) -> Section:
    """The installation's invisible mark (genloom.safety.watermark), read with its key."""
    name = "genloom watermark"
    if fmt in ("midi", "text"):
        why = ("MIDI files are not marked" if fmt == "midi" else
               "a text's mark is read with its model's tokenizer: genloom watermark detect FILE --model MODEL")
        return Section(name, False, f"not checked here ({why})")
    if secret is None:
        return Section(name, False, "not checked (this installation has no watermark key: DATA_DIR/watermark.key)")
    try:
        r = watermark.detect_bytes(data, secret)
    except (GenloomError, ValueError, OSError) as e:
        return Section(name, False, f"could not be read ({e})")
    verdict = "detected" if r["detected"] else "not detected"
    return Section(name, bool(r["detected"]), f"{verdict} ({r['method']}, z {r['z']:.1f}, threshold {r['threshold']})", r)


SECTIONS: list[Check] = [gb45438_section, c2pa_section, watermark_section]  # modules add theirs with `register`


def register(check: Check) -> None:
    """Add a section (a watermark detector, ...) to every report."""
    if check not in SECTIONS:
        SECTIONS.append(check)


def report(data: bytes, filename: str = "upload", *, trust_anchor: bytes | None = None,
           secret: watermark.Secret | None = None) -> Report:
    """Every label, manifest, watermark (read with `secret`) and registered section a file carries; a GenloomError
    for other kinds of file."""
    fmt = labels.detect_format(data)
    if fmt is None or not data:
        raise GenloomError(f"{filename}: not an image (PNG, JPEG, WebP), audio (WAV, MP3, FLAC, Ogg), MIDI or UTF-8 "
                           "text file")
    given = {c2pa_section: (trust_anchor,), watermark_section: (secret,)}
    sections = [check(data, fmt, *given.get(check, ())) for check in SECTIONS]
    return Report(filename, fmt, KINDS[fmt], len(data), sections)
