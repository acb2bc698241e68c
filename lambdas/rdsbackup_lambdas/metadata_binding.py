"""Binding tag metadata to one snapshot's life, not only its name.

The metadata is authenticated and bound to the snapshot ARN (rdsbackup_lambdas.tag_metadata), but a
name can be reused: delete a managed snapshot, create another under the same name and replay the old
tags, and the ARN binding alone would accept them. So the metadata also records the snapshot's creation
time and the resource id of the database it was taken from (``DbiResourceId``/``DbClusterResourceId``,
which a database recreated under the same name does not keep), and retention and replication check both
before they trust it. Metadata without the binding (written before it existed) is not trusted: retention
leaves such snapshots alone.
"""

from __future__ import annotations

from typing import Any

from rdsbackup_lambdas.errors import TagMetadataIdentityMismatch
from rdsbackup_lambdas.snapshots import SnapshotApi, SnapshotInfo
from rdsbackup_lambdas.tag_metadata import TagCodec

BINDING_KEY = "binding"


def _created(info: SnapshotInfo) -> str | None:
    # to the second: a copy of the value RDS reports, whatever sub-second precision it shows
    return info.created.strftime("%Y-%m-%dT%H:%M:%SZ") if info.created else None


def resource_id(info: SnapshotInfo) -> str | None:
    """The source database's resource id as the snapshot records it."""
    return info.raw.get("DbiResourceId") or info.raw.get("DbClusterResourceId")


def binding_of(info: SnapshotInfo) -> dict[str, Any]:
    """What the metadata of ``info`` records about its life (written by tag_snapshot and replication)."""
    return {"created": _created(info), "resource_id": resource_id(info)}


def check_binding(metadata: dict[str, Any], info: SnapshotInfo) -> None:
    """Raise ``TagMetadataIdentityMismatch`` unless ``metadata`` was written for this very snapshot."""
    recorded = metadata.get(BINDING_KEY)
    if not isinstance(recorded, dict):
        raise TagMetadataIdentityMismatch(
            f"the metadata on {info.arn} records no creation time or resource id; not trusted")
    now = binding_of(info)
    # a copy tagged while RDS was still making it had no creation time yet: its resource id still binds it
    if recorded.get("created") is not None and recorded["created"] != now["created"]:
        raise TagMetadataIdentityMismatch(
            f"the metadata on {info.arn} was made for a snapshot created {recorded['created']}, not this one "
            f"(created {now['created']}): the name was reused; not trusted")
    if recorded.get("resource_id") != now["resource_id"]:
        raise TagMetadataIdentityMismatch(
            f"the metadata on {info.arn} was made for a snapshot of database resource {recorded.get('resource_id')}, "
            f"this one is of {now['resource_id']}; not trusted")


def trusted_metadata(api: SnapshotApi, codec: TagCodec, info: SnapshotInfo,
                     tags: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """The snapshot's metadata, decoded, authenticated and checked against its creation time and source."""
    metadata = codec.decode(tags if tags is not None else api.tags(info), info.arn)
    check_binding(metadata, info)
    return metadata
