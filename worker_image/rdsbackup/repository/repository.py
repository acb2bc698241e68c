"""The repository: init/open, backups (BackupWriter), reading, listing, verify, forget, prune, copy.

Object layout under the repository URL (see docs/repository-format.md):

    config                plaintext JSON: format name and version, repository id
    keys/<id>             plaintext JSON: the master key wrapped by KMS or a passphrase
    data/<xx>/<pack id>   packs of sealed blocks
    index/<id>            sealed index objects
    manifests/<rp id>     sealed restore point manifests (JSON)
    locks/<id>            sealed lock objects
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime

from rdsbackup.errors import (
    BackupAborted,
    CorruptObject,
    MissingObject,
    RepositoryError,
    RepositoryExists,
    RepositoryNotFound,
    RestorePointNotFound,
    UnsupportedFormatVersion,
    WrongRepositoryKey,
)
from rdsbackup.repository import crypto
from rdsbackup.repository.backends import Backend, backend_for
from rdsbackup.repository.chunking import profile as chunking_profile
from rdsbackup.repository.crypto import AuthenticationFailed, Keys
from rdsbackup.repository.index import Index, encode_new_entries, pack_id_from_key, pack_key
from rdsbackup.repository.locks import DEFAULT_TTL, Lock
from rdsbackup.repository.memory import tune_allocator_for_streaming
from rdsbackup.repository.packs import Packer, Stats, Uploader
from rdsbackup.repository.streams import BLOCK_AD, StreamReader, write_stream

FORMAT_NAME = "rdsbackup-repository"
FORMAT_VERSION = 1
INDEX_AD = b"rdsbackup index"
MANIFEST_AD = b"rdsbackup manifest"
PASSWORD_ENV = "RDSBACKUP_PASSWORD"


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def _password(password: str | None) -> str:
    if password is None:
        password = os.environ.get(PASSWORD_ENV)
    if not password:
        raise WrongRepositoryKey(
            f"no repository passphrase: pass one or set {PASSWORD_ENV} (or use a KMS-keyed repository)"
        )
    return password


def _find_refs(value, out: set[str]) -> None:
    """Collect the root ids of every stream ref ({"blob": hex, "size": n, ...}) inside metadata."""
    if isinstance(value, dict):
        blob = value.get("blob")
        if isinstance(blob, str) and "size" in value and len(blob) == 32:
            out.add(blob)
        for v in value.values():
            _find_refs(v, out)
    elif isinstance(value, list):
        for v in value:
            _find_refs(v, out)


class Repository:
    """An opened repository. See the module docstring of `rdsbackup.repository` for the API."""

    def __init__(self, backend: Backend, config: dict, keys: Keys):
        self.backend = backend
        self.url = backend.url
        self.config = config
        self.id = config["id"]
        self._keys = keys
        self._stats = Stats()
        self._index_obj: Index | None = None
        self._index_keys: list[str] = []
        self._index_lock = threading.Lock()
        self.lock_ttl = DEFAULT_TTL
        self.upload_threads = 2

    # --- init / open ---------------------------------------------------------------------------

    @classmethod
    def init(cls, url: str, *, kms_key_id: str | None = None, password: str | None = None,
             kind: str | None = None) -> Repository:
        """Create a repository at `url`: RepositoryExists if one is there already. `kind="archive"`
        marks an archive repository (see rdsbackup.repository.archive)."""
        backend = backend_for(url)
        if backend.exists("config"):
            raise RepositoryExists(f"a repository already exists at {backend.url}")
        repo_id = os.urandom(16).hex()
        if kms_key_id:
            master, key_doc = crypto.wrap_with_kms(kms_key_id, repo_id)
        else:
            master = os.urandom(32)
            key_doc = crypto.wrap_with_password(master, _password(password), repo_id)
        key_doc["created"] = _now_iso()
        config = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "id": repo_id, "created": _now_iso()}
        if kind:
            config["kind"] = kind
        # Key first, config last: a repository exists (for open and init) once its config does. The
        # config is written only if absent, so of two concurrent inits exactly one wins; the loser's
        # key document (for a master key nobody uses) is removed.
        key_name = f"keys/{os.urandom(8).hex()}"
        backend.put(key_name, json.dumps(key_doc, indent=1).encode())
        if not backend.put_new("config", json.dumps(config, indent=1).encode()):
            backend.delete(key_name)
            raise RepositoryExists(f"a repository already exists at {backend.url} (created concurrently)")
        return cls(backend, config, Keys(master))

    @classmethod
    def open(cls, url: str, *, password: str | None = None) -> Repository:
        """Open the repository at `url` with its KMS key or passphrase (default: $RDSBACKUP_PASSWORD)."""
        backend = backend_for(url)
        try:
            raw = backend.get("config")
        except MissingObject:
            raise RepositoryNotFound(f"no repository at {backend.url} (no config object)") from None
        try:
            config = json.loads(raw)
        except ValueError:
            raise UnsupportedFormatVersion(f"{backend.url}/config is not an rdsbackup repository config") from None
        if not isinstance(config, dict) or config.get("format") != FORMAT_NAME:
            raise UnsupportedFormatVersion(f"{backend.url} is not an rdsbackup repository")
        version = config.get("version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise UnsupportedFormatVersion(
                f"repository {backend.url} has format version {version}; this rdsbackup reads up to "
                f"version {FORMAT_VERSION}: upgrade rdsbackup"
            )
        key_docs = []
        for key, _size in backend.list("keys/"):
            try:
                key_docs.append(json.loads(backend.get(key)))
            except (MissingObject, ValueError):
                continue
        if not key_docs:
            raise WrongRepositoryKey(f"repository {backend.url} has no key objects")
        master = None
        errors = []
        for doc in sorted(key_docs, key=lambda d: d.get("type") != "kms"):
            try:
                if doc.get("type") == "kms":
                    master = crypto.unwrap_with_kms(doc, config["id"])
                elif doc.get("type") == "passphrase":
                    master = crypto.unwrap_with_password(doc, _password(password), config["id"])
                if master is not None:
                    break
            except WrongRepositoryKey as exc:
                errors.append(str(exc))
        if master is None:
            raise WrongRepositoryKey(f"cannot open repository {backend.url}: {'; '.join(errors) or 'no usable key'}")
        return cls(backend, config, Keys(master))

    @property
    def stats(self) -> dict:
        """Counters since open: objects_written, bytes_written, puts."""
        return self._stats.as_dict()

    def _put(self, key: str, data: bytes) -> None:
        self.backend.put(key, data)
        self._stats.record(len(data))

    # --- index ---------------------------------------------------------------------------------

    def _index(self, *, reload: bool = False) -> Index:
        with self._index_lock:
            if self._index_obj is None or reload:
                index = Index()
                keys = []
                for key, _size in sorted(self.backend.list("index/")):
                    try:
                        sealed = self.backend.get(key)
                    except MissingObject:
                        continue  # replaced by a prune meanwhile; its successor is listed too
                    try:
                        index.load(self._keys.open(sealed, INDEX_AD))
                    except (AuthenticationFailed, ValueError) as exc:
                        raise CorruptObject(
                            f"index object {key} in {self.url} is corrupt ({exc})", object_name=key
                        ) from None
                    keys.append(key)
                self._index_obj = index
                self._index_keys = keys
            return self._index_obj

    # --- backup --------------------------------------------------------------------------------

    def begin_backup(self, *, source_id: str, engine: str, lock_wait: float = 600.0) -> BackupWriter:
        """Start a backup: takes a shared backup lock, waiting up to `lock_wait` seconds for a running
        prune to end (RepositoryLocked after that)."""
        tune_allocator_for_streaming()
        lock = Lock(self.backend, self._keys, "backup", owner=f"backup of {source_id}", ttl=self.lock_ttl)
        lock.acquire(wait=lock_wait)
        try:
            # Reload: backups committed since open are dedup candidates, and what a prune removed is not.
            index = self._index(reload=True)
        except BaseException:
            lock.release()
            raise
        return BackupWriter(self, index, lock, source_id=source_id, engine=engine)

    # --- manifests -----------------------------------------------------------------------------

    def _manifest_ids(self) -> list[str]:
        return [key.rsplit("/", 1)[-1] for key, _ in self.backend.list("manifests/")]

    def _read_manifest(self, rp_id: str) -> dict:
        key = f"manifests/{rp_id}"
        try:
            sealed = self.backend.get(key)
        except MissingObject:
            raise RestorePointNotFound(f"restore point {rp_id} not found in {self.url}") from None
        try:
            doc = json.loads(self._keys.open(sealed, MANIFEST_AD + rp_id.encode()))
        except (AuthenticationFailed, ValueError) as exc:
            raise CorruptObject(
                f"manifest {key} in {self.url} is corrupt ({exc})", object_name=key, restore_point=rp_id
            ) from None
        return doc

    def load_manifest(self, rp_id: str) -> dict:
        """The metadata given to commit, plus id and time (and size, new_bytes, chunks)."""
        if not rp_id or "/" in rp_id:
            raise RestorePointNotFound(f"restore point {rp_id!r} not found in {self.url}")
        return self._read_manifest(rp_id)

    def list_restore_points(self, source_id: str | None = None) -> list[dict]:
        """Summaries of the restore points (manifests without the stream refs), oldest first. A manifest
        that cannot be read is listed as {"id", "time": "", "error"}."""

        def read(rp_id: str) -> dict | None:
            try:
                return self._read_manifest(rp_id)
            except RestorePointNotFound:
                return None  # forgotten meanwhile
            except CorruptObject as exc:
                # Listed, not hidden and not fatal to the listing: verify and restore report it too.
                return {"id": rp_id, "time": "", "error": str(exc)}

        with ThreadPoolExecutor(max_workers=8, thread_name_prefix="rdsbackup-list") as pool:
            docs = list(pool.map(read, self._manifest_ids()))
        out = []
        for doc in docs:
            if doc is None or (source_id is not None and doc.get("source_id") != source_id):
                continue
            out.append({k: v for k, v in doc.items() if k not in ("streams", "stream_roots")})
        out.sort(key=lambda d: (d.get("time", ""), d.get("id", "")))
        return out

    # --- reading -------------------------------------------------------------------------------

    def open_stream(self, ref: dict, *, restore_point: str | None = None,
                    part: tuple[int, int] | None = None, separator: bytes = b"\n") -> Iterator[bytes]:
        """Yield the stream's bytes (in pieces of a few MiB), verifying every chunk. CorruptObject and
        MissingObject name the pack (and `restore_point`, when given). With `part=(p, n)`, only part p
        of n of a stream of `separator`-terminated records (StreamReader.iter_part): n readers load one
        stream side by side."""
        try:
            root = bytes.fromhex(ref["blob"])
        except (KeyError, TypeError, ValueError):
            raise RepositoryError(f"not a stream reference: {ref!r}") from None
        tune_allocator_for_streaming()
        reader = StreamReader(self, restore_point=restore_point)
        if part is not None:
            return reader.iter_part(root, part[0], part[1], separator=separator)
        return reader.iter_stream(root)

    def read_stream_to(self, ref: dict, fileobj, *, restore_point: str | None = None) -> int:
        n = 0
        for piece in self.open_stream(ref, restore_point=restore_point):
            fileobj.write(piece)
            n += len(piece)
        return n

    # --- verify --------------------------------------------------------------------------------

    def verify(self, rp_id: str | None = None, *, read_data: bool = False) -> dict:
        """Check structure (every manifest, chunk list, index entry and pack is there), and with
        `read_data` re-read and authenticate every byte of the packs involved. Never raises for
        damage: returns {"restore_points", "objects", "packs", "unindexed_packs", "chunks", "bytes_read",
        "errors"}; `errors` is a list of one-line messages naming the object and restore points."""
        errors: list[str] = []
        report = {
            "restore_points": 0,
            "objects": 0,
            "packs": 0,
            "unindexed_packs": 0,
            "chunks": 0,
            "bytes_read": 0,
            "errors": errors,
        }
        try:
            index = self._index(reload=True)
        except RepositoryError as exc:
            errors.append(str(exc))
            return report
        report["objects"] += len(self._index_keys)
        present = {}
        for key, size in self.backend.list("data/"):
            pid = pack_id_from_key(key)
            if pid is not None:
                present[pid] = size
        rp_ids = [rp_id] if rp_id else sorted(self._manifest_ids())
        # pack number -> restore points that use it (for naming them in read-data errors)
        pack_users: dict[int, set[str]] = {}
        checked_chunks: set[bytes] = set()
        reader = StreamReader(self)
        for rid in rp_ids:
            try:
                manifest = self._read_manifest(rid)
            except RestorePointNotFound:
                if rp_id:
                    raise
                continue
            except CorruptObject as exc:
                errors.append(str(exc))
                continue
            report["restore_points"] += 1
            report["objects"] += 1
            reader.restore_point = rid
            bad_packs: set[int] = set()
            for root_hex in manifest.get("stream_roots", []):
                try:
                    for cid in reader.iter_ids(bytes.fromhex(root_hex)):
                        if cid in checked_chunks:
                            continue
                        checked_chunks.add(cid)
                        loc = index.chunks.get(cid)
                        if loc is None:
                            errors.append(f"restore point {rid}: chunk {cid.hex()} is not in the index")
                            continue
                        block_no, off, length = Index.unpack_location(loc)
                        pack_no, boff, stored, raw = index.blocks[block_no]
                        pack_users.setdefault(pack_no, set()).add(rid)
                        pid = index.packs[pack_no]
                        if pack_no in bad_packs:
                            continue
                        size = present.get(pid)
                        if size is None:
                            bad_packs.add(pack_no)
                            errors.append(f"restore point {rid}: pack {pack_key(pid)} is missing")
                        elif boff + stored > size or off + length > raw:
                            bad_packs.add(pack_no)
                            errors.append(f"restore point {rid}: pack {pack_key(pid)} is truncated")
                except (CorruptObject, MissingObject) as exc:
                    errors.append(f"restore point {rid}: {exc}")
        report["chunks"] = len(checked_chunks)
        if read_data:
            wanted = set(pack_users) if rp_id else set(range(len(index.packs)))
            self._verify_packs(index, wanted, present, pack_users, report)
        report["packs"] = len(present) if not rp_id else len(pack_users)
        # Packs no index lists (left by interrupted backups) are not damage; prune deletes them.
        report["unindexed_packs"] = sum(1 for pid in present if pid not in index.pack_numbers)
        return report

    def _verify_packs(self, index: Index, wanted: set[int], present: dict, users: dict, report: dict) -> None:
        errors = report["errors"]
        by_block: dict[int, list[tuple[bytes, int, int]]] = {}
        for cid, loc in index.chunks.items():
            block_no, off, length = Index.unpack_location(loc)
            if index.blocks[block_no][0] in wanted:
                by_block.setdefault(block_no, []).append((cid, off, length))
        by_pack: dict[int, list[int]] = {}
        for block_no in by_block:
            by_pack.setdefault(index.blocks[block_no][0], []).append(block_no)
        for pack_no in sorted(wanted):
            pid = index.packs[pack_no]
            key = pack_key(pid)
            names = ", ".join(sorted(users.get(pack_no, ()))) or "none"
            if pid not in present:
                errors.append(f"pack {key} is missing (restore points: {names})")
                continue
            try:
                data = self.backend.get(key)
            except MissingObject:
                errors.append(f"pack {key} is missing (restore points: {names})")
                continue
            report["bytes_read"] += len(data)
            report["objects"] += 1
            for block_no in sorted(by_pack.get(pack_no, ())):
                _, off, stored, raw = index.blocks[block_no]
                try:
                    plain = self._keys.open(memoryview(data)[off : off + stored], BLOCK_AD, max_size=raw)
                except AuthenticationFailed as exc:
                    errors.append(
                        f"pack {key} is corrupt: block at offset {off} failed authentication ({exc}) "
                        f"(restore points: {names})"
                    )
                    continue
                for cid, coff, length in by_block[block_no]:
                    if self._keys.chunk_id(plain[coff : coff + length]) != cid:
                        errors.append(
                            f"pack {key} is corrupt: chunk {cid.hex()} does not match its id (restore points: {names})"
                        )
                        break

    # --- retention -----------------------------------------------------------------------------

    def forget(
        self, *, keep_last: int | None = None, keep_days: float | None = None, source_id: str | None = None,
        keep_ids: set[str] | frozenset[str] = frozenset(),
    ) -> list[str]:
        """Remove the manifests that the policy does not keep, per source id (a restore point is kept
        if it is among the newest `keep_last` of its source or younger than `keep_days`, or its id is in
        `keep_ids`: e.g. not archived yet). Returns the removed ids. Data goes with the next prune."""
        if keep_last is None and keep_days is None:
            raise ValueError("forget needs keep_last and/or keep_days")
        if (keep_last is not None and keep_last < 0) or (keep_days is not None and keep_days < 0):
            raise ValueError("keep_last and keep_days must not be negative")
        by_source: dict[str | None, list[dict]] = {}
        for rp in self.list_restore_points(source_id):
            by_source.setdefault(None if "error" in rp else rp.get("source_id", ""), []).append(rp)
        now = time.time()
        removed = []
        by_source.pop(None, None)  # unreadable manifests: no policy applies to what cannot be read
        for rps in by_source.values():
            newest_first = list(reversed(rps))
            for n, rp in enumerate(newest_first):
                keep = False
                if keep_last is not None and n < keep_last:
                    keep = True
                if keep_days is not None and now - _parse_time(rp["time"]) <= keep_days * 86400:
                    keep = True
                if not keep and rp["id"] not in keep_ids:
                    removed.append(rp["id"])
        for rp_id in removed:
            self.backend.delete(f"manifests/{rp_id}")
        return sorted(removed)

    def prune(self, *, repack_below: float = 0.5, lock_wait: float = 0.0) -> dict:
        """Delete data no restore point references. Takes the exclusive lock: RepositoryLocked while a
        backup runs (a running backup may reference any indexed chunk). Packs less than
        `repack_below` used are rewritten with their live blocks only."""
        from rdsbackup.repository.prune import prune

        lock = Lock(self.backend, self._keys, "exclusive", owner="prune", ttl=self.lock_ttl)
        lock.acquire(wait=lock_wait)
        try:
            return prune(self, repack_below=repack_below)
        finally:
            lock.release()

    def copy_restore_point(self, rp_id: str, other: Repository) -> str:
        """Copy a restore point into `other` (e.g. an archive repository) as a self-contained full;
        returns its id there."""
        manifest = self.load_manifest(rp_id)
        meta = {k: v for k, v in manifest.items() if k not in ("id", "time", "stream_roots")}
        meta["copied_from"] = {"repository": self.id, "restore_point": rp_id, "time": manifest.get("time")}
        with other.begin_backup(source_id=manifest.get("source_id", ""), engine=manifest.get("engine", "")) as w:
            copied: dict[str, dict] = {}

            def convert(value):
                if isinstance(value, dict):
                    blob = value.get("blob")
                    if isinstance(blob, str) and "size" in value and len(blob) == 32:
                        if blob not in copied:
                            prof = value.get("profile", "bulk")
                            copied[blob] = w.add_stream(
                                "copy", self.open_stream(value, restore_point=rp_id), profile=prof
                            )
                        return {**value, **copied[blob]}
                    return {k: convert(v) for k, v in value.items()}
                if isinstance(value, list):
                    return [convert(v) for v in value]
                return value

            meta = convert(meta)
            for root in manifest.get("stream_roots", []):
                if root not in copied:
                    convert({"blob": root, "size": 0, "profile": "bulk"})
            return w.commit(meta)


class BackupWriter:
    """One backup in progress. Use as a context manager; see `Repository.begin_backup`."""

    def __init__(self, repo: Repository, index: Index, lock: Lock, *, source_id: str, engine: str):
        self.repo = repo
        self.keys = repo._keys
        self.index = index
        self.lock = lock
        self.source_id = source_id
        self.engine = engine
        self.started = _now_iso()
        self.uploader = Uploader(repo.backend, repo._stats, threads=repo.upload_threads)
        self.packer = Packer(index, self.uploader)
        # Blocks are compressed and encrypted on these threads (zstd and AES release the GIL) while
        # the caller's thread goes on chunking; the semaphore bounds the blocks held in memory.
        self._sealer = ThreadPoolExecutor(max_workers=2, thread_name_prefix="rdsbackup-seal")
        self._seal_slots = threading.BoundedSemaphore(16)
        # Blocks from number block_base on are this backup's; new_records are its chunks' index entries.
        self.block_base = len(index.blocks)
        self.new_records = bytearray()
        self.roots: list[str] = []
        self._roots_lock = threading.Lock()
        self.size = 0
        self.chunks = 0
        self.new_bytes = 0
        self.done = False

    def __enter__(self) -> BackupWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.done:
            self.abort()

    def seal_block(self, block_no: int, raw: bytearray) -> Future:
        """Seal a block and add it to a pack, on a sealing thread; the future's result is its size."""
        self.uploader.check()
        self._seal_slots.acquire()
        try:
            return self._sealer.submit(self._seal, block_no, raw)
        except BaseException:
            self._seal_slots.release()
            raise

    def _seal(self, block_no: int, raw: bytearray) -> int:
        try:
            sealed = self.keys.seal(raw, BLOCK_AD)
            self.packer.add_block(block_no, sealed, len(raw))
            return len(sealed)
        except BaseException as exc:
            if self.uploader.error is None:
                self.uploader.error = exc
            raise
        finally:
            self._seal_slots.release()

    def add_stream(self, name: str, source, *, profile: str = "bulk") -> dict:
        """Store one stream (an iterable of bytes or a binary file-like object). Thread-safe.
        Returns its ref: {"blob", "size", "chunks", "new_bytes", "profile"}."""
        if self.done:
            raise RepositoryError("the backup was already committed or aborted")
        prof = chunking_profile(profile)
        try:
            ref = write_stream(self, source, prof)
        except BackupAborted:
            raise
        except BaseException:
            # An upload failure is the real cause if there was one. Otherwise the stream is lost but the
            # backup is not: the caller may skip the stream and commit the rest.
            self.uploader.check()
            raise
        with self._roots_lock:
            self.roots.append(ref["blob"])
            self.size += ref["size"]
            self.chunks += ref["chunks"]
            self.new_bytes += ref["new_bytes"]
        return ref

    def commit(self, metadata: dict) -> str:
        """Flush packs, write the index, then the manifest (last); release the lock; return the id."""
        if self.done:
            raise RepositoryError("the backup was already committed or aborted")
        try:
            self._sealer.shutdown(wait=True)
            self.uploader.check()
            self.packer.flush()
            index_bytes = 0
            if self.new_records:
                plain = encode_new_entries(self.index, self.block_base, self.new_records)
                sealed = self.keys.seal(plain, INDEX_AD)
                key = f"index/{os.urandom(16).hex()}"
                self.repo._put(key, sealed)
                index_bytes = len(sealed)
                self.repo._index_keys.append(key)
            roots: set[str] = set(self.roots)
            _find_refs(metadata, roots)
            rp_id = os.urandom(8).hex()
            manifest = dict(metadata)
            manifest.setdefault("source_id", self.source_id)
            manifest.setdefault("engine", self.engine)
            manifest.setdefault("started", self.started)
            manifest.setdefault("size", self.size)
            manifest.setdefault("chunks", self.chunks)
            manifest["id"] = rp_id
            manifest["time"] = _now_iso()
            manifest["stream_roots"] = sorted(roots)
            manifest["stored_bytes"] = self.new_bytes + index_bytes
            self.lock.check()
            self.repo._put(
                f"manifests/{rp_id}", self.keys.seal(json.dumps(manifest).encode(), MANIFEST_AD + rp_id.encode())
            )
        except BaseException:
            self.abort()
            raise
        self.done = True
        self.uploader.close()
        self.lock.release()
        return rp_id

    def abort(self) -> None:
        """Give up: no manifest is written; uploaded packs stay unreferenced until a prune."""
        if self.done:
            return
        self.done = True
        try:
            self._sealer.shutdown(wait=True, cancel_futures=True)
            self.uploader.close()
        finally:
            self.lock.release()
            # Chunks of this backup are not in any stored index: forget them so a later backup in this
            # process does not dedup against data that no index will ever describe.
            self.repo._index_obj = None
