"""`rdsbackup repair index | packs | points`, each under the exclusive lock.

- index: rebuild the index from the packs' trailers (format 2 packs describe themselves). Packs
  without a trailer (format 1) keep the entries the readable index objects give them. The new index
  objects replace every old one, damaged ones included.
- packs: read every pack whole; blocks that do not authenticate (or whose chunks do not match their
  ids), and packs that are missing or truncated, are recorded in the damage registry; the readable
  live blocks of a damaged pack move to a new pack (a prune that rewrites those packs), so the damaged
  pack goes and nothing readable is lost. Later backups store the damaged chunks again.
- points: every restore point whose data is not all there (a chunk lost, damaged, or in a missing
  pack; a chunk list unreadable) is marked in the damage registry (`list` shows it as damaged), or
  with `forget=True` removed.
"""

from __future__ import annotations

import os

from rdsbackup.errors import CorruptObject, MissingObject, RestorePointNotFound
from rdsbackup.repository.crypto import AuthenticationFailed
from rdsbackup.repository.damage import record_damage
from rdsbackup.repository.index import Index, encode_index, pack_id_from_key, pack_key
from rdsbackup.repository.packs import TrailerMissing, read_trailer
from rdsbackup.repository.streams import StreamReader

INDEX_OBJECT_CHUNKS = 500_000


def repair_index(repo) -> dict:
    from rdsbackup.repository.repository import INDEX_AD

    report: list[str] = []
    with repo.exclusive_lock("repair index"):
        old_index = repo._index(reload=True)
        old_keys = list(repo._index_keys) + list(repo.bad_index_objects)
        rebuilt = Index()
        from_trailers = without_trailer = unreadable = 0
        for key, size in sorted(repo.backend.list("data/")):
            pid = pack_id_from_key(key)
            if pid is None:
                continue
            try:
                blocks = read_trailer(repo.backend, repo._keys, pid, size)
            except (TrailerMissing, AuthenticationFailed, ValueError) as exc:
                if _copy_pack_entries(old_index, rebuilt, pid):
                    without_trailer += 1
                    if not isinstance(exc, TrailerMissing):
                        report.append(f"pack {key}: trailer damaged ({exc}); its entries come from the old index")
                else:
                    unreadable += 1
                    report.append(f"pack {key}: no readable trailer ({exc}) and no index lists it: its data "
                                  "cannot be found (run `rdsbackup repair packs`)")
                continue
            except MissingObject:
                continue
            pack_no = rebuilt.add_pack(pid)
            for offset, stored, raw, chunks in blocks:
                if offset + stored > size:
                    report.append(f"pack {key}: block at offset {offset} lies beyond the end of the pack")
                    continue
                block_no = len(rebuilt.blocks)
                rebuilt.blocks.append((pack_no, offset, stored, raw))
                for cid, off, length in chunks:
                    rebuilt.chunks.add(cid, Index.location(block_no, off, length))
            from_trailers += 1
        ids = sorted(cid for cid, _loc in rebuilt.chunks.items())
        new_keys = []
        for start in range(0, len(ids), INDEX_OBJECT_CHUNKS):
            plain = encode_index(rebuilt, ids[start : start + INDEX_OBJECT_CHUNKS])
            key = f"index/{os.urandom(16).hex()}"
            repo._put(key, repo._keys.seal(plain, INDEX_AD))
            new_keys.append(key)
        repo.backend.delete_many([k for k in old_keys if k not in new_keys])
        repo._index(reload=True)
    return {"packs_from_trailers": from_trailers, "packs_from_old_index": without_trailer,
            "packs_unreadable": unreadable, "chunks": len(ids), "index_objects_written": len(new_keys),
            "index_objects_replaced": len(old_keys), "report": report}


def _copy_pack_entries(source: Index, target: Index, pid: bytes) -> bool:
    """Copy the chunks `source` places in pack `pid` into `target`; False if it places none."""
    pack_no = source.pack_numbers.get(pid)
    if pack_no is None:
        return False
    block_map: dict[int, int] = {}
    found = False
    new_pack = target.add_pack(pid)
    for cid, loc in source.chunks.items():
        block_no, off, length = Index.unpack_location(loc)
        entry = source.blocks[block_no]
        if entry[0] != pack_no:
            continue
        if block_no not in block_map:
            block_map[block_no] = len(target.blocks)
            target.blocks.append((new_pack, entry[1], entry[2], entry[3]))
        target.chunks.add(cid, Index.location(block_map[block_no], off, length))
        found = True
    return found


def repair_packs(repo) -> dict:
    from rdsbackup.repository.prune import prune
    from rdsbackup.repository.verify import verify

    with repo.exclusive_lock("repair packs") as lock:
        checked = verify(repo, read_data=True)  # records every damaged block and pack in the registry
        repo._index(reload=True)  # now without the damaged blocks
        damaged_packs = {bytes.fromhex(item["object"].rsplit("/", 1)[-1])
                         for item in checked["damaged"] if item["object"].startswith("data/")}
        result = prune(repo, lock=lock, rewrite=damaged_packs)
    report = [f"{item['object']}{'' if item['offset'] is None else ' block at offset ' + str(item['offset'])}: "
              f"{item['problem']} (restore points: {', '.join(item['restore_points']) or 'none'})"
              for item in checked["damaged"]]
    return {"damaged": checked["damaged"], "packs_rewritten": result["packs_repacked"],
            "packs_deleted": result["packs_deleted"], "prune": result, "report": report}


def repair_points(repo, *, forget: bool = False) -> dict:
    with repo.exclusive_lock("repair points"):
        index = repo._index(reload=True)
        present = {pack_id_from_key(key) for key, _size in repo.backend.list("data/")}
        reader = StreamReader(repo)
        damaged: dict[str, str] = {}
        ids = sorted(repo._manifest_ids())
        for rp_id in ids:
            try:
                manifest = repo._read_manifest(rp_id)
            except RestorePointNotFound:
                continue
            except CorruptObject as exc:
                damaged[rp_id] = str(exc)
                continue
            reader.restore_point = rp_id
            problem = None
            for root_hex in manifest.get("stream_roots", []):
                try:
                    for cid in reader.iter_ids(bytes.fromhex(root_hex), every_chunk=True):
                        loc = index.chunks.get(cid)
                        if loc is None or loc < 0:
                            why = index.damaged_chunks.get(cid, "not in the index")
                            problem = f"chunk {cid.hex()} is lost ({why})"
                            break
                        pid = index.packs[index.blocks[loc >> 48][0]]
                        if pid not in present:
                            problem = f"pack {pack_key(pid)} is missing"
                            break
                except (CorruptObject, MissingObject) as exc:
                    problem = str(exc)
                if problem:
                    break
            if problem:
                damaged[rp_id] = problem
        if forget:
            repo.backend.delete_many([f"manifests/{rp}" for rp in damaged])
        else:
            new = {rp: why for rp, why in damaged.items() if rp not in repo.damage.restore_points}
            record_damage(repo.backend, repo._keys,
                          [{"restore_point": rp, "problem": why} for rp, why in new.items()], "repair points")
    verb = "removed" if forget else "marked damaged"
    return {"restore_points": len(ids), "damaged": sorted(damaged), verb.replace(" ", "_"): len(damaged),
            "report": [f"restore point {rp} {verb}: {why}" for rp, why in sorted(damaged.items())]}
