"""Evaluation reports: JSON for programs, one self-contained HTML page for people.

A report is a list of sections, one per evaluated model or sample set. A section holds metrics (each
with the protocol that produced it), figures (PNG bytes: sample grids, loss curves) and text samples.
The HTML embeds every picture as base64, so the one file can be mailed or opened offline; the JSON
holds the same figures as PNG files next to it. With several sections, a side-by-side table comes first.
"""

from __future__ import annotations

import base64
import html
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from genloom import __version__
from genloom.callbacks import plot_loss_curve
from genloom.files import atomic_write_bytes, atomic_write_text


@dataclass
class Section:
    name: str  # what was evaluated: a model path, a samples folder
    kind: str  # text-lm, text-generation, images, classifier, audio
    metrics: dict = field(default_factory=dict)  # name -> number
    protocols: dict = field(default_factory=dict)  # metric group -> how it was measured
    figures: list = field(default_factory=list)  # (caption, png bytes)
    samples: list = field(default_factory=list)  # dicts: prompt / output / reference
    notes: list = field(default_factory=list)  # warnings a reader must see
    media: list = field(default_factory=list)  # (caption, file name, bytes): WAV gets a player, others a link
    raw: dict = field(default_factory=dict)  # the metric functions' full results (what the CLI prints)

    def add(self, group: str, result: dict, keys=None, prefix: str = "") -> None:
        """Take the numbers (and the protocol) of one metric function's result dict."""
        for k, v in result.items():
            if keys is not None and k not in keys:
                continue
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                self.metrics[prefix + k] = v
        for k in ("protocol", "signature"):  # a signature the protocol already quotes is not repeated
            text, have = str(result.get(k) or ""), self.protocols.get(group, "")
            if text and text not in have:
                self.protocols[group] = (have + " " + text).strip()
        if result.get("warning"):
            self.notes.append(str(result["warning"]))

    def to_json(self, figure_files: list[str], media_files: list[str] = ()) -> dict:
        return {"name": self.name, "kind": self.kind, "metrics": self.metrics, "protocols": self.protocols,
                "figures": [{"caption": c, "file": f} for (c, _), f in zip(self.figures, figure_files)],
                "media": [{"caption": c, "file": f} for (c, _, _), f in zip(self.media, media_files)],
                "samples": self.samples, "notes": self.notes, "result": self.raw}


def jsonable(obj):
    """Strict JSON: NaN and infinities (a silent clip's loudness, say) become null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    return str(obj)


def loss_curve_png(metrics_path: str | Path) -> bytes | None:
    """The run's loss curve (train and validation) from its metrics.jsonl, as PNG bytes."""
    import tempfile


    with tempfile.TemporaryDirectory() as tmp:
        png = plot_loss_curve(Path(metrics_path), Path(tmp) / "loss.png")
        return png.read_bytes() if png else None


def _fmt(v) -> str:
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:,.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.3e}"
    return html.escape(str(v))


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{font-size:1.6rem}h2{font-size:1.25rem;border-bottom:1px solid #ddd;padding-bottom:.3rem;margin-top:2.2rem}
table{border-collapse:collapse;margin:.6rem 0 1rem}td,th{border:1px solid #ddd;padding:.3rem .6rem;text-align:left;
vertical-align:top}th{background:#f5f5f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
.protocol{color:#555;font-size:.9rem}.note{background:#fff4d6;border-left:4px solid #e0a800;padding:.4rem .7rem}
figure{display:inline-block;margin:.5rem 1rem .5rem 0}figcaption{font-size:.85rem;color:#555}
img{image-rendering:pixelated;max-width:100%}pre{white-space:pre-wrap;margin:0;font-size:.9rem}
"""


MEDIA_TYPES = {".wav": "audio/wav", ".mp3": "audio/mpeg", ".mid": "audio/midi", ".midi": "audio/midi",
               ".flac": "audio/flac", ".ogg": "audio/ogg"}
PLAYABLE = {"audio/wav", "audio/mpeg", "audio/flac", "audio/ogg"}  # what a browser's <audio> plays; MIDI gets a link


def render_html(title: str, sections: list[Section], meta: dict) -> str:
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
           f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>",
           "<p class='protocol'>" + " · ".join(f"{html.escape(k)}: {html.escape(str(v))}" for k, v in meta.items())
           + "</p>"]
    if len(sections) > 1:  # side by side: one row per metric, one column per section
        names = sorted({k for s in sections for k in s.metrics})
        out.append("<h2>Comparison</h2><table><tr><th>metric</th>"
                   + "".join(f"<th>{html.escape(s.name)}</th>" for s in sections) + "</tr>")
        for k in names:
            out.append(f"<tr><td>{html.escape(k)}</td>"
                       + "".join(f"<td class='num'>{_fmt(s.metrics[k]) if k in s.metrics else '—'}</td>"
                                 for s in sections) + "</tr>")
        out.append("</table>")
    for s in sections:
        out.append(f"<h2>{html.escape(s.name)} <small class='protocol'>({html.escape(s.kind)})</small></h2>")
        for n in s.notes:
            out.append(f"<p class='note'>{html.escape(n)}</p>")
        if s.metrics:
            out.append("<table><tr><th>metric</th><th>value</th></tr>")
            out += [f"<tr><td>{html.escape(k)}</td><td class='num'>{_fmt(v)}</td></tr>" for k, v in s.metrics.items()]
            out.append("</table>")
        if s.protocols:
            out.append("<table><tr><th>measured as</th><th>protocol</th></tr>")
            out += [f"<tr><td>{html.escape(k)}</td><td class='protocol'>{html.escape(v)}</td></tr>"
                    for k, v in s.protocols.items()]
            out.append("</table>")
        for caption, png in s.figures:
            b64 = base64.b64encode(png).decode()
            out.append(f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{b64}'>"
                       f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        for caption, name, data in s.media:
            b64 = base64.b64encode(data).decode()
            mime = MEDIA_TYPES.get(Path(name).suffix.lower(), "application/octet-stream")
            player = (f"<audio controls preload='none' src='data:{mime};base64,{b64}'></audio><br>"
                      if mime in PLAYABLE else "")
            out.append(f"<figure>{player}<a download='{html.escape(name)}' href='data:{mime};base64,{b64}'>"
                       f"{html.escape(name)}</a><figcaption>{html.escape(caption)}</figcaption></figure>")
        if s.samples:
            cols = [c for c in ("prompt", "output", "reference") if any(c in r for r in s.samples)]
            out.append("<table><tr>" + "".join(f"<th>{c}</th>" for c in cols) + "</tr>")
            for r in s.samples:
                out.append("<tr>" + "".join(f"<td><pre>{html.escape(str(r.get(c, '')))}</pre></td>" for c in cols)
                           + "</tr>")
            out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out)


def write_report(out_dir: str | Path, sections: list[Section], title: str = "genloom evaluation",
                 meta: dict | None = None) -> tuple[Path, Path]:
    """Write report.json, report.html, the figures (fig-<section>-<n>.png) and the media (media-<section>-<n>.wav,
    .mid) into out_dir."""
    import torch


    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"genloom": __version__, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "date": time.strftime("%Y-%m-%d %H:%M"), **(meta or {})}
    data = {"title": title, "meta": meta, "sections": []}
    for i, s in enumerate(sections):
        files = []
        for j, (_, png) in enumerate(s.figures):
            name = f"fig-{i}-{j}.png"
            atomic_write_bytes(out / name, png)
            files.append(name)
        media = []
        for j, (_, name, blob) in enumerate(s.media):
            media.append(f"media-{i}-{j}{Path(name).suffix.lower()}")
            atomic_write_bytes(out / media[-1], blob)
        data["sections"].append(s.to_json(files, media))
    json_path, html_path = out / "report.json", out / "report.html"
    atomic_write_text(json_path, json.dumps(jsonable(data), indent=2, ensure_ascii=False, allow_nan=False))
    atomic_write_text(html_path, render_html(title, sections, meta))
    return json_path, html_path
