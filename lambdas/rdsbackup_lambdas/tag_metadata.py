"""Encrypted, authenticated snapshot metadata stored in resource tags.

Format (version 1):

* ``rdsbackup:managed = true`` - the only plaintext statement: this snapshot is managed by rds-backup.
* ``rdsbackup:meta = "v1 <parts> <identity fp> <key fp>"`` - the header: format version, number of
  parts, a 16-hex fingerprint of the snapshot ARN the tags were made for, and one of the KMS key.
  Fingerprints only let decoding explain *why* it fails (moved tags, other key); they are not trusted:
  the header is authenticated as associated data.
* ``rdsbackup:meta:00`` ... ``rdsbackup:meta:NN`` - base64 of the blob, at most 256 characters each.

Blob: ``0x01 | len(wrapped key) (2 bytes, big endian) | wrapped key | nonce (12) | AES-256-GCM(ct+tag)``.
The plaintext is the metadata as compact JSON, zlib-compressed. The data key comes from KMS
``GenerateDataKey`` on ``TAG_KMS_KEY_ARN`` (envelope encryption) with the encryption context
``{"rdsbackup:snapshot": <snapshot ARN>}``; the GCM associated data is the header plus the snapshot ARN.
So tags copied onto another snapshot fail twice (KMS context and GCM), altered tags fail GCM, and
tags made under another key are refused, each with its own error.

AWS's tag rules are enforced here because moto does not: keys ≤ 128 characters, values ≤ 256, only
letters, digits, spaces and ``_ . : / = + - @``, and at most 50 tags per resource counting the
resource's own tags. Standard base64 (``A-Z a-z 0-9 + / =``) fits these rules.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

from botocore.exceptions import ClientError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from rdsbackup_lambdas.errors import (
    TagLimitExceeded,
    TagMetadataIdentityMismatch,
    TagMetadataMissing,
    TagMetadataTampered,
    TagMetadataWrongKey,
)

FORMAT_VERSION = 1
TAG_PREFIX = "rdsbackup:"
MANAGED_KEY = "rdsbackup:managed"
MANAGED_VALUE = "true"
HEADER_KEY = "rdsbackup:meta"
PART_PREFIX = "rdsbackup:meta:"
MAX_TAGS_PER_RESOURCE = 50
MAX_KEY_LENGTH = 128
MAX_VALUE_LENGTH = 256
_ALLOWED_PUNCTUATION = frozenset(" _.:/=+-@")
_ENCRYPTION_CONTEXT_KEY = "rdsbackup:snapshot"
_NONCE_BYTES = 12

Tag = dict[str, str]


def _fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _identity(snapshot_arn: str) -> str:
    # RDS stores snapshot identifiers in lower case; never let a caller's casing change the identity.
    return snapshot_arn.strip().lower()


def tags_as_dict(tags: Iterable[Mapping[str, str]] | None) -> dict[str, str]:
    return {t["Key"]: t.get("Value", "") for t in (tags or [])}


def is_marked_managed(tags: Iterable[Mapping[str, str]] | None) -> bool:
    """Whether the plaintext marker is present. Never trust it alone: decode the metadata."""
    return tags_as_dict(tags).get(MANAGED_KEY) == MANAGED_VALUE


def is_own_tag_key(key: str) -> bool:
    return key.startswith(TAG_PREFIX)


def _allowed_text(text: str) -> bool:
    return all(c.isalnum() or c in _ALLOWED_PUNCTUATION for c in text)


def validate_tag(key: str, value: str, resource: str) -> None:
    """Raise ``TagLimitExceeded`` unless the tag satisfies RDS's key/value rules."""
    if not key or len(key) > MAX_KEY_LENGTH:
        raise TagLimitExceeded(f"tag key {key!r} on {resource} must be 1..{MAX_KEY_LENGTH} characters")
    if len(value) > MAX_VALUE_LENGTH:
        raise TagLimitExceeded(
            f"tag {key!r} on {resource} has a {len(value)}-character value; AWS allows {MAX_VALUE_LENGTH}"
        )
    if key.lower().startswith(("aws:", "rds:")):
        raise TagLimitExceeded(f"tag key {key!r} on {resource} uses a reserved prefix (aws:, rds:)")
    for label, text in (("key", key), ("value", value)):
        if not _allowed_text(text):
            raise TagLimitExceeded(
                f"tag {label} {text!r} on {resource} has characters AWS does not allow "
                "(only letters, digits, spaces and _ . : / = + - @)"
            )


def plan_tags(
    existing: Iterable[Mapping[str, str]] | None, ours: list[Tag], resource: str
) -> tuple[list[Tag], list[str]]:
    """What to add and which stale keys to remove so the resource ends with the user's tags plus ``ours``.

    Raises ``TagLimitExceeded`` when the result would break AWS's limits (checked before any write).
    """
    existing_dict = tags_as_dict(existing)
    user_keys = [k for k in existing_dict if not is_own_tag_key(k)]
    our_keys = {t["Key"] for t in ours}
    for tag in ours:
        validate_tag(tag["Key"], tag["Value"], resource)
    total = len(user_keys) + len(ours)
    if total > MAX_TAGS_PER_RESOURCE:
        raise TagLimitExceeded(
            f"{resource} would carry {total} tags ({len(user_keys)} of its own + {len(ours)} rds-backup "
            f"metadata tags); AWS allows {MAX_TAGS_PER_RESOURCE} per resource. Remove some of the source's "
            "tags copied to snapshots, or record fewer DB instances"
        )
    stale = sorted(k for k in existing_dict if is_own_tag_key(k) and k not in our_keys)
    return ours, stale


class TagCodec:
    """Encodes metadata into tags for one snapshot and decodes it back, with one KMS key."""

    def __init__(self, kms_client: Any, key_arn: str):
        self._kms = kms_client
        self.key_arn = key_arn

    # -- encode -------------------------------------------------------------------------------------
    def encode(
        self, metadata: Mapping[str, Any], snapshot_arn: str, max_tags: int = MAX_TAGS_PER_RESOURCE
    ) -> list[Tag]:
        """The rds-backup tags (marker, header, parts) carrying ``metadata`` bound to ``snapshot_arn``."""
        identity = _identity(snapshot_arn)
        plaintext = zlib.compress(json.dumps(metadata, sort_keys=True, separators=(",", ":")).encode(), 9)
        data_key = self._kms.generate_data_key(
            KeyId=self.key_arn, KeySpec="AES_256", EncryptionContext={_ENCRYPTION_CONTEXT_KEY: identity}
        )
        wrapped: bytes = data_key["CiphertextBlob"]
        nonce = os.urandom(_NONCE_BYTES)
        # The number of parts is part of the authenticated header, so compute it from the final length.
        ciphertext_len = len(plaintext) + 16
        blob_len = 1 + 2 + len(wrapped) + _NONCE_BYTES + ciphertext_len
        b64_len = 4 * ((blob_len + 2) // 3)
        parts = max(1, -(-b64_len // MAX_VALUE_LENGTH))
        header = f"v{FORMAT_VERSION} {parts} {_fingerprint(identity)} {_fingerprint(self.key_arn)}"
        ciphertext = AESGCM(data_key["Plaintext"]).encrypt(nonce, plaintext, _aad(header, identity))
        blob = struct.pack(">BH", FORMAT_VERSION, len(wrapped)) + wrapped + nonce + ciphertext
        text = base64.b64encode(blob).decode()
        assert len(text) == b64_len
        chunks = [text[i : i + MAX_VALUE_LENGTH] for i in range(0, len(text), MAX_VALUE_LENGTH)]
        tags = [{"Key": MANAGED_KEY, "Value": MANAGED_VALUE}, {"Key": HEADER_KEY, "Value": header}]
        tags += [{"Key": f"{PART_PREFIX}{i:02d}", "Value": chunk} for i, chunk in enumerate(chunks)]
        if len(tags) > max_tags:
            raise TagLimitExceeded(
                f"the metadata of {snapshot_arn} needs {len(tags)} tags but only {max_tags} are free "
                f"(AWS allows {MAX_TAGS_PER_RESOURCE} per resource including the snapshot's own tags)"
            )
        return tags

    # -- decode -------------------------------------------------------------------------------------
    def decode(self, tags: Iterable[Mapping[str, str]] | None, snapshot_arn: str) -> dict[str, Any]:
        """The metadata of ``snapshot_arn`` from its tags; raises a ``TagMetadataError`` subclass if untrusted."""
        identity = _identity(snapshot_arn)
        values = tags_as_dict(tags)
        header = values.get(HEADER_KEY)
        if header is None:
            raise TagMetadataMissing(f"{snapshot_arn} has no rds-backup metadata tag ({HEADER_KEY})")
        fields = header.split(" ")
        if len(fields) != 4 or fields[0] != f"v{FORMAT_VERSION}" or not fields[1].isdigit():
            raise TagMetadataTampered(f"the rds-backup metadata header of {snapshot_arn} is malformed: {header!r}")
        parts, identity_fp, key_fp = int(fields[1]), fields[2], fields[3]
        missing = [i for i in range(parts) if f"{PART_PREFIX}{i:02d}" not in values]
        if parts < 1 or missing:
            raise TagMetadataMissing(
                f"{snapshot_arn} lacks rds-backup metadata part(s) {missing or [0]} of {parts}"
            )
        if key_fp != _fingerprint(self.key_arn):
            raise TagMetadataWrongKey(
                f"the metadata of {snapshot_arn} was encrypted under another KMS key than {self.key_arn}"
            )
        if identity_fp != _fingerprint(identity):
            raise TagMetadataIdentityMismatch(
                f"the metadata tags on {snapshot_arn} were made for another snapshot (copied or moved onto "
                "this one); they are not trusted"
            )
        text = "".join(values[f"{PART_PREFIX}{i:02d}"] for i in range(parts))
        try:
            blob = base64.b64decode(text, validate=True)
            version, wrapped_len = struct.unpack(">BH", blob[:3])
            wrapped = blob[3 : 3 + wrapped_len]
            nonce = blob[3 + wrapped_len : 3 + wrapped_len + _NONCE_BYTES]
            ciphertext = blob[3 + wrapped_len + _NONCE_BYTES :]
            if version != FORMAT_VERSION or len(wrapped) != wrapped_len or len(nonce) != _NONCE_BYTES:
                raise ValueError("truncated blob")
        except (ValueError, struct.error) as exc:
            raise TagMetadataTampered(f"the rds-backup metadata of {snapshot_arn} is corrupt ({exc})") from exc
        data_key = self._unwrap(wrapped, identity, snapshot_arn)
        try:
            plaintext = AESGCM(data_key).decrypt(nonce, ciphertext, _aad(header, identity))
        except InvalidTag as exc:
            raise TagMetadataTampered(
                f"the rds-backup metadata tags of {snapshot_arn} were altered (authentication failed)"
            ) from exc
        metadata = json.loads(zlib.decompress(plaintext))
        recorded = (metadata.get("snapshot") or {}).get("arn")
        if recorded is not None and _identity(recorded) != identity:
            raise TagMetadataIdentityMismatch(
                f"the metadata on {snapshot_arn} describes another snapshot ({recorded}); not trusted"
            )
        return metadata

    def _unwrap(self, wrapped: bytes, identity: str, snapshot_arn: str) -> bytes:
        try:
            response = self._kms.decrypt(
                CiphertextBlob=wrapped, KeyId=self.key_arn, EncryptionContext={_ENCRYPTION_CONTEXT_KEY: identity}
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "InvalidCiphertextException":
                raise TagMetadataTampered(
                    f"the data key in the rds-backup metadata of {snapshot_arn} does not unwrap for this "
                    "snapshot (altered, or moved from another snapshot)"
                ) from exc
            if code in {"IncorrectKeyException", "AccessDeniedException", "NotFoundException",
                        "DisabledException", "KMSInvalidStateException", "InvalidKeyUsageException"}:
                raise TagMetadataWrongKey(
                    f"cannot unwrap the data key of {snapshot_arn} with {self.key_arn} ({code}): encrypted "
                    "under another key, or the key is disabled/not accessible"
                ) from exc
            raise
        if response.get("KeyId") and response["KeyId"] != self.key_arn:
            raise TagMetadataWrongKey(
                f"the metadata of {snapshot_arn} was encrypted under {response['KeyId']}, not {self.key_arn}"
            )
        return response["Plaintext"]


def _aad(header: str, identity: str) -> bytes:
    return f"rdsbackup-tags|{header}|{identity}".encode()
