"""Prune: delete what no restore point references. Runs under the exclusive lock.

Order (each step leaves a repository that reads correctly if the process dies right after it):
1. mark: every chunk reachable from a manifest (roots, chunk lists, data);
2. repack: live blocks of mostly-dead packs are copied, unchanged, into new packs (uploaded);
3. write the new index objects (live chunks only, pointing at the new packs);
4. delete the old index objects;
5. delete unreferenced, repacked and orphaned packs (packs that no index lists: interrupted backups).
A crash before 4 leaves duplicate index entries (harmless); between 4 and 5 it leaves packs no index
lists, which the next prune deletes.
"""

from __future__ import annotations

import os
import time

from rdsbackup.errors import CorruptObject, RepositoryError
from rdsbackup.repository.crypto import AuthenticationFailed
from rdsbackup.repository.index import Index, encode_index, pack_id_from_key, pack_key
from rdsbackup.repository.locks import read_locks
from rdsbackup.repository.packs import Packer, Uploader
from rdsbackup.repository.streams import BLOCK_AD, StreamReader

INDEX_OBJECT_CHUNKS = 500_000


def prune(repo, *, repack_below: float = 0.5) -> dict:
    from rdsbackup.repository.repository import INDEX_AD

    backend = repo.backend
    index: Index = repo._index(reload=True)
    old_index_keys = list(repo._index_keys)

    # 1. mark
    referenced: set[bytes] = set()
    reader = StreamReader(repo)
    rp_ids = repo._manifest_ids()
    for rp_id in rp_ids:
        manifest = repo._read_manifest(rp_id)  # an unreadable manifest stops prune: it may reference data
        reader.restore_point = rp_id
        for root_hex in manifest.get("stream_roots", []):
            for cid in reader.iter_ids(bytes.fromhex(root_hex), every_chunk=True):
                referenced.add(cid)
    live_blocks: set[int] = set()
    for cid in referenced:
        loc = index.chunks.get(cid)
        if loc is None or loc < 0:
            raise RepositoryError(f"chunk {cid.hex()} of a restore point is not indexed: run verify; nothing pruned")
        live_blocks.add(loc >> 48)
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
    for key, size in backend.list("data/"):
        pid = pack_id_from_key(key)
        if pid is not None:
            present[pid] = (key, size)

    delete_packs: list[str] = []
    freed = 0
    repack: list[int] = []
    for pid, (key, size) in present.items():
        pack_no = index.pack_numbers.get(pid)
        live = pack_live.get(pack_no, 0) if pack_no is not None else 0
        if live == 0:
            delete_packs.append(key)
            freed += size
        elif live < size * repack_below:
            repack.append(pack_no)
    for pack_no in pack_live:
        if index.packs[pack_no] not in present:
            raise RepositoryError(
                f"pack {pack_key(index.packs[pack_no])} of a restore point is missing: run verify; nothing pruned"
            )

    # 2. repack
    repacked_bytes = 0
    new_packs: list[bytes] = []
    if repack:
        uploader = Uploader(backend, repo._stats, threads=repo.upload_threads)
        packer = Packer(index, uploader)
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
                    packer.add_block(block_no, sealed, raw)
                delete_packs.append(key)
                freed += len(data)
                repacked_bytes += pack_live.get(pack_no, 0)
            packer.flush()
            new_packs = packer.new_packs
        finally:
            uploader.close()

    # 3. new index objects (live chunks only)
    live_ids = sorted(referenced)
    new_index_keys = []
    for start in range(0, len(live_ids), INDEX_OBJECT_CHUNKS):
        plain = encode_index(index, live_ids[start : start + INDEX_OBJECT_CHUNKS])
        key = f"index/{os.urandom(16).hex()}"
        repo._put(key, repo._keys.seal(plain, INDEX_AD))
        new_index_keys.append(key)

    # 4. old index objects, 5. packs
    backend.delete_many([k for k in old_index_keys if k not in new_index_keys])
    backend.delete_many(delete_packs)

    stale_locks = [key for key, doc in read_locks(backend, repo._keys) if float(doc.get("expires", 0)) < time.time()]
    if stale_locks:
        backend.delete_many(stale_locks)

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
    }
