"""Keys and sealing: the master key, how it is wrapped (KMS or scrypt passphrase), and the one way every
object is compressed, encrypted and authenticated.

Sealed object = nonce (12 random bytes) || AES-256-GCM(ciphertext || tag) of (flag byte || payload),
where flag 0 = payload stored as is, 1 = payload is a zstd frame. The associated data binds a sealed
object to its kind (and for some kinds its name), so an object moved to another name fails to open.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading

import zstandard

try:
    import blake3
except ImportError:  # the Lambda asset reads manifests and never names a chunk: no blake3 there
    blake3 = None
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from rdsbackup.errors import RepositoryError, WrongRepositoryKey

NONCE_SIZE = 12
TAG_SIZE = 16
SEAL_OVERHEAD = NONCE_SIZE + TAG_SIZE + 1
CHUNK_ID_SIZE = 16

FLAG_RAW = 0
FLAG_ZSTD = 1

# scrypt cost: 2**15 * 8 * 128 bytes = 32 MiB of memory, ~0.1 s, once per open.
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1

# How a repository names its chunks: a keyed hash of the chunk's bytes, cut to CHUNK_ID_SIZE bytes.
# `config["chunk_id"]` says which; a repository without it (format versions 1 and 2) uses BLAKE2b.
# BLAKE3 since version 3: a chunk is ~2 KiB and every one is hashed on backup and restore; keyed BLAKE3
# takes half BLAKE2b's time for that (0.6 s against 1.1 s for 650 MB of table rows), and the hashing
# holds the GIL the backup's other threads wait for.
CHUNK_ID_BLAKE2B = "blake2b-128"
CHUNK_ID_BLAKE3 = "blake3-128"
CHUNK_ID_SCHEMES = (CHUNK_ID_BLAKE2B, CHUNK_ID_BLAKE3)
_ID_KEY_INFO = {CHUNK_ID_BLAKE2B: b"rdsbackup v1 chunk-id blake2b", CHUNK_ID_BLAKE3: b"rdsbackup v3 chunk-id blake3"}

# Level 1: on table dumps as fast as level 3 is slow, and no worse a ratio at 128 KiB blocks.
ZSTD_LEVEL = 1
# Store compressed only when it saves at least this share (incompressible bytea stays raw and fast).
COMPRESS_MIN_SAVING = 0.03


class AuthenticationFailed(Exception):
    """A sealed object failed to open (internal: callers turn it into CorruptObject with a name)."""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"))


def _hkdf(master: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(master)


class Keys:
    """Subkeys derived from the 32-byte master key: one for AES-256-GCM, one for chunk ids (named by
    `chunk_id_scheme`, one of CHUNK_ID_SCHEMES)."""

    def __init__(self, master: bytes, *, chunk_id_scheme: str, id_key: bytes | None = None):
        # No default scheme: keys that named chunks otherwise than their repository's config says would
        # deduplicate against nothing and find every chunk read "damaged".
        if len(master) != 32:
            raise RepositoryError("the repository master key must be 32 bytes")
        if chunk_id_scheme not in CHUNK_ID_SCHEMES:
            raise RepositoryError(f"unknown chunk id scheme {chunk_id_scheme!r}: this rdsbackup knows "
                                  f"{', '.join(CHUNK_ID_SCHEMES)}")
        self.master = master
        self._aead = AESGCM(_hkdf(master, b"rdsbackup v1 aes-256-gcm"))
        self.chunk_id_scheme = chunk_id_scheme
        # An archive repository may name chunks with its source repository's id key (see archive.py).
        self.id_key = id_key or _hkdf(master, _ID_KEY_INFO[chunk_id_scheme])
        # Copying a keyed state is ~2.5x cheaper than keying a new one (for BLAKE2b the key is a whole
        # first block).
        if chunk_id_scheme == CHUNK_ID_BLAKE2B:
            self._id_state = hashlib.blake2b(key=self.id_key, digest_size=CHUNK_ID_SIZE)
        else:
            self._id_state = blake3.blake3(key=self.id_key) if blake3 is not None else None
        self._local = threading.local()

    def same_chunk_ids(self, other: Keys) -> bool:
        """Whether `other` names every chunk as these keys do."""
        return self.chunk_id_scheme == other.chunk_id_scheme and self.id_key == other.id_key

    # Compression contexts are not thread-safe: one per thread.
    def _compressor(self) -> zstandard.ZstdCompressor:
        c = getattr(self._local, "c", None)
        if c is None:
            c = self._local.c = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
        return c

    def _decompressor(self) -> zstandard.ZstdDecompressor:
        d = getattr(self._local, "d", None)
        if d is None:
            d = self._local.d = zstandard.ZstdDecompressor()
        return d

    def _id_copy(self):
        if self._id_state is None:
            raise RepositoryError("the blake3 package is not installed: this process cannot name chunks")
        return self._id_state.copy

    def chunk_id(self, data) -> bytes:
        """The keyed hash of a chunk (`chunk_id_scheme`): its id, the dedup key; without the key nobody
        can tell which content a repository holds."""
        h = self._id_copy()()
        h.update(data)
        return h.digest() if self.chunk_id_scheme == CHUNK_ID_BLAKE2B else h.digest(CHUNK_ID_SIZE)

    def chunk_ids(self, view, ends: list[int]) -> list[bytes]:
        """The ids of the chunks that tile `view` (chunk i ends at ends[i]). The loop runs once per ~2
        KiB chunk of every stream (backup, restore, verify): written out per scheme, with the least
        Python per chunk."""
        copy = self._id_copy()
        ids: list[bytes] = []
        append = ids.append
        start = 0
        if self.chunk_id_scheme == CHUNK_ID_BLAKE2B:
            for end in ends:
                h = copy()
                h.update(view[start:end])
                append(h.digest())
                start = end
        else:
            for end in ends:
                h = copy()
                h.update(view[start:end])
                append(h.digest(CHUNK_ID_SIZE))
                start = end
        return ids

    def seal(self, payload, ad: bytes, *, compress: bool = True) -> bytes:
        """Compress (when it pays), encrypt and authenticate `payload`."""
        flag = FLAG_RAW
        body = payload
        if compress and len(payload) >= 64:
            packed = self._compressor().compress(payload)
            if len(packed) <= len(payload) * (1 - COMPRESS_MIN_SAVING):
                flag, body = FLAG_ZSTD, packed
        plain = bytearray(1 + len(body))
        plain[0] = flag
        plain[1:] = body
        nonce = os.urandom(NONCE_SIZE)
        return nonce + self._aead.encrypt(nonce, plain, ad)

    def open_encoded(self, sealed, ad: bytes) -> bytearray:
        """Authenticate and decrypt a sealed object without decompressing it: flag byte || payload.
        With `seal_encoded` this moves a block to another key without recompressing it."""
        if len(sealed) < NONCE_SIZE + TAG_SIZE + 1:
            raise AuthenticationFailed("too short")
        view = memoryview(sealed)
        try:
            return bytearray(self._aead.decrypt(bytes(view[:NONCE_SIZE]), view[NONCE_SIZE:], ad))
        except InvalidTag:
            raise AuthenticationFailed("authentication failed") from None

    def decode(self, encoded, *, max_size: int | None = None) -> bytes:
        """The payload of what `open_encoded` returned (decompressed when its flag says zstd)."""
        flag = encoded[0]
        if flag == FLAG_RAW:
            return bytes(memoryview(encoded)[1:])
        if flag == FLAG_ZSTD:
            try:
                return self._decompressor().decompress(memoryview(encoded)[1:], max_output_size=max_size or 0)
            except zstandard.ZstdError as exc:
                raise AuthenticationFailed(f"bad zstd frame: {exc}") from None
        raise AuthenticationFailed(f"unknown encoding flag {flag}")

    def seal_encoded(self, encoded, ad: bytes) -> bytes:
        """Encrypt and authenticate an already encoded flag || payload (as `open_encoded` returns it)."""
        nonce = os.urandom(NONCE_SIZE)
        return nonce + self._aead.encrypt(nonce, bytes(encoded), ad)

    def open(self, sealed, ad: bytes, *, max_size: int | None = None) -> bytes:
        """Authenticate, decrypt and decompress a sealed object; AuthenticationFailed if it was altered."""
        if len(sealed) < NONCE_SIZE + TAG_SIZE + 1:
            raise AuthenticationFailed("too short")
        view = memoryview(sealed)
        try:
            plain = self._aead.decrypt(bytes(view[:NONCE_SIZE]), view[NONCE_SIZE:], ad)
        except InvalidTag:
            raise AuthenticationFailed("authentication failed") from None
        flag = plain[0]
        if flag == FLAG_RAW:
            return plain[1:]
        if flag == FLAG_ZSTD:
            try:
                return self._decompressor().decompress(memoryview(plain)[1:], max_output_size=max_size or 0)
            except zstandard.ZstdError as exc:
                raise AuthenticationFailed(f"bad zstd frame: {exc}") from None
        raise AuthenticationFailed(f"unknown encoding flag {flag}")


# --- master key wrapping -------------------------------------------------------------------------


def _scrypt_kek(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(password.encode("utf-8"))


def wrap_with_password(master: bytes, password: str, repo_id: str) -> dict:
    salt = os.urandom(16)
    kek = _scrypt_kek(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    nonce = os.urandom(NONCE_SIZE)
    wrapped = nonce + AESGCM(kek).encrypt(nonce, master, b"rdsbackup master key " + repo_id.encode())
    return {
        "type": "passphrase",
        "kdf": {"name": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P, "salt": b64(salt)},
        "wrapped_master_key": b64(wrapped),
    }


def unwrap_with_password(key_doc: dict, password: str, repo_id: str) -> bytes:
    kdf = key_doc["kdf"]
    kek = _scrypt_kek(password, unb64(kdf["salt"]), int(kdf["n"]), int(kdf["r"]), int(kdf["p"]))
    wrapped = unb64(key_doc["wrapped_master_key"])
    try:
        return AESGCM(kek).decrypt(
            wrapped[:NONCE_SIZE], wrapped[NONCE_SIZE:], b"rdsbackup master key " + repo_id.encode()
        )
    except InvalidTag:
        raise WrongRepositoryKey("wrong repository passphrase") from None


def _kms_client():
    import boto3

    return boto3.client("kms", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)


def wrap_with_kms(kms_key_id: str, repo_id: str) -> tuple[bytes, dict]:
    """A new master key from KMS GenerateDataKey: returns (master, key document holding its KMS-encrypted
    copy). The encryption context binds the wrapped key to this repository."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        response = _kms_client().generate_data_key(
            KeyId=kms_key_id, KeySpec="AES_256", EncryptionContext={"rdsbackup-repository": repo_id}
        )
    except (ClientError, BotoCoreError) as exc:
        raise RepositoryError(f"KMS GenerateDataKey with key {kms_key_id} failed: {exc}") from exc
    return response["Plaintext"], {
        "type": "kms",
        "kms_key_id": kms_key_id,
        "encrypted_master_key": b64(response["CiphertextBlob"]),
    }


def unwrap_with_kms(key_doc: dict, repo_id: str) -> bytes:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        response = _kms_client().decrypt(
            CiphertextBlob=unb64(key_doc["encrypted_master_key"]),
            KeyId=key_doc["kms_key_id"],
            EncryptionContext={"rdsbackup-repository": repo_id},
        )
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        raise WrongRepositoryKey(
            f"KMS cannot decrypt the repository key with key {key_doc['kms_key_id']}: {code or exc}"
        ) from exc
    except BotoCoreError as exc:
        raise RepositoryError(f"KMS Decrypt failed: {exc}") from exc
    return response["Plaintext"]
