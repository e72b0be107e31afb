"""C2PA manifests (c2pa-python): a `c2pa.created` action for trainedAlgorithmicMedia, signed offline (no timestamp
authority) with the installation's chain, and read back with the C2PA Reader's validation state."""

from __future__ import annotations

import io
import json
from importlib.metadata import PackageNotFoundError, version

import c2pa

from genloom.errors import GenloomError
from genloom.safety.keys import SigningIdentity

DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
MIME = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp", "wav": "audio/wav", "mp3": "audio/mpeg",
        "flac": "audio/flac"}
FORMATS = tuple(MIME)  # what c2pa-python 0.38 signs among genloom's outputs (not Ogg, MIDI or plain text)
SETTINGS = {"builder": {"thumbnail": {"enabled": False}}}  # generated images are small: no JPEG thumbnail copy


def genloom_version() -> str:
    try:
        return version("genloom")
    except PackageNotFoundError:
        return "0+unknown"


def manifest_definition(*, model: str, parameters_sha256: str, title: str) -> dict:
    agent = {"name": "genloom", "version": genloom_version()}
    return {"claim_generator_info": [agent], "title": title,
            "assertions": [{"label": "c2pa.actions.v2", "data": {"actions": [{
                "action": "c2pa.created", "digitalSourceType": DIGITAL_SOURCE_TYPE, "softwareAgent": agent,
                "parameters": {"model": model, "genloom_version": agent["version"],
                               "parameters_sha256": parameters_sha256}}]}}]}


def _context(extra: dict | None = None) -> c2pa.Context:
    return c2pa.Context(c2pa.Settings.from_json(json.dumps({**SETTINGS, **(extra or {})})))


def sign(data: bytes, fmt: str, identity: SigningIdentity, *, model: str, parameters_sha256: str,
         title: str) -> bytes:
    """The bytes with a signed manifest embedded (ES256; the chain's leaf signs)."""
    if fmt not in MIME:
        raise GenloomError(f"C2PA manifests cover {', '.join(FORMATS)}, not {fmt}")
    try:
        signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(b"es256", identity.chain, identity.key, None))
        builder = c2pa.Builder(manifest_definition(model=model, parameters_sha256=parameters_sha256, title=title),
                               context=_context())
        out = io.BytesIO()
        builder.sign(signer, MIME[fmt], io.BytesIO(data), out)
    except c2pa.C2paError as e:
        raise GenloomError(f"C2PA signing failed: {e}") from None
    return out.getvalue()


def read(data: bytes, fmt: str, trust_anchor: bytes | None = None) -> dict | None:
    """{state, active manifest, failures} of the file's manifest store, None when it has none. `state` is the
    Reader's: Trusted (chain up to `trust_anchor`), Valid (signature and hashes good) or Invalid."""
    if fmt not in MIME:
        return None
    extra = {"trust": {"trust_anchors": trust_anchor.decode()}, "verify": {"verify_trust": True}} \
        if trust_anchor else None
    try:
        with c2pa.Reader(MIME[fmt], io.BytesIO(data), context=_context(extra)) as reader:
            state = reader.get_validation_state()
            active = reader.get_active_manifest() or {}
            results = reader.get_validation_results() or {}
    except c2pa.C2paError as e:
        if "ManifestNotFound" in type(e).__name__ or "no JUMBF" in str(e) or "not found" in str(e).lower():
            return None
        return {"state": "Invalid", "error": str(e), "failures": [str(e)]}
    failures = [f"{f.get('code')}: {f.get('explanation', '')}"
                for f in (results.get("activeManifest") or {}).get("failure", [])]
    actions = [a for assertion in active.get("assertions", []) if assertion.get("label", "").startswith("c2pa.actions")
               for a in assertion.get("data", {}).get("actions", [])]
    sig = active.get("signature_info", {})
    return {"state": state, "failures": failures, "title": active.get("title"),
            "claim_generator": [f"{g.get('name')} {g.get('version', '')}".strip()
                                for g in active.get("claim_generator_info", [])],
            "actions": actions, "signer": {k: sig.get(k) for k in ("issuer", "common_name", "alg", "time")
                                           if sig.get(k) is not None}}
