"""Prune: delete what no restore point references. Runs under the exclusive lock.

Order (each step leaves a repository that reads correctly if the process dies right after it):
1. mark: every chunk reachable from a manifest (roots, chunk lists, data);
2. repack: live blocks of mostly-dead packs are copied, unchanged, into new packs (uploaded);
3. write the new index objects (live chunks only, pointing at the new packs);
4. delete the old index objects;
5. delete unreferenced, repacked and orphaned packs (packs that no index lists: interrupted backups).
A crash before 4 leaves duplicate index entries (harmless); between 4 and 5 it leaves packs no index
lists, which the next prune deletes.

Damage does not block prune: a manifest that does not open is reported and skipped (what cannot be
read cannot be restored; `forget --restore-point` drops it), a restore point whose chunks are damaged
or lost is reported (`repair points`) and marked as far as it can be read, a lost pack is recorded in
the damage registry. Only a damaged index object stops prune (the index must be whole to know which
packs are unreferenced: `repair index` first), as does any error that is not damage (a network error).

With `disk_full` (the documented `--disk-full` flag) prune takes no lock and repacks nothing (both
write); it deletes packs no index lists first, and if writing the new index still fails it deletes the
unreferenced packs before writing it. The operator guarantees that nothing else uses the repository
until it has finished (if it is interrupted, run it again before the next backup).
"""

from __future__ import annotations

import os

from rdsbackup.errors import CorruptObject, MissingObject, RepositoryDamaged, RepositoryError, RestorePointNotFound
from rdsbackup.repository.crypto import AuthenticationFailed
from rdsbackup.repository.damage import record_damage, rewrite_damage
from rdsbackup.repository.index import CHUNK_RECORD, Index, encode_index, pack_id_from_key, pack_key
from rdsbackup.repository.locks import created_time, is_live, read_locks
from rdsbackup.repository.packs import Packer, Uploader
from rdsbackup.repository.streams import BLOCK_AD, StreamReader

INDEX_OBJECT_CHUNKS = 500_000


# Clock skew allowed between the hosts that write locks and the storage that stamps objects.
CLOCK_SKEW = 60.0


def young_pack_bound(repo, own_lock) -> float:
    """Packs modified at or after this time are not deleted by prune: the holder of a lock (a backup)
    may have written them and may still commit them. That is every pack written since the oldest lock
    object still present was taken, stale or not: a stale lock's holder may only be paused (it stops
    when it resumes, its lock lost, but its packs are not taken from under it meanwhile). Prune
    removes stale locks, so the next prune deletes such packs if nothing committed them."""
    bound = float("inf")
    own = own_lock.key if own_lock is not None else None
    for key, doc in read_locks(repo.backend, repo._keys):
        if key == own:
            continue
        created = created_time(doc)
        if created is not None:
            bound = min(bound, created)
    return bound - CLOCK_SKEW


def prune(repo, *, repack_below: float = 0.5, lock=None, rewrite: set[bytes] | None = None,
          disk_full: bool = False) -> dict:
    """See the module docstring. `rewrite`: pack ids whose live blocks move to new packs whatever
    their live share (repair, upgrade). Returns counts and `warnings` (damage found on the way)."""
    from rdsbackup.repository.repository import INDEX_AD

    backend = repo.backend
    index: Index = repo._index(reload=True)
    if repo.bad_index_objects:
        raise RepositoryDamaged("; ".join(repo.bad_index_objects.values()) + "; nothing pruned")
    old_index_keys = list(repo._index_keys)
    warnings: list[str] = []
    rewrite = rewrite or set()

    # 1. mark
    referenced: set[bytes] = set()
    reader = StreamReader(repo)
    rp_ids = repo._manifest_ids()
    damaged_points: dict[str, str] = {}
    for rp_id in rp_ids:
        try:
            manifest = repo._read_manifest(rp_id)
        except RestorePointNotFound:
            continue  # forgotten meanwhile (a forget needs no lock)
        except CorruptObject as exc:
            warnings.append(f"{exc}: skipped (`rdsbackup forget --restore-point {rp_id}` drops it)")
            continue
        reader.restore_point = rp_id
        for root_hex in manifest.get("stream_roots", []):
            try:
                for cid in reader.iter_ids(bytes.fromhex(root_hex), every_chunk=True):
                    referenced.add(cid)
            except (CorruptObject, MissingObject) as exc:
                damaged_points.setdefault(rp_id, str(exc))
    for rp_id, problem in damaged_points.items():
        warnings.append(f"restore point {rp_id} is damaged ({problem}): what it still references is kept; "
                        "`rdsbackup repair points` marks or removes it")
    live_blocks: set[int] = set()
    lost = 0
    for cid in list(referenced):
        loc = index.chunks.get(cid)
        if loc is None or loc < 0:
            referenced.discard(cid)  # lost (damaged or unindexed): nothing to keep
            lost += 1
            continue
        live_blocks.add(loc >> 48)
    if lost:
        warnings.append(f"{lost} chunk(s) that restore points reference are lost (damaged or missing from the "
                        "index): `rdsbackup verify` names the restore points")
    pack_total: dict[int, int] = {}
    pack_live: dict[int, int] = {}
    blocks_of: dict[int, list[int]] = {}
    for block_no in {loc >> 48 for loc in index.chunks.values()}:
        pack_no, _off, stored, _raw = index.blocks[block_no]
        pack_total[pack_no] = pack_total.get(pack_no, 0) + stored
        if block_no in live_blocks:
            pack_live[pack_no] = pack_live.get(pack_no, 0) + stored
            blocks_of.setdefault(pack_no, []).append(block_no)

    present: dict[bytes, tuple[str, int]] = {}
    modified: dict[bytes, float] = {}
    for key, size, mtime in backend.list_modified("data/"):
        pid = pack_id_from_key(key)
        if pid is not None:
            present[pid] = (key, size)
            modified[pid] = mtime

    keep_after = young_pack_bound(repo, lock)
    delete_packs: list[str] = []
    kept_young = 0
    freed = 0
    repack: list[int] = []
    for pid, (key, size) in present.items():
        pack_no = index.pack_numbers.get(pid)
        live = pack_live.get(pack_no, 0) if pack_no is not None else 0
        if live == 0:
            if modified[pid] >= keep_after:
                # Possibly written by a holder whose lock went stale but who has not noticed yet
                # (paused): never deleted while it could still be committed. A later prune takes it.
                kept_young += 1
                continue
            delete_packs.append(key)
            freed += size
        elif (live < size * repack_below or pid in rewrite) and not disk_full:
            repack.append(pack_no)
    missing_packs = [pack_no for pack_no in pack_live if index.packs[pack_no] not in present]
    if missing_packs:
        record_damage(backend, repo._keys, [{"pack": index.packs[p].hex(), "offset": None, "problem": "missing"}
                                            for p in missing_packs], "prune")
        for pack_no in missing_packs:
            warnings.append(f"pack {pack_key(index.packs[pack_no])} that restore points use is missing: recorded "
                            "as damaged; `rdsbackup verify` names the restore points")
        gone = set(missing_packs)
        referenced = {cid for cid in referenced if index.blocks[index.chunks.get(cid) >> 48][0] not in gone}

    # 2. repack
    repacked_bytes = 0
    new_packs: list[bytes] = []
    if repack:
        # The live chunks of the blocks that move, for the new packs' trailers.
        moving = {block_no for pack_no in repack for block_no in blocks_of[pack_no]}
        records_of: dict[int, bytearray] = {}
        for cid in referenced:
            block_no, off, length = Index.unpack_location(index.chunks.get(cid))
            if block_no in moving:
                records_of.setdefault(block_no, bytearray()).extend(CHUNK_RECORD.pack(cid, block_no, off, length))
        uploader = Uploader(backend, repo._stats, threads=repo.upload_threads)
        packer = Packer(index, uploader, repo._keys)
        try:
            for pack_no in repack:
                key = pack_key(index.packs[pack_no])
                data = backend.get(key)
                for block_no in sorted(blocks_of[pack_no], key=lambda b: index.blocks[b][1]):
                    _, off, stored, raw = index.blocks[block_no]
                    sealed = bytes(data[off : off + stored])
                    try:
                        repo._keys.open(sealed, BLOCK_AD, max_size=raw)
                    except AuthenticationFailed as exc:
                        raise CorruptObject(
                            f"pack {key} is corrupt: block at offset {off} failed authentication ({exc}); "
                            "nothing pruned",
                            object_name=key,
                        ) from None
                    packer.add_block(block_no, sealed, raw, bytes(records_of.get(block_no, b"")))
                delete_packs.append(key)
                freed += len(data)
                repacked_bytes += pack_live.get(pack_no, 0)
            packer.flush()
            new_packs = packer.new_packs
        finally:
            uploader.close()

    # 3. new index objects (live chunks only)
    live_ids = sorted(referenced)
    new_index_keys: list[str] = []
    deleted_early: list[str] = []  # disk_full: packs deleted before the new index was written
    sealed_objects = [repo._keys.seal(encode_index(index, live_ids[start : start + INDEX_OBJECT_CHUNKS]), INDEX_AD)
                      for start in range(0, len(live_ids), INDEX_OBJECT_CHUNKS)]
    if disk_full:
        # Packs that no index lists go first: nothing can reference them, so this is safe at any time.
        orphans = [key for pid, (key, _size) in present.items()
                   if pid not in index.pack_numbers and key in delete_packs]
        backend.delete_many(orphans)
        deleted_early += orphans
        delete_packs = [key for key in delete_packs if key not in set(orphans)]
    for n, sealed in enumerate(sealed_objects):
        key = f"index/{os.urandom(16).hex()}"
        try:
            repo._put(key, sealed)
        except RepositoryError:
            if not disk_full or n > 0 or not delete_packs:
                raise
            # Still no room: free it with the unreferenced packs, then write the index (see above).
            warnings.append("the new index could not be written for lack of space: unreferenced packs were "
                            "deleted first")
            backend.delete_many(delete_packs)
            deleted_early += delete_packs
            delete_packs = []
            repo._put(key, sealed)
        new_index_keys.append(key)

    # 4. old index objects, 5. packs. A prune paused past its refresh bound stops before deleting
    # anything: backups may have started meanwhile.
    if lock is not None:
        lock.check()
    backend.delete_many([k for k in old_index_keys if k not in new_index_keys])
    backend.delete_many(delete_packs)
    delete_packs += deleted_early

    stale = [(key, doc) for key, doc in read_locks(backend, repo._keys) if not is_live(doc)]
    stale_locks = [key for key, _doc in stale]
    if stale_locks:
        backend.delete_many(stale_locks)
    warnings += [f"{doc['owner']}: removed" for _key, doc in stale if doc.get("kind") == "unreadable"]

    # The damage registry keeps only what still exists.
    remaining = {pid for pid in present if pack_key(pid) not in set(delete_packs)} | set(new_packs)
    rewrite_damage(backend, repo._keys, repo.damage, remaining, set(repo._manifest_ids()))

    repo._index(reload=True)
    return {
        "restore_points": len(rp_ids),
        "chunks_kept": len(referenced),
        "chunks_removed": len(index.chunks) - len(referenced),
        "packs_deleted": len(delete_packs),
        "packs_repacked": len(repack),
        "packs_written": len(new_packs),
        "bytes_freed": freed,
        "bytes_repacked": repacked_bytes,
        "index_objects": len(new_index_keys),
        "stale_locks_removed": len(stale_locks),
        "young_packs_kept": kept_young,
        "damaged_restore_points": sorted(damaged_points),
        "warnings": warnings,
    }
