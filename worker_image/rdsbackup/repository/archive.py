"""Archive repositories: restore points copied out of a backup repository as self-contained fulls.

An archive repository is an ordinary repository (same objects, same format) with `"kind": "archive"`
in its config and its own master key. Each archived restore point keeps its id and owns its objects:

    manifests/<rp id>   its manifest, with an "archive" record naming its index object and packs
    index/<id>          one index object describing only its chunks
    data/../<id>        its packs, in the archive's storage class (GLACIER, DEEP_ARCHIVE, GLACIER_IR)

No chunk of one archived point is ever looked up in another's packs (readers of an archived point use
its own index object only), so deleting a point (manifest, then index object, then packs) never
touches another, nothing is ever repacked in a cold class, and a restore needs the retrieval of exactly
the packs its manifest lists. The manifest, index and keys stay in STANDARD: listing and structural
verify need no retrieval.

Copying: the point's chunk lists are walked in the source; every data chunk is read once, block by
block in pack order. A source block whose bytes are (nearly) all this point's chunks is moved whole:
decrypted and sealed again under the archive key without recompressing; other blocks give up their
live chunks to new blocks that are compressed afresh. Chunk ids are recomputed with the archive's
id key (the keys are independent), so the chunk lists are written anew.

Interruption: everything runs under the archive's exclusive lock; the manifest is written last. A
failed copy deletes what it wrote; a killed one leaves an index object and packs no manifest names,
which the next archive run (or `forget_archived`) deletes before it starts.
"""

from __future__ import annotations

import contextlib
import copy as copy_module
import json
import os
import time
from collections.abc import Callable

from rdsbackup.errors import (
    CorruptObject,
    MissingObject,
    RepositoryError,
    RestorePointNotFound,
    WrongRepositoryKey,
)
from rdsbackup.repository.backends import backend_for
from rdsbackup.repository.crypto import AuthenticationFailed, Keys, b64, unb64
from rdsbackup.repository.index import (
    CHUNK_RECORD,
    Index,
    encode_new_entries,
    pack_id_from_key,
    pack_key,
)
from rdsbackup.repository.locks import Lock
from rdsbackup.repository.packs import read_blocks
from rdsbackup.repository.repository import (
    INDEX_AD,
    MANIFEST_AD,
    BackupWriter,
    Repository,
    _now_iso,
    _parse_time,
)
from rdsbackup.repository.retrieval import (
    ARCHIVED,
    READY,
    early_deletion_charge,
    object_lock_until,
    object_states,
)
from rdsbackup.repository.streams import BLOCK_AD, LIST_PROFILE, StreamReader, StreamWriter

ARCHIVE_KIND = "archive"
# The source repository's chunk-id key, sealed under the archive's master key. `Repository.open` skips
# this key document (it wraps no master key). Sharing the id key reveals nothing: ids are never stored
# in plaintext (indexes and chunk lists are sealed), and the archive's encryption key is its own.
CHUNK_ID_KEY_OBJECT = "keys/chunk-id-key"
CHUNK_ID_KEY_TYPE = "chunk-id-key"
CHUNK_ID_KEY_AD = b"rdsbackup chunk-id key"
ARCHIVE_PASSWORD_ENV = "RDSBACKUP_ARCHIVE_PASSWORD"
ARCHIVE_STORAGE_CLASSES = ("GLACIER", "DEEP_ARCHIVE", "GLACIER_IR")
# A source block is moved whole when at least this share of its bytes belongs to the point: the rest
# is dead weight in the archive (scattered churn leaves most blocks a few percent dead).
MOVE_WHOLE_MIN_LIVE = 0.9
# ... or when its dead bytes are this few (a stream's last block holds its chunk lists' tail and root).
MOVE_WHOLE_MAX_DEAD = 8 * 1024
# New blocks built from the live chunks of mostly-dead source blocks close at this size.
REBUILT_BLOCK = 128 * 1024


def kind_of(url: str) -> str:
    """"archive" or "backup" (from the repository's config; RepositoryNotFound if there is none)."""
    from rdsbackup.errors import RepositoryNotFound

    backend = backend_for(url)
    try:
        config = json.loads(backend.get("config"))
    except MissingObject:
        raise RepositoryNotFound(f"no repository at {backend.url} (no config object)") from None
    except ValueError:
        return "backup"
    return ARCHIVE_KIND if isinstance(config, dict) and config.get("kind") == ARCHIVE_KIND else "backup"


def open_any(url: str) -> Repository:
    """The repository at `url`: an ArchiveRepository when its config says "archive", else a backup repository."""
    return ArchiveRepository.open_archive(url) if kind_of(url) == ARCHIVE_KIND else Repository.open(url)


def is_stream_ref(value) -> bool:
    """A stream ref inside restore point metadata ({"blob": 32 hex, "size": n, ...}), as commit finds them."""
    return isinstance(value, dict) and isinstance(value.get("blob"), str) and len(value["blob"]) == 32 \
        and "size" in value


def archive_password(password: str | None = None) -> str | None:
    return password if password is not None else os.environ.get(ARCHIVE_PASSWORD_ENV)


class ArchiveRepository(Repository):
    """An archive repository. `for_point(id)` gives a view whose index is that point's own index
    object: what restore and verify of one archived point read through."""

    scope: str | None = None

    @classmethod
    def init_archive(cls, url: str, *, kms_key_id: str | None = None, password: str | None = None,
                     ids_of: Keys | None = None) -> ArchiveRepository:
        """Create an archive repository. With `ids_of` (its source repository's keys) archived chunks
        keep their ids (the source's chunk-id key and scheme), so blocks and chunk lists are copied
        without being decompressed or hashed."""
        if not kms_key_id and not archive_password(password):
            raise WrongRepositoryKey(f"no archive passphrase: set {ARCHIVE_PASSWORD_ENV} or give a KMS key")
        kwargs = {"chunk_ids": ids_of.chunk_id_scheme} if ids_of is not None else {}
        repo = Repository.init(url, kms_key_id=kms_key_id, password=None if kms_key_id else archive_password(password),
                               kind=ARCHIVE_KIND, **kwargs)
        keys = repo._keys
        if ids_of is not None:
            doc = {"type": CHUNK_ID_KEY_TYPE, "sealed": b64(keys.seal(ids_of.id_key, CHUNK_ID_KEY_AD, compress=False))}
            repo.backend.put(CHUNK_ID_KEY_OBJECT, json.dumps(doc).encode())
            keys = Keys(keys.master, id_key=ids_of.id_key, chunk_id_scheme=ids_of.chunk_id_scheme)
        return cls(repo.backend, repo.config, keys)

    @classmethod
    def open_archive(cls, url: str, *, password: str | None = None) -> ArchiveRepository:
        if kind_of(url) != ARCHIVE_KIND:
            raise RepositoryError(f"{backend_for(url).url} is a backup repository, not an archive repository")
        password = archive_password(password)
        try:
            # "" rather than None: never fall back to the backup repository's RDSBACKUP_PASSWORD.
            repo = cls.open(url, password=password or "")
        except WrongRepositoryKey as exc:
            if password:
                raise
            raise WrongRepositoryKey(
                f"cannot open archive repository {url}: set {ARCHIVE_PASSWORD_ENV} (its passphrase) "
                f"or give it a KMS key ({exc})"
            ) from None
        try:
            doc = json.loads(repo.backend.get(CHUNK_ID_KEY_OBJECT))
        except MissingObject:
            return repo  # chunk ids under the archive's own id key
        try:
            id_key = repo._keys.open(unb64(doc["sealed"]), CHUNK_ID_KEY_AD)
        except (AuthenticationFailed, KeyError, ValueError) as exc:
            raise CorruptObject(f"{CHUNK_ID_KEY_OBJECT} in {repo.url} is corrupt ({exc})",
                                object_name=CHUNK_ID_KEY_OBJECT) from None
        repo._keys = Keys(repo._keys.master, id_key=bytes(id_key), chunk_id_scheme=repo._keys.chunk_id_scheme)
        return repo

    def for_point(self, rp_id: str) -> ArchiveRepository:
        view = copy_module.copy(self)
        view.scope = rp_id
        view._index_obj = None
        view._index_keys = []
        return view

    def record(self, rp_id: str) -> dict:
        """The "archive" record of an archived point's manifest (index objects, packs, ...)."""
        manifest = self.load_manifest(rp_id)
        rec = manifest.get("archive")
        if not isinstance(rec, dict) or not isinstance(rec.get("packs"), list):
            raise CorruptObject(
                f"restore point {rp_id} in archive {self.url} has no archive record", restore_point=rp_id
            )
        return rec

    def _index(self, *, reload: bool = False) -> Index:
        if self.scope is None:
            return super()._index(reload=reload)
        with self._index_lock:
            if self._index_obj is None:
                index = Index()
                keys = self.record(self.scope)["index"]
                for key in keys:
                    try:
                        index.load(self._keys.open(self.backend.get(key), INDEX_AD))
                    except (AuthenticationFailed, ValueError) as exc:
                        raise CorruptObject(
                            f"index object {key} of archived restore point {self.scope} is corrupt ({exc})",
                            object_name=key,
                            restore_point=self.scope,
                        ) from None
                self._index_obj = index
                self._index_keys = list(keys)
            return self._index_obj

    def begin_backup(self, **kwargs):
        raise RepositoryError(f"{self.url} is an archive repository: it takes archived restore points only")

    def prune(self, **kwargs):
        raise RepositoryError(
            f"{self.url} is an archive repository: archived points are deleted whole (forget_archived), "
            "never pruned or repacked"
        )

    def forget(self, **kwargs):
        return self.prune()

    # --- retrieval -----------------------------------------------------------------------------

    def pack_states(self, rp_id: str):
        """Retrieval state of each pack of an archived point (see rdsbackup.repository.retrieval)."""
        return object_states(self.backend, self.record(rp_id)["packs"])


def _referenced_objects(archive: ArchiveRepository) -> set[str] | None:
    """Index objects and packs that archived points own; None if a manifest cannot be read (then
    nothing may be called an orphan)."""
    owned: set[str] = set()
    for rp_id in archive._manifest_ids():
        try:
            rec = archive.record(rp_id)
        except RestorePointNotFound:
            continue
        except (CorruptObject, MissingObject):
            return None
        owned.update(rec.get("index", []))
        owned.update(rec.get("packs", []))
    return owned


def sweep_orphans(archive: ArchiveRepository) -> list[str]:
    """Delete index objects and packs no archived point owns (left by a killed copy or a deletion
    cut short). Call under the archive's exclusive lock. Returns the deleted keys."""
    owned = _referenced_objects(archive)
    if owned is None:
        return []
    orphans = [k for k, _ in archive.backend.list("index/") if k not in owned]
    orphans += [k for k, _ in archive.backend.list("data/") if k not in owned and pack_id_from_key(k) is not None]
    if orphans:
        archive.backend.delete_many(orphans)
    return orphans


# --- copying ---------------------------------------------------------------------------------------


class _Copy:
    """One restore point being copied into an archive (see the module docstring)."""

    def __init__(self, source: Repository, archive: ArchiveRepository, rp_id: str, lock: Lock):
        self.source = source
        self.archive = archive
        self.rp_id = rp_id
        self.src_keys = source._keys
        self.dst_keys = archive._keys
        self.index = Index()  # this point's chunks only: nothing is shared with other archived points
        self.writer = BackupWriter(archive, self.index, lock, source_id="", engine="")
        self.new_id: dict[bytes, bytes] = {}
        self.moved_blocks = 0
        self.rebuilt_blocks = 0
        self.dead_bytes = 0
        self._rebuilt = bytearray()
        self._rebuilt_records = bytearray()
        self._rebuilt_block = -1
        self.index_key: str | None = None
        # Same chunk-id key: ids, chunk lists and roots stay as they are; blocks need no decompression.
        self.same_ids = self.src_keys.same_chunk_ids(self.dst_keys)

    # source side

    def _corrupt(self, message: str, key: str) -> CorruptObject:
        return CorruptObject(f"{message} (restore point {self.rp_id})", object_name=key, restore_point=self.rp_id)

    def walk(self, roots: list[str]) -> tuple[dict[str, bytearray], dict[int, list[tuple[int, int, bytes]]]]:
        """Each stream's data chunk ids, and the distinct data chunks grouped by source block."""
        reader = StreamReader(self.source, restore_point=self.rp_id)
        chunks = reader.index.chunks
        streams: dict[str, bytearray] = {}
        seen: set[bytes] = set()
        by_block: dict[int, list[tuple[int, int, bytes]]] = {}
        mask = (1 << 24) - 1
        for root_hex in roots:
            ids = bytearray()
            # With the same ids, list chunks and roots are copied like data; else lists are written anew.
            # Per chunk list, not per id: the lookups run batched (a point has ~500 chunks per MiB).
            for batch in reader.iter_id_batches(bytes.fromhex(root_hex), every_chunk=self.same_ids):
                ids += b"".join(batch)
                new = [cid for cid in batch if cid not in seen]
                seen.update(new)
                for cid, loc in zip(new, chunks.get_many(new), strict=True):
                    if loc is None or loc < 0:
                        reader.locate(cid)  # raises MissingObject naming the chunk and the point
                    block = by_block.get(loc >> 48)
                    if block is None:
                        block = by_block[loc >> 48] = []
                    block.append(((loc >> 24) & mask, loc & mask, cid))
            streams[root_hex] = ids
        return streams, by_block

    def copy_blocks(self, by_block: dict[int, list[tuple[int, int, bytes]]]) -> None:
        src_index = self.source._index()
        blocks = src_index.blocks
        order = sorted(by_block, key=lambda b: blocks[b][:2])

        def missing(key: str, _run) -> MissingObject:
            return MissingObject(f"pack {key} is missing from {self.source.url} (restore point {self.rp_id})",
                                 object_name=key, restore_point=self.rp_id)

        for key, block_no, sealed in read_blocks(self.source.backend, src_index, order, missing):
            _, off, size, raw = blocks[block_no]
            if len(sealed) != size:
                raise self._corrupt(f"pack {key} is truncated: block at offset {off} is short", key)
            self._copy_block(key, off, sealed, raw, by_block[block_no])
        self._close_rebuilt()

    def _copy_block(self, key: str, off: int, sealed, raw: int, live: list[tuple[int, int, bytes]]) -> None:
        try:
            encoded = self.src_keys.open_encoded(sealed, BLOCK_AD)
            if self.same_ids:
                # Authenticated is enough: the chunks' ids and offsets come from the sealed index.
                live.sort()
                live_bytes = sum(length for _, length, _ in live)
                if live_bytes >= MOVE_WHOLE_MIN_LIVE * raw or raw - live_bytes <= MOVE_WHOLE_MAX_DEAD:
                    self._move_whole(encoded, raw, [(coff, length, cid, cid) for coff, length, cid in live])
                    self.dead_bytes += raw - live_bytes
                    return
            plain = self.src_keys.decode(encoded, max_size=raw)
        except AuthenticationFailed as exc:
            raise self._corrupt(
                f"pack {key} is corrupt: block at offset {off} failed authentication ({exc})", key
            ) from None
        view = memoryview(plain)
        if self.same_ids:
            for coff, length, cid in live:
                self._add_rebuilt(cid, view[coff : coff + length])
            return
        src_id = self.src_keys.chunk_id
        dst_id = self.dst_keys.chunk_id
        live.sort()
        new_ids = []
        for coff, length, cid in live:
            data = view[coff : coff + length]
            if coff + length > len(plain) or src_id(data) != cid:
                raise self._corrupt(f"chunk {cid.hex()} in pack {key} does not match its id", key)
            new_ids.append(dst_id(data))
        live_bytes = sum(length for _, length, _ in live)
        if live_bytes >= MOVE_WHOLE_MIN_LIVE * len(plain) or len(plain) - live_bytes <= MOVE_WHOLE_MAX_DEAD:
            for (_, _, cid), nid in zip(live, new_ids, strict=True):
                self.new_id[cid] = nid
            self._move_whole(encoded, len(plain), [(coff, length, cid, nid) for (coff, length, cid), nid
                                                   in zip(live, new_ids, strict=True)])
            self.dead_bytes += len(plain) - live_bytes
            return
        for (coff, length, cid), nid in zip(live, new_ids, strict=True):
            self.new_id[cid] = nid
            self._add_rebuilt(nid, view[coff : coff + length])

    def _move_whole(self, encoded, raw: int, chunks: list[tuple[int, int, bytes, bytes]]) -> None:
        """Seal a source block's encoded payload again under the archive key (not recompressed) and index
        its live chunks ((offset, length, old id, new id)) where they are."""
        block_no = self.index.new_block()
        table = self.index.chunks
        records = self.writer.new_records
        block_records = bytearray()  # for the pack's trailer
        pack = CHUNK_RECORD.pack
        base = block_no << 48
        for coff, length, _cid, nid in chunks:
            # each chunk of the point comes here once (walk lists it once): no lookup before adding
            table.append_new(nid, base | (coff << 24) | length)
            block_records += pack(nid, block_no, coff, length)
        records += block_records
        self.writer.packer.add_block(block_no, self.dst_keys.seal_encoded(encoded, BLOCK_AD), raw, block_records)
        self.moved_blocks += 1

    def _add_rebuilt(self, nid: bytes, data) -> None:
        chunks = self.index.chunks
        if self._rebuilt_block < 0:
            self._rebuilt_block = self.index.new_block()
        off = len(self._rebuilt)
        self._rebuilt += data
        chunks.append_new(nid, Index.location(self._rebuilt_block, off, len(data)))  # once per chunk (walk)
        record = CHUNK_RECORD.pack(nid, self._rebuilt_block, off, len(data))
        self.writer.new_records += record
        self._rebuilt_records += record
        if len(self._rebuilt) >= REBUILT_BLOCK:
            self._close_rebuilt()

    def _close_rebuilt(self) -> None:
        if self._rebuilt_block < 0:
            return
        self.writer.seal_block(self._rebuilt_block, self._rebuilt, self._rebuilt_records)  # on a sealing thread
        self.rebuilt_blocks += 1
        self._rebuilt = bytearray()
        self._rebuilt_records = bytearray()
        self._rebuilt_block = -1

    def write_lists(self, streams: dict[str, bytearray]) -> dict[str, str]:
        """Each stream's chunk lists and root under the archive's ids; returns old root -> new root."""
        if self.same_ids:
            return {root: root for root in streams}  # copied with the data
        new_root = {}
        new_id = self.new_id
        for root_hex, ids in streams.items():
            stream = StreamWriter(self.writer, LIST_PROFILE)
            step = 4096 * 16
            for s in range(0, len(ids), step):
                part = ids[s : s + step]
                stream.add_stored_ids(b"".join(new_id[bytes(part[k : k + 16])] for k in range(0, len(part), 16)))
            new_root[root_hex] = stream.finish().hex()
        return new_root

    def commit(self, manifest: dict, new_root: dict[str, str], storage_class: str | None) -> dict:
        writer = self.writer
        writer._sealer.shutdown(wait=True)
        writer.uploader.check()
        writer.packer.flush()
        plain = encode_new_entries(self.index, 0, writer.new_records)
        self.index_key = f"index/{os.urandom(16).hex()}"
        self.archive._put(self.index_key, self.dst_keys.seal(plain, INDEX_AD))
        packs = [pack_key(p) for p in writer.packer.new_packs]
        sizes = dict(self.archive.backend.list("data/"))
        pack_bytes = sum(sizes.get(k, 0) for k in packs)

        def convert(value):
            if is_stream_ref(value):
                return {**value, "blob": new_root[value["blob"]]}
            if isinstance(value, dict):
                return {k: convert(v) for k, v in value.items()}
            if isinstance(value, list):
                return [convert(v) for v in value]
            return value

        out = convert({k: v for k, v in manifest.items() if k not in ("stream_roots", "archive")})
        out["stream_roots"] = sorted(new_root[r] for r in manifest.get("stream_roots", []))
        out["stored_bytes"] = pack_bytes
        out["archive"] = {
            "source_repository": self.source.id,
            "archived": _now_iso(),
            "index": [self.index_key],
            "packs": packs,
            "pack_bytes": pack_bytes,
            "storage_class": storage_class or "STANDARD",
        }
        writer.lock.check()
        self.archive._put(
            f"manifests/{self.rp_id}",
            self.dst_keys.seal(json.dumps(out).encode(), MANIFEST_AD + self.rp_id.encode()),
        )
        writer.done = True
        writer.uploader.close()
        return {
            "restore_point_id": self.rp_id,
            "archived": True,
            "packs": len(packs),
            "stored_bytes": pack_bytes,
            "index_bytes": len(plain),
            "size": manifest.get("size", 0),
            "blocks_moved": self.moved_blocks,
            "blocks_rebuilt": self.rebuilt_blocks,
            "dead_bytes_moved": self.dead_bytes,
            "storage_class": out["archive"]["storage_class"],
        }

    def abort(self) -> None:
        """Undo: stop the writer's threads, delete the packs and index object written so far."""
        writer = self.writer
        writer.done = True
        with contextlib.suppress(Exception):
            writer._sealer.shutdown(wait=True, cancel_futures=True)
        with contextlib.suppress(Exception):
            writer.uploader.close()
        written = [pack_key(p) for p in writer.packer.new_packs]
        if self.index_key:
            written.append(self.index_key)
        # What cannot be deleted now is an orphan the next run sweeps; never mask the real error.
        with contextlib.suppress(Exception):
            self.archive.backend.delete_many(written)


def archive_restore_point(
    source: Repository,
    archive: ArchiveRepository,
    rp_id: str,
    *,
    storage_class: str | None = None,
    lock_wait: float = 600.0,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Copy restore point `rp_id` of `source` into `archive` as a self-contained full with the same id.
    Archiving a point that is archived already does nothing ({"archived": False, "already": True}).
    The source is read under a shared "archive" lock: no prune repacks the point's data away meanwhile."""
    if archive.backend.exists(f"manifests/{rp_id}"):
        source.load_manifest(rp_id)  # a wrong id still fails
        return {"restore_point_id": rp_id, "archived": False, "already": True}
    with source.shared_lock("archive", f"archive of {rp_id}") as source_lock:
        return _archive_locked(source, source_lock, archive, rp_id, storage_class=storage_class, lock_wait=lock_wait)


def _archive_locked(source: Repository, source_lock: Lock, archive: ArchiveRepository, rp_id: str, *,
                    storage_class: str | None, lock_wait: float) -> dict:
    manifest = source.load_manifest(rp_id)
    if storage_class is not None:
        archive.backend.data_storage_class = storage_class
    lock = Lock(archive.backend, archive._keys, "exclusive", owner=f"archive of {rp_id}", ttl=archive.lock_ttl)
    lock.acquire(wait=lock_wait)
    try:
        if archive.backend.exists(f"manifests/{rp_id}"):
            return {"restore_point_id": rp_id, "archived": False, "already": True}
        swept = sweep_orphans(archive)
        started = time.monotonic()
        job = _Copy(source, archive, rp_id, lock)
        try:
            streams, by_block = job.walk(manifest.get("stream_roots", []))
            job.copy_blocks(by_block)
            del by_block
            new_root = job.write_lists(streams)
            del streams
            source_lock.check()  # paused past the bound: a prune may have run under the copy (LockLost)
            result = job.commit(manifest, new_root, getattr(archive.backend, "data_storage_class", None))
        except BaseException:
            job.abort()
            raise
        result["orphans_removed"] = len(swept)
        result["duration_seconds"] = round(time.monotonic() - started, 3)
        return result
    finally:
        lock.release()


# --- archive retention -----------------------------------------------------------------------------


def forget_archived(
    archive: ArchiveRepository,
    *,
    retention_days: float,
    keep: Callable[[list[dict]], set[str]] | None = None,
    now: float | None = None,
    lock_wait: float = 600.0,
) -> dict:
    """Delete whole archived points older than `retention_days` (by their backup time) that `keep`
    (e.g. a GFS selection) does not keep. A point with an object under Object Lock is never deleted
    (listed under "locked"); deleting one before its class's minimum storage duration is reported with
    the early-deletion charge S3 bills (list-price estimate)."""
    now = time.time() if now is None else now
    lock = Lock(archive.backend, archive._keys, "exclusive", owner="archive retention", ttl=archive.lock_ttl)
    lock.acquire(wait=lock_wait)
    try:
        swept = sweep_orphans(archive)
        points = [p for p in archive.list_restore_points() if "error" not in p]
        kept = keep(points) if keep else set()
        deleted, locked, charges = [], [], []
        total_charge = 0.0
        for point in points:
            age_days = (now - _parse_time(point["time"])) / 86400
            if age_days <= retention_days or point["id"] in kept:
                continue
            rec = archive.record(point["id"])
            objects = [f"manifests/{point['id']}", *rec.get("index", []), *rec.get("packs", [])]
            lock_until = None
            for key in objects:
                lock_until = object_lock_until(archive.backend, key)
                if lock_until and _iso_to_ts(lock_until) > now:
                    break
                lock_until = None
            if lock_until:
                locked.append({"restore_point_id": point["id"], "retain_until": lock_until})
                continue
            archived_age = (now - _parse_time(rec.get("archived", point["time"]))) / 86400
            charge = early_deletion_charge(rec.get("storage_class", "STANDARD"), rec.get("pack_bytes", 0), archived_age)
            # Manifest first: the point is gone at once; the rest is an orphan if we stop here.
            archive.backend.delete(f"manifests/{point['id']}")
            archive.backend.delete_many([*rec.get("index", []), *rec.get("packs", [])])
            deleted.append(point["id"])
            if charge > 0:
                charges.append({
                    "restore_point_id": point["id"],
                    "storage_class": rec.get("storage_class"),
                    "archived_days": round(archived_age, 1),
                    "bytes": rec.get("pack_bytes", 0),
                    "early_deletion_charge_usd": charge,
                })
                total_charge += charge
        return {
            "deleted": deleted,
            "locked": locked,
            "kept_by_selection": sorted(kept),
            "early_deletions": charges,
            "early_deletion_charge_usd": total_charge,
            "orphans_removed": len(swept),
        }
    finally:
        lock.release()


def _iso_to_ts(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def verify_archive(archive: ArchiveRepository, rp_id: str | None = None, *, read_data: bool = False) -> dict:
    """Verify archived points. Structure (manifest, own index object, packs present and long enough,
    stream roots indexed) needs no retrieval; `read_data` reads every pack of the points whose packs
    are readable and lists under "needs_retrieval" the packs that are not, instead of failing on them.
    Runs under a shared "verify" lock on the archive: archive retention deletes no point meanwhile."""
    with archive.shared_lock("verify", "verify of the archive"):
        return _verify_archive(archive, rp_id, read_data=read_data)


def _verify_archive(archive: ArchiveRepository, rp_id: str | None, *, read_data: bool) -> dict:
    errors: list[str] = []
    report = {"restore_points": 0, "packs": 0, "chunks": 0, "bytes_read": 0, "needs_retrieval": [],
              "needs_retrieval_bytes": 0, "errors": errors}
    present = dict(archive.backend.list("data/"))
    ids = [rp_id] if rp_id else sorted(archive._manifest_ids())
    for rid in ids:
        try:
            rec = archive.record(rid)
            view = archive.for_point(rid)
            index = view._index()
        except RestorePointNotFound:
            if rp_id:
                raise
            continue
        except (CorruptObject, MissingObject) as exc:
            errors.append(str(exc))
            continue
        report["restore_points"] += 1
        report["packs"] += len(rec["packs"])
        own = set(rec["packs"])
        bad = False
        for block in index.blocks:
            key = pack_key(index.packs[block[0]])
            if key not in own:
                errors.append(f"restore point {rid}: block in pack {key}, which the point does not own")
                bad = True
                break
            size = present.get(key)
            if size is None:
                errors.append(f"restore point {rid}: pack {key} is missing")
                bad = True
                break
            if block[1] + block[2] > size:
                errors.append(f"restore point {rid}: pack {key} is truncated")
                bad = True
                break
        for root in view.load_manifest(rid).get("stream_roots", []):
            if bytes.fromhex(root) not in index.chunks:
                errors.append(f"restore point {rid}: stream root {root} is not in its index")
                bad = True
        if bad or not read_data:
            report["chunks"] += len(index.chunks)
            continue
        waiting = [s for s in view.pack_states(rid) if s.state != READY]
        if waiting:
            for s in waiting:
                report["needs_retrieval"].append(
                    {"restore_point_id": rid, "pack": s.key, "bytes": s.size, "storage_class": s.storage_class,
                     "retrieval": "requested" if s.state != ARCHIVED else "not requested"}
                )
                report["needs_retrieval_bytes"] += s.size
            continue
        full = Repository._verify(view, rid, read_data=True)  # under this function's lock
        errors.extend(full["errors"])
        report["chunks"] += full["chunks"]
        report["bytes_read"] += full["bytes_read"]
    return report
