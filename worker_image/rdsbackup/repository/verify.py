"""verify: is every restore point whole, and (with read_data) does every byte authenticate?

Structure: every manifest opens, every chunk list resolves, every chunk is in the index and its pack
exists and is long enough. Read data: every block of the packs involved authenticates and every chunk
matches its id. Damage found is named with **every** restore point it affects (a second walk over the
restore points, only when something is damaged), and recorded in the damage registry so that later
backups store the damaged chunks again.
"""

from __future__ import annotations

from rdsbackup.errors import CorruptObject, MissingObject, RestorePointNotFound
from rdsbackup.repository.crypto import AuthenticationFailed
from rdsbackup.repository.damage import record_damage
from rdsbackup.repository.index import Index, pack_id_from_key, pack_key
from rdsbackup.repository.streams import BLOCK_AD, StreamReader

WHOLE_PACK = -1  # the offset that stands for a whole pack (missing, truncated)


def verify(repo, rp_id: str | None = None, *, read_data: bool = False) -> dict:
    """{"restore_points", "objects", "packs", "unindexed_packs", "chunks", "bytes_read", "errors": [str],
    "damaged": [{"object", "offset", "problem", "restore_points"}]}. Never raises for damage."""
    errors: list[str] = []
    damaged_report: list[dict] = []
    report = {"restore_points": 0, "objects": 0, "packs": 0, "unindexed_packs": 0, "chunks": 0,
              "bytes_read": 0, "errors": errors, "damaged": damaged_report}
    index = repo._index(reload=True)
    errors.extend(repo.bad_index_objects.values())
    errors.extend(repo.damage.unreadable)
    report["objects"] += len(repo._index_keys)
    present: dict[bytes, int] = {}
    for key, size in repo.backend.list("data/"):
        pid = pack_id_from_key(key)
        if pid is not None:
            present[pid] = size
    rp_ids = [rp_id] if rp_id else sorted(repo._manifest_ids())

    # (pack number, block offset or WHOLE_PACK) -> problem; chunk id -> problem for unindexed chunks
    damaged: dict[tuple[int, int], str] = {}
    lost: dict[bytes, str] = {}
    unreadable_points: dict[str, str] = {}
    used_packs: set[int] = set()
    checked: set[bytes] = set()
    manifests: dict[str, dict] = {}
    reader = StreamReader(repo)
    for rid in rp_ids:
        try:
            manifest = repo._read_manifest(rid)
        except RestorePointNotFound:
            if rp_id:
                raise
            continue
        except CorruptObject as exc:
            errors.append(f"{exc}: `rdsbackup forget --restore-point {rid}` drops it")
            continue
        manifests[rid] = manifest
        report["restore_points"] += 1
        report["objects"] += 1
        reader.restore_point = rid
        for root_hex in manifest.get("stream_roots", []):
            try:
                for cid in reader.iter_ids(bytes.fromhex(root_hex)):
                    if cid in checked:
                        continue
                    checked.add(cid)
                    loc = index.chunks.get(cid)
                    if loc is None or loc < 0:
                        lost[cid] = index.damaged_chunks.get(cid, "not in the index")
                        continue
                    block_no, off, length = Index.unpack_location(loc)
                    pack_no, boff, stored, raw = index.blocks[block_no]
                    used_packs.add(pack_no)
                    size = present.get(index.packs[pack_no])
                    if size is None:
                        damaged[(pack_no, WHOLE_PACK)] = "missing"
                    elif boff + stored > size or off + length > raw:
                        damaged[(pack_no, WHOLE_PACK)] = "truncated"
            except (CorruptObject, MissingObject) as exc:
                place = _missing_pack(index, exc)
                if place is not None:
                    damaged[place] = "missing"  # named with all its restore points below
                    break
                unreadable_points[rid] = str(exc)
                errors.append(f"restore point {rid}: {exc}")
    report["chunks"] = len(checked)
    if read_data:
        wanted = used_packs if rp_id else set(range(len(index.packs)))
        wanted -= {p for p, off in damaged if off == WHOLE_PACK}
        _read_packs(repo, index, wanted, present, damaged, report)

    if damaged or lost:
        users = _affected_points(repo, index, manifests, damaged, lost)
        for (pack_no, off), problem in sorted(damaged.items()):
            key = pack_key(index.packs[pack_no])
            names = sorted(users.get((pack_no, off), ()))
            where = "" if off == WHOLE_PACK else f" block at offset {off}"
            errors.append(f"pack {key} is {problem}{'' if off == WHOLE_PACK else ':'}{where} "
                          f"(restore points: {', '.join(names) or 'none'})")
            damaged_report.append({"object": key, "offset": None if off == WHOLE_PACK else off,
                                   "problem": problem, "restore_points": names})
        by_problem: dict[str, set[str]] = {}
        for cid, problem in lost.items():
            by_problem.setdefault(problem, set()).update(users.get(cid, ()))
        for problem, names in sorted(by_problem.items()):
            n = sum(1 for p in lost.values() if p == problem)
            text = "are not in the index" if problem == "not in the index" else f"are damaged ({problem})"
            errors.append(f"{n} chunk(s) {text} (restore points: {', '.join(sorted(names)) or 'none'})")
            damaged_report.append({"object": f"{n} chunk(s)", "offset": None, "problem": problem,
                                   "restore_points": sorted(names)})
        new_entries = [
            {"pack": index.packs[p].hex(), "offset": None if off == WHOLE_PACK else off, "problem": problem}
            for (p, off), problem in damaged.items()
            if repo.damage.problem(index.packs[p], off) is None
        ]
        record_damage(repo.backend, repo._keys, new_entries, "verify")
    for rid, problem in sorted(repo.damage.restore_points.items()):
        if rid in manifests:
            damaged_report.append({"object": f"restore point {rid}", "offset": None, "problem": problem,
                                   "restore_points": [rid]})
    report["packs"] = len(present) if not rp_id else len(used_packs)
    # Packs no index lists (left by interrupted backups) are not damage; prune deletes them.
    report["unindexed_packs"] = sum(1 for pid in present if pid not in index.pack_numbers)
    return report


def _read_packs(repo, index: Index, wanted: set[int], present: dict, damaged: dict, report: dict) -> None:
    """Read every wanted pack whole; every block must authenticate and every chunk match its id."""
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
        if pid not in present:
            damaged[(pack_no, WHOLE_PACK)] = "missing"
            continue
        try:
            data = repo.backend.get(pack_key(pid))
        except MissingObject:
            damaged[(pack_no, WHOLE_PACK)] = "missing"
            continue
        report["bytes_read"] += len(data)
        report["objects"] += 1
        for block_no in sorted(by_pack.get(pack_no, ())):
            _, off, stored, raw = index.blocks[block_no]
            if off + stored > len(data):
                damaged[(pack_no, WHOLE_PACK)] = "truncated"
                break
            try:
                plain = repo._keys.open(memoryview(data)[off : off + stored], BLOCK_AD, max_size=raw)
            except AuthenticationFailed as exc:
                damaged[(pack_no, off)] = f"corrupt: block failed authentication ({exc})"
                continue
            for cid, coff, length in by_block[block_no]:
                if repo._keys.chunk_id(plain[coff : coff + length]) != cid:
                    damaged[(pack_no, off)] = f"corrupt: chunk {cid.hex()} does not match its id"
                    break


def _affected_points(repo, index: Index, manifests: dict, damaged: dict, lost: dict) -> dict:
    """For every damaged (pack, offset) and lost chunk id: the restore points that need it."""
    users: dict = {}
    reader = StreamReader(repo)
    for rid, manifest in manifests.items():
        reader.restore_point = rid
        for root_hex in manifest.get("stream_roots", []):
            try:
                for cid in reader.iter_ids(bytes.fromhex(root_hex), every_chunk=True):
                    if cid in lost:
                        users.setdefault(cid, set()).add(rid)
                        continue
                    loc = index.chunks.get(cid)
                    if loc is None or loc < 0:
                        continue
                    pack_no, boff, _, _ = index.blocks[loc >> 48]
                    for place in ((pack_no, WHOLE_PACK), (pack_no, boff)):
                        if place in damaged:
                            users.setdefault(place, set()).add(rid)
            except (CorruptObject, MissingObject) as exc:
                place = _missing_pack(index, exc)
                if place is not None:
                    users.setdefault(place, set()).add(rid)
                continue  # anything else was reported by the first walk
    return users


def _missing_pack(index: Index, exc: Exception) -> tuple[int, int] | None:
    """(pack number, WHOLE_PACK) when `exc` says an indexed pack is missing (a chunk list or root in it)."""
    name = getattr(exc, "object_name", None) or ""
    if not isinstance(exc, MissingObject) or not name.startswith("data/"):
        return None
    pack_no = index.pack_numbers.get(pack_id_from_key(name))
    return None if pack_no is None else (pack_no, WHOLE_PACK)
