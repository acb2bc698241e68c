"""Tag metadata is bound to the snapshot's creation time and source resource id (issue 14 item 8)."""

from datetime import UTC, datetime

import pytest
from rdsbackup_lambdas.errors import TagMetadataIdentityMismatch
from rdsbackup_lambdas.metadata_binding import binding_of, check_binding
from rdsbackup_lambdas.snapshots import SnapshotInfo

ARN = "arn:aws:rds:us-east-1:111111111111:snapshot:rdsbackup-demo-orders-s1"


def _info(created: datetime | None, resource_id: str = "db-ABC") -> SnapshotInfo:
    return SnapshotInfo(arn=ARN, id="rdsbackup-demo-orders-s1", kind="instance", status="available", encrypted=True,
                        kms_key_id=None, source_id="orders", created=created, raw={"DbiResourceId": resource_id})


def test_metadata_of_the_same_snapshot_is_trusted():
    made = _info(datetime(2026, 11, 25, 3, 15, 0, 123000, tzinfo=UTC))
    check_binding({"binding": binding_of(made)}, _info(datetime(2026, 11, 25, 3, 15, 0, 456000, tzinfo=UTC)))


def test_a_snapshot_recreated_under_the_same_name_later_is_refused():
    made = _info(datetime(2026, 11, 25, 3, 15, tzinfo=UTC))
    with pytest.raises(TagMetadataIdentityMismatch, match="name was reused"):
        check_binding({"binding": binding_of(made)}, _info(datetime(2026, 11, 26, 3, 15, tzinfo=UTC)))


def test_a_snapshot_of_a_recreated_database_is_refused():
    made = _info(datetime(2026, 11, 25, 3, 15, tzinfo=UTC), "db-OLD")
    with pytest.raises(TagMetadataIdentityMismatch, match="database resource db-OLD"):
        check_binding({"binding": binding_of(made)}, _info(datetime(2026, 11, 25, 3, 15, tzinfo=UTC), "db-NEW"))


def test_metadata_without_a_binding_is_not_trusted():
    with pytest.raises(TagMetadataIdentityMismatch, match="no creation time"):
        check_binding({"kind": "primary"}, _info(None))
