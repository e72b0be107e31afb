"""The installation's C2PA signing identity: a locally made root CA and a leaf certificate (ES256, P-256).

C2PA (spec 2.x, "Trust model") rejects self-signed signing certificates: the leaf must be issued by a CA, carry
digitalSignature key usage and an extended key usage from the C2PA list (here id-kp-emailProtection and
id-kp-documentSigning), and must not be a CA itself. `init_keys` makes such a chain with `cryptography`;
an operator may bring their own chain (PEM, leaf first) and key instead.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from genloom.errors import GenloomError
from genloom.files import atomic_write_bytes, locked

DOCUMENT_SIGNING = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.36")  # id-kp-documentSigning (RFC 9336)
CERT_NAME, KEY_NAME, ROOT_NAME = "c2pa-chain.pem", "c2pa-key.pem", "c2pa-root.pem"
LOCK_NAME = ".lock"  # held while the three files are written (exclusive) or read (shared)


@dataclass(frozen=True)
class SigningIdentity:
    """A PEM certificate chain (leaf first) and its PEM private key; `root` is the anchor when known."""
    chain: bytes
    key: bytes
    root: bytes | None = None


def keys_dir(data_dir) -> Path:
    return Path(data_dir) / "keys"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATION_NAME,
                                                                                      "genloom installation")])


def make_chain(common_name: str = "genloom", days: int = 3650) -> SigningIdentity:
    """A fresh root CA + leaf signing certificate (both ECDSA P-256), the leaf's key in PKCS#8 PEM."""
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    root_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    root_name = _name(f"{common_name} root CA")
    root = (x509.CertificateBuilder().subject_name(root_name).issuer_name(root_name)
            .public_key(root_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False)
            .sign(root_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(_name(f"{common_name} content signer")).issuer_name(root_name)
            .public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION, DOCUMENT_SIGNING]),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
            .sign(root_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    key = leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return SigningIdentity(chain=leaf.public_bytes(pem) + root.public_bytes(pem), key=key, root=root.public_bytes(pem))


def init_keys(data_dir, *, force: bool = False) -> Path:
    """Write a new chain into DATA/keys (the key 0600); an existing one is kept unless `force`."""
    folder, made = _write_chain(data_dir, force=force)
    if not made:
        raise GenloomError(f"{folder / KEY_NAME} exists; pass --force to replace the installation's signing key")
    return folder


def ensure_keys(data_dir) -> bool:
    """Make the installation's chain on first use; True when this call made it. Servers starting together on
    one data directory make one chain between them (the check and the writes are under one lock)."""
    return _write_chain(data_dir, force=False)[1]


def _write_chain(data_dir, *, force: bool) -> tuple[Path, bool]:
    folder = keys_dir(data_dir)
    if (folder / KEY_NAME).exists() and not force:  # written last, so a whole chain: no lock needed to see it
        return folder, False
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    with locked(folder / LOCK_NAME):
        if (folder / KEY_NAME).exists() and not force:  # another process made it while this one waited
            return folder, False
        ident = make_chain()
        atomic_write_bytes(folder / ROOT_NAME, ident.root)
        atomic_write_bytes(folder / CERT_NAME, ident.chain)
        atomic_write_bytes(folder / KEY_NAME, ident.key)  # last: a chain whose key exists is whole
        os.chmod(folder / KEY_NAME, 0o600)
    return folder, True


def load_identity(data_dir=None, *, cert: str | None = None, key: str | None = None) -> SigningIdentity:
    """The operator's --c2pa-cert/--c2pa-key when given, else the installation's chain in DATA/keys."""
    if bool(cert) != bool(key):
        raise GenloomError("give both --c2pa-cert (PEM chain, leaf first) and --c2pa-key (PEM private key)")
    if cert:
        paths, root = (Path(cert), Path(key)), None
    else:
        folder = keys_dir(data_dir or ".")
        paths, root = (folder / CERT_NAME, folder / KEY_NAME), folder / ROOT_NAME
    # the installation's folder: look and read under the shared lock, so that a chain being made is waited for
    own = root is not None and root.parent.is_dir()
    with locked(root.parent / LOCK_NAME, shared=True) if own else contextlib.nullcontext():
        for p in paths:
            if not p.is_file():
                raise GenloomError(f"no C2PA signing certificate: {p} is missing; run `genloom signing init` (or "
                                   "give --c2pa-cert/--c2pa-key, or switch manifests off with --c2pa off)")
        chain, pkey = paths[0].read_bytes(), paths[1].read_bytes()
        anchor = root.read_bytes() if root and root.is_file() else None
    try:
        certs = x509.load_pem_x509_certificates(chain)
        private = serialization.load_pem_private_key(pkey, password=None)
    except (ValueError, TypeError) as e:
        raise GenloomError(f"{paths[0]} / {paths[1]}: not a PEM certificate chain and unencrypted PEM key ({e})") from None
    if certs[0].issuer == certs[0].subject:
        raise GenloomError(f"{paths[0]}: the signing certificate is self-signed; C2PA needs one issued by a CA "
                           "(`genloom signing init` makes a root and a leaf)")
    pem, spki = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    if certs[0].public_key().public_bytes(pem, spki) != private.public_key().public_bytes(pem, spki):
        raise GenloomError(f"{paths[1]} is not the private key of the first certificate in {paths[0]}")
    return SigningIdentity(chain=chain, key=pkey, root=anchor)
