"""Storage backends: a flat key -> bytes store under one URL (`file:///path` or `s3://bucket/prefix`).

Every write is atomic (a reader never sees half an object): the file backend writes a temporary file
and links or renames it; S3 makes an object visible only once its PUT (or multipart upload) completes.

Objects are immutable: `put` writes only a name that does not exist yet (S3: `If-None-Match: *` on the
PUT and on CompleteMultipartUpload; the bucket policy refuses production workers' puts without it, see
docs/security.md). A put that finds its name taken by the same bytes succeeds (a retried request whose
first attempt landed); other bytes are `ObjectExists`. Only the objects that are rewritten in place by
design use `replace`: lock objects (refreshed under their own name) and the config and key objects that
`upgrade` rewrites (in the backup account only).
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from collections.abc import Iterator
from urllib.parse import parse_qs, unquote, urlparse

from rdsbackup.errors import ArchivedObject, MissingObject, ObjectExists, RepositoryError

# Objects above this size go up in parts (S3 single PUTs top out at 5 GiB; parts also retry cheaply).
MULTIPART_THRESHOLD = 64 * 1024 * 1024
MULTIPART_CHUNK = 16 * 1024 * 1024


class Backend:
    """Interface of a storage backend. Keys are relative, `/`-separated (e.g. `data/ab/ab12...`)."""

    url: str

    def put(self, key: str, data: bytes | bytearray | memoryview) -> None:
        """Write the immutable object `key`: ObjectExists if another object of that name exists (the
        same bytes are not an error: a retried write)."""
        if self.put_new(key, data):
            return
        try:
            same = self.get(key) == bytes(data)
        except MissingObject:
            same = False  # gone again meanwhile (a prune of an unreferenced object): still not ours
        if not same:
            raise ObjectExists(f"cannot write {key} in {self.url}: an object of that name exists with other "
                               f"content (repository objects are never overwritten)", object_name=key)

    def put_new(self, key: str, data: bytes | bytearray | memoryview) -> bool:
        """Write `key` only if it does not exist yet (atomically); False when another writer was first."""
        raise NotImplementedError

    def replace(self, key: str, data: bytes | bytearray | memoryview) -> None:
        """Write `key`, replacing an object of that name: only for objects rewritten in place by design
        (locks; the config and keys `upgrade` rewrites)."""
        raise NotImplementedError

    def get(self, key: str) -> bytes:
        raise NotImplementedError

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        """Yield (key, size) of every object whose key starts with `prefix`."""
        raise NotImplementedError

    def list_modified(self, prefix: str) -> Iterator[tuple[str, int, float]]:
        """Yield (key, size, last modified as unix time) of every object whose key starts with `prefix`."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError

    def delete_many(self, keys: list[str]) -> None:
        for key in keys:
            self.delete(key)


def _drop_cached_pages(fd: int) -> None:
    """Advise the kernel to drop a file's (clean, just synced) pages from the page cache."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is not None:
        with contextlib.suppress(OSError):
            advise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


class FileBackend(Backend):
    """A directory on a local filesystem. `fsync` makes a written object durable before put returns,
    which the write order (packs, index, manifest) relies on to survive a power loss.

    A durable object's pages then leave the page cache (POSIX_FADV_DONTNEED, as borg does): a backup
    writes hundreds of MiB that nobody reads back soon, which would otherwise push the database's and
    everyone else's cached pages out, and the next pack's write reuses the freed pages instead of
    taking new ones (on the benchmark's VM the kernel's copy into never-used pages cost a full backup
    ~0.5 s of CPU; into reused ones ~0.1 s)."""

    def __init__(self, root: str, *, fsync: bool = True):
        self.root = os.path.abspath(root)
        self.url = "file://" + self.root
        self.fsync = fsync
        self._made_dirs: set[str] = set()
        self._dirs_lock = threading.Lock()

    def _path(self, key: str) -> str:
        return os.path.join(self.root, *key.split("/"))

    def _ensure_dir(self, directory: str) -> None:
        if directory in self._made_dirs:
            return
        os.makedirs(directory, exist_ok=True)
        with self._dirs_lock:
            self._made_dirs.add(directory)

    def _write_temporary(self, key: str, data: bytes | bytearray | memoryview) -> tuple[str, str]:
        """The bytes in a temporary file beside the object's path (durable with fsync); (tmp, path)."""
        path = self._path(key)
        directory = os.path.dirname(path)
        self._ensure_dir(directory)
        tmp = os.path.join(directory, f".tmp-{uuid.uuid4().hex}")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                if self.fsync:
                    f.flush()
                    os.fsync(f.fileno())
                    _drop_cached_pages(f.fileno())
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise RepositoryError(f"cannot write {key} in {self.url}: {exc.strerror or exc}") from exc
        return tmp, path

    def _sync_directory(self, path: str) -> None:
        # The new name itself must be durable before a later object (index, manifest) that depends on
        # this one can be.
        if self.fsync:
            fd = os.open(os.path.dirname(path), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def put_new(self, key: str, data: bytes | bytearray | memoryview) -> bool:
        tmp, path = self._write_temporary(key, data)
        try:
            os.link(tmp, path)  # atomic, and fails if the name exists (rename would replace it)
        except FileExistsError:
            if os.path.isdir(path):
                raise RepositoryError(f"cannot write {key} in {self.url}: a directory has its name") from None
            return False
        except OSError as exc:
            raise RepositoryError(f"cannot write {key} in {self.url}: {exc.strerror or exc}") from exc
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        self._sync_directory(path)
        return True

    def replace(self, key: str, data: bytes | bytearray | memoryview) -> None:
        tmp, path = self._write_temporary(key, data)
        try:
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise RepositoryError(f"cannot write {key} in {self.url}: {exc.strerror or exc}") from exc
        self._sync_directory(path)

    def get(self, key: str) -> bytes:
        try:
            with open(self._path(key), "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise MissingObject(f"object {key} is missing from {self.url}", object_name=key) from None

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        try:
            with open(self._path(key), "rb") as f:
                f.seek(offset)
                return f.read(length)
        except FileNotFoundError:
            raise MissingObject(f"object {key} is missing from {self.url}", object_name=key) from None

    def exists(self, key: str) -> bool:
        return os.path.exists(self._path(key))

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        # Prefixes used by the repository are directories ("index/", "data/"), or a key.
        base = self._path(prefix.rstrip("/")) if prefix else self.root
        if not os.path.isdir(base):
            return
        for dirpath, _dirnames, filenames in os.walk(base):
            for name in filenames:
                if name.startswith(".tmp-"):
                    continue
                full = os.path.join(dirpath, name)
                rel = os.path.relpath(full, self.root).replace(os.sep, "/")
                try:
                    size = os.path.getsize(full)
                except FileNotFoundError:
                    continue
                yield rel, size

    def list_modified(self, prefix: str) -> Iterator[tuple[str, int, float]]:
        for key, _size in self.list(prefix):
            try:
                st = os.stat(self._path(key))
            except FileNotFoundError:
                continue
            yield key, st.st_size, st.st_mtime

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(key))


S3_CONNECT_TIMEOUT_ENV = "RDSBACKUP_S3_CONNECT_TIMEOUT"
S3_READ_TIMEOUT_ENV = "RDSBACKUP_S3_READ_TIMEOUT"
S3_MAX_ATTEMPTS_ENV = "RDSBACKUP_S3_MAX_ATTEMPTS"


def _env_number(name: str, default: float, *, integer: bool = False) -> float:
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        raise RepositoryError(f"{name}={text!r} is not a number") from None
    if value <= 0:
        raise RepositoryError(f"{name} must be positive, not {text!r}")
    return value


class S3Timeouts:
    """Every S3 request has a connect and a read timeout and a bounded number of attempts, so an
    endpoint that accepts connections and never answers fails within about
    attempts x (connect + read) seconds plus the retry back-off (standard mode: at most 20 s each),
    instead of minutes. Set with $RDSBACKUP_S3_CONNECT_TIMEOUT (default 10 s),
    $RDSBACKUP_S3_READ_TIMEOUT (default 60 s: an 8 MiB pack on a slow link) and
    $RDSBACKUP_S3_MAX_ATTEMPTS (default 4)."""

    def __init__(self) -> None:
        self.connect = _env_number(S3_CONNECT_TIMEOUT_ENV, 10.0)
        self.read = _env_number(S3_READ_TIMEOUT_ENV, 60.0)
        self.attempts = int(_env_number(S3_MAX_ATTEMPTS_ENV, 4, integer=True))

    @property
    def bound(self) -> float:
        return self.attempts * (self.connect + self.read) + (self.attempts - 1) * 20.0

    def describe(self) -> str:
        return (f"{self.attempts} attempt(s), connect timeout {self.connect:g} s, read timeout {self.read:g} s: "
                f"gave up within {self.bound:.0f} s")


class S3Backend(Backend):
    """An S3 bucket and key prefix. The endpoint comes from `AWS_ENDPOINT_URL` when set (moto's server
    in tests), as boto3 does by itself. Requests time out and retry as `S3Timeouts` says."""

    def __init__(self, bucket: str, prefix: str, *, client=None, data_storage_class: str | None = None):
        from botocore.config import Config

        from ..s3_clients import REPOSITORY_OWNER_ENV, owner_from_env, s3_client

        # Packs (data/) may go to a colder class (an archive repository: GLACIER, DEEP_ARCHIVE); the
        # small objects every operation reads (config, keys, index, manifests, locks) stay STANDARD.
        self.data_storage_class = data_storage_class
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.timeouts = S3Timeouts()
        # every request names the bucket's owner (the backup account) when the task definition says it
        self.client = client or s3_client(
            owner_from_env(REPOSITORY_OWNER_ENV),
            Config(
                retries={"total_max_attempts": self.timeouts.attempts, "mode": "standard"},
                connect_timeout=self.timeouts.connect,
                read_timeout=self.timeouts.read,
                max_pool_connections=16,
            ),
        )

    def _transport_error(self, action: str, key: str, exc: BaseException) -> RepositoryError:
        """A request that never got an S3 answer (timeouts, refused or dropped connections)."""
        return RepositoryError(f"S3 {action} {key} in {self.url} failed ({self.timeouts.describe()}): {exc}")

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _error(self, exc, key: str) -> RepositoryError:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
        if code in ("NoSuchKey", "404", "NotFound"):
            return MissingObject(f"object {key} is missing from {self.url}", object_name=key)
        if code == "NoSuchBucket":
            return RepositoryError(f"bucket {self.bucket} does not exist ({self.url})")
        if code == "InvalidObjectState":
            return ArchivedObject(
                f"object {key} in {self.url} is archived: it needs a retrieval (restore from Glacier) first",
                object_name=key,
            )
        return RepositoryError(f"S3 request for {key} in {self.url} failed: {code or exc}")

    def _storage_class(self, key: str) -> dict:
        if self.data_storage_class and key.startswith("data/"):
            return {"StorageClass": self.data_storage_class}
        return {}

    def put_new(self, key: str, data: bytes | bytearray | memoryview) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        # S3 conditional write: refused with 412 when the key exists (or a racing write wins).
        condition = {"IfNoneMatch": "*"}
        try:
            if len(data) <= MULTIPART_THRESHOLD:
                self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=_body(data),
                                       **self._storage_class(key), **condition)
            else:
                self._multipart(key, data, condition)
            return True
        except ClientError as exc:
            if _precondition_failed(exc):
                return False
            raise self._error(exc, key) from exc
        except BotoCoreError as exc:
            raise self._transport_error("upload of", key, exc) from exc

    def replace(self, key: str, data: bytes | bytearray | memoryview) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            if len(data) <= MULTIPART_THRESHOLD:
                self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=_body(data),
                                       **self._storage_class(key))
            else:
                self._multipart(key, data, {})
        except ClientError as exc:
            raise self._error(exc, key) from exc
        except BotoCoreError as exc:
            raise self._transport_error("upload of", key, exc) from exc

    def _multipart(self, key: str, data: bytes | bytearray | memoryview, condition: dict) -> None:
        """A multipart upload whose completion carries `condition` (boto3's transfer manager cannot
        send If-None-Match); aborted on any failure so that no parts are left behind."""
        view = memoryview(data)
        upload = self.client.create_multipart_upload(Bucket=self.bucket, Key=self._key(key),
                                                     **self._storage_class(key))
        upload_id = upload["UploadId"]
        try:
            parts = []
            for number, start in enumerate(range(0, len(view), MULTIPART_CHUNK), start=1):
                part = self.client.upload_part(Bucket=self.bucket, Key=self._key(key), UploadId=upload_id,
                                               PartNumber=number, Body=bytes(view[start:start + MULTIPART_CHUNK]))
                parts.append({"PartNumber": number, "ETag": part["ETag"]})
            self.client.complete_multipart_upload(Bucket=self.bucket, Key=self._key(key), UploadId=upload_id,
                                                  MultipartUpload={"Parts": parts}, **condition)
        except BaseException:
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=self._key(key), UploadId=upload_id)
            raise

    def get(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except ClientError as exc:
            raise self._error(exc, key) from exc
        except BotoCoreError as exc:
            raise self._transport_error("download of", key, exc) from exc

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        if length <= 0:
            return b""
        try:
            response = self.client.get_object(
                Bucket=self.bucket, Key=self._key(key), Range=f"bytes={offset}-{offset + length - 1}"
            )
            return response["Body"].read()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "InvalidRange":
                return b""
            raise self._error(exc, key) from exc
        except BotoCoreError as exc:
            raise self._transport_error("download of", key, exc) from exc

    def exists(self, key: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except BotoCoreError as exc:
            raise self._transport_error("lookup of", key, exc) from exc
        except ClientError as exc:
            error = self._error(exc, key)
            if isinstance(error, MissingObject):
                return False
            raise error from exc

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        for key, size, _modified in self.list_modified(prefix):
            yield key, size

    def list_modified(self, prefix: str) -> Iterator[tuple[str, int, float]]:
        from botocore.exceptions import BotoCoreError, ClientError

        full = self._key(prefix)
        strip = len(self.prefix) + 1 if self.prefix else 0
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                for obj in page.get("Contents", ()):
                    yield obj["Key"][strip:], obj["Size"], obj["LastModified"].timestamp()
        except ClientError as exc:
            raise self._error(exc, prefix) from exc
        except BotoCoreError as exc:
            raise self._transport_error("listing of", prefix, exc) from exc

    def delete(self, key: str) -> None:
        self.delete_many([key])

    def delete_many(self, keys: list[str]) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        for start in range(0, len(keys), 1000):
            batch = keys[start : start + 1000]
            try:
                response = self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": self._key(k)} for k in batch], "Quiet": True},
                )
            except ClientError as exc:
                raise self._error(exc, batch[0]) from exc
            except BotoCoreError as exc:
                raise self._transport_error("delete of", batch[0], exc) from exc
            errors = response.get("Errors") or []
            if errors:
                first = errors[0]
                raise RepositoryError(
                    f"S3 could not delete {len(errors)} object(s) in {self.url}, e.g. {first.get('Key')}: "
                    f"{first.get('Code')}"
                )


def _body(data: bytes | bytearray | memoryview) -> bytes | bytearray:
    return bytes(data) if isinstance(data, memoryview) else data


def _precondition_failed(exc) -> bool:
    """S3's answer to a conditional write whose name exists (412), or that lost a race with another (409)."""
    code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
    return code in ("PreconditionFailed", "ConditionalRequestConflict", "412")


def backend_for(url: str) -> Backend:
    """The backend for a repository URL: `file:///path` or `s3://bucket/prefix`, optionally
    `s3://bucket/prefix?data-storage-class=DEEP_ARCHIVE` (packs only; for archive repositories)."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        path = unquote(parsed.path)
        if parsed.netloc and parsed.netloc != "localhost":
            path = "/" + parsed.netloc + path
        if not path:
            raise RepositoryError(f"repository URL {url!r} has no path")
        return FileBackend(path)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise RepositoryError(f"repository URL {url!r} has no bucket")
        options = parse_qs(parsed.query)
        unknown = set(options) - {"data-storage-class"}
        if unknown:
            raise RepositoryError(f"repository URL {url!r}: unknown option(s) {', '.join(sorted(unknown))}")
        storage_class = options.get("data-storage-class", [None])[0]
        return S3Backend(parsed.netloc, unquote(parsed.path), data_storage_class=storage_class)
    raise RepositoryError(f"unsupported repository URL {url!r}: use file:///path or s3://bucket/prefix")
