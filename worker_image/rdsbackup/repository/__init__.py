"""The native backup repository: content-defined chunks, deduplicated, compressed, encrypted, packed.

    repo = Repository.init(url, kms_key_id=None, password=None)      # RepositoryExists if one is there
    repo = Repository.open(url, password=None)                       # KMS, or passphrase ($RDSBACKUP_PASSWORD)

    with repo.begin_backup(source_id="orders-db", engine="postgres") as writer:    # shared backup lock
        ref = writer.add_stream("db/shop/table/public.orders", source, profile="table")  # thread-safe
        # source: iterable of bytes or binary file-like object; profile "table" (~2 KiB chunks) or "bulk"
        # ref: {"blob": root chunk id (hex), "size", "chunks", "new_bytes", "profile"}
        rp_id = writer.commit({"source_id": ..., "streams": {...}})     # packs, index, then manifest
    # leaving the block without commit aborts: no manifest, lock released

    repo.list_restore_points(source_id=None)      # oldest first; unreadable manifests carry "error"
    repo.load_manifest(rp_id)                     # committed metadata + id, time, size, stream_roots, ...
    repo.open_stream(ref, restore_point=None)     # iterator of bytes, every chunk verified
    repo.read_stream_to(ref, fileobj, restore_point=None) -> int
    repo.verify(rp_id=None, read_data=False)      # shared lock; {"restore_points", ..., "errors": [str],
                                                  #   "damaged": [{"object", "problem", "restore_points"}]}
    repo.forget(keep_last=None, keep_days=None, source_id=None) -> [removed ids]   # per source, no lock
    repo.forget_restore_points([ids]) -> [removed ids]
    repo.prune(unsafe_disk_full=False) -> dict    # exclusive lock: RepositoryLocked while a backup runs
    with repo.shared_lock("restore", owner): ...  # what a restore holds (prune waits or fails meanwhile)
    with repo.exclusive_lock(owner): ...          # re-entrant: forget + prune under one lock
    repo.upgrade()                                # format 1 -> 2 (packs get trailers)
    rdsbackup.repository.repair: repair_index(repo), repair_packs(repo), repair_points(repo, forget=False)
    repo.lock_ttl, repo.lock_wait, repo.on_lock_wait, repo.lock_waits   # see locks.py for the numbers
    repo.copy_restore_point(rp_id, other_repo) -> new id   # a self-contained full in another repository
    repo.stats                                    # objects_written, bytes_written, puts since open

The format is described in docs/repository-format.md; errors are in rdsbackup.errors.
"""

from rdsbackup.repository.repository import FORMAT_VERSION, BackupWriter, Repository

__all__ = ["FORMAT_VERSION", "BackupWriter", "Repository"]
