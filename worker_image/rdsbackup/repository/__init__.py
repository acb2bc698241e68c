"""The native backup repository: content-defined chunks, deduplicated, compressed, encrypted, packed.

    repo = Repository.init(url, kms_key_id=None, password=None)
    repo = Repository.open(url, password=None)
    with repo.begin_backup(source_id="orders-db", engine="postgres") as writer:
        ref = writer.add_stream("db/shop/table/public.orders", source, profile="table")
        rp_id = writer.commit({"source_id": ..., "streams": {...}})
    repo.list_restore_points(source_id=None); repo.load_manifest(rp_id)
    repo.open_stream(ref); repo.read_stream_to(ref, fileobj)
    repo.verify(rp_id=None, read_data=False); repo.forget(keep_last=..., keep_days=...); repo.prune()

The format is described in docs/repository-format.md.
"""

from rdsbackup.repository.repository import FORMAT_VERSION, BackupWriter, Repository

__all__ = ["FORMAT_VERSION", "BackupWriter", "Repository"]
