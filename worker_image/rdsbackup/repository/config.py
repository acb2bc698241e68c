"""The plaintext objects: `config` and the key documents `keys/<id>`, with their checksums.

Both are plaintext JSON (they must be read before the master key is known). Since format version 2
each carries `"checksum": "sha256:<hex>"` over its other fields (JSON, sorted keys, no spaces), so a
damaged byte is reported as damage of that object, not as a wrong passphrase or a foreign repository.
"""

from __future__ import annotations

import hashlib
import json

from rdsbackup.errors import RepositoryDamaged, UnsupportedFormatVersion
from rdsbackup.repository.crypto import CHUNK_ID_BLAKE2B, CHUNK_ID_SCHEMES

FORMAT_NAME = "rdsbackup-repository"
# 3: `chunk_id` names how chunks are named (new repositories: keyed BLAKE3). 2: pack trailers,
# checksums, the damage registry. docs/repository-format.md says what each reader and writer does.
FORMAT_VERSION = 3
OLDEST_READABLE_VERSION = 1


def _digest(doc: dict) -> str:
    body = {k: v for k, v in doc.items() if k != "checksum"}
    return "sha256:" + hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def with_checksum(doc: dict) -> bytes:
    """`doc` with its checksum, as the bytes to store."""
    return json.dumps({**doc, "checksum": _digest(doc)}, indent=1).encode()


def checksum_ok(doc: dict) -> bool | None:
    """True/False when `doc` has a checksum, None when it has none (written by format version 1)."""
    if "checksum" not in doc:
        return None
    return doc.get("checksum") == _digest(doc)


def _json_object(raw: bytes, what: str, hint: str = "") -> dict:
    """A plaintext object's JSON document: RepositoryDamaged naming `what` if it is not a JSON object."""
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise RepositoryDamaged(f"{what} is damaged: not valid JSON ({exc}){hint}") from None
    if not isinstance(doc, dict):
        raise RepositoryDamaged(f"{what} is damaged: not a JSON object")
    return doc


def decode_config(raw: bytes, url: str) -> dict:
    """Parse and check a `config` object: RepositoryDamaged if it is damaged, UnsupportedFormatVersion
    if it is not an rdsbackup repository or is newer than this rdsbackup reads."""
    config = _json_object(raw, f"the config object of {url}",
                          "; restore it from a copy (it holds only the format version and the repository id)")
    ok = checksum_ok(config)
    version = config.get("version")
    if ok is False or (ok is None and isinstance(version, int) and version >= 2):
        raise RepositoryDamaged(
            f"the config object of {url} is damaged: its checksum does not match its content; restore it "
            "from a copy (it holds only the format version and the repository id)"
        )
    if config.get("format") != FORMAT_NAME:
        raise UnsupportedFormatVersion(f"{url} is not an rdsbackup repository")
    if not isinstance(version, int) or version < OLDEST_READABLE_VERSION or version > FORMAT_VERSION:
        raise UnsupportedFormatVersion(
            f"repository {url} has format version {version}; this rdsbackup reads versions "
            f"{OLDEST_READABLE_VERSION} to {FORMAT_VERSION}: upgrade rdsbackup"
        )
    if not isinstance(config.get("id"), str) or len(config["id"]) != 32:
        raise RepositoryDamaged(f"the config object of {url} is damaged: no repository id")
    if chunk_id_scheme(config) not in CHUNK_ID_SCHEMES:
        raise UnsupportedFormatVersion(
            f"repository {url} names its chunks with {config['chunk_id']!r}; this rdsbackup knows "
            f"{', '.join(CHUNK_ID_SCHEMES)}: upgrade rdsbackup"
        )
    return config


def chunk_id_scheme(config: dict) -> str:
    """How the repository of `config` names its chunks: versions 1 and 2 wrote no `chunk_id` (BLAKE2b)."""
    return config.get("chunk_id", CHUNK_ID_BLAKE2B)


KEY_FIELDS = {"passphrase": ("kdf", "wrapped_master_key"), "kms": ("kms_key_id", "encrypted_master_key")}


def decode_key_doc(raw: bytes, key: str, url: str) -> dict:
    """Parse and check a key document: RepositoryDamaged (naming it) if it is damaged."""
    doc = _json_object(raw, f"key object {key} of {url}")
    if checksum_ok(doc) is False:
        raise RepositoryDamaged(f"key object {key} of {url} is damaged: its checksum does not match its content")
    fields = KEY_FIELDS.get(doc.get("type"))
    if fields is None:
        raise RepositoryDamaged(f"key object {key} of {url} is damaged: unknown key type {doc.get('type')!r}")
    missing = [f for f in fields if f not in doc]
    kdf = doc.get("kdf")
    if doc["type"] == "passphrase" and not missing and (
        not isinstance(kdf, dict) or any(k not in kdf for k in ("n", "r", "p", "salt"))
    ):
        missing.append("kdf parameters")
    if missing:
        raise RepositoryDamaged(f"key object {key} of {url} is damaged: no {', '.join(missing)}")
    return doc
