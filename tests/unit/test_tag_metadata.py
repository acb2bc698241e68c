"""The encrypted tag library: round trip, every rejection, and AWS's tag limits."""

from __future__ import annotations

import boto3
import pytest
from rdsbackup_lambdas.errors import (
    TagLimitExceeded,
    TagMetadataIdentityMismatch,
    TagMetadataMissing,
    TagMetadataTampered,
    TagMetadataWrongKey,
)
from rdsbackup_lambdas.tag_metadata import (
    HEADER_KEY,
    MANAGED_KEY,
    MAX_TAGS_PER_RESOURCE,
    TagCodec,
    plan_tags,
    tags_as_dict,
    validate_tag,
)

ARN = "arn:aws:rds:us-east-1:123456789012:cluster-snapshot:rdsbackup-demo-ledger-20261125t031500-a1b2c3"
OTHER_ARN = "arn:aws:rds:us-east-1:123456789012:cluster-snapshot:rdsbackup-demo-ledger-20261126t031500-d4e5f6"
METADATA = {
    "policy": "demo", "session_id": "demo-20261125T031500-a1b2c3", "kind": "primary",
    "snapshot": {"arn": ARN}, "source": {"arn": "arn:aws:rds:us-east-1:123456789012:cluster:ledger"},
    "instances": [{"identifier": f"ledger-{i}", "class": "db.r6g.large", "promotion_tier": i} for i in range(3)],
}


@pytest.fixture
def codec(world) -> TagCodec:
    return TagCodec(boto3.client("kms", region_name="us-east-1"), world.tag_key_arn)


def _replace(tags: list[dict], key: str, value: str) -> list[dict]:
    return [{"Key": t["Key"], "Value": value if t["Key"] == key else t["Value"]} for t in tags]


def test_metadata_round_trips_through_tags(codec):
    tags = codec.encode(METADATA, ARN)
    assert codec.decode(tags, ARN) == METADATA


def test_plaintext_tags_say_only_that_the_snapshot_is_managed(codec):
    tags = tags_as_dict(codec.encode(METADATA, ARN))
    assert tags[MANAGED_KEY] == "true"
    readable = " ".join(tags.values())
    for secret in ("ledger-1", "db.r6g.large", "demo-20261125T031500"):
        assert secret not in readable


def test_encoded_tags_respect_aws_limits(codec):
    big = {**METADATA, "instances": [{"identifier": f"ledger-{i}", "class": "db.r6g.large", "note": "x" * 40}
                                     for i in range(15)]}
    tags = codec.encode(big, ARN)
    for tag in tags:
        validate_tag(tag["Key"], tag["Value"], ARN)  # raises if AWS would refuse it
        assert len(tag["Key"]) <= 128 and len(tag["Value"]) <= 256
    assert len(tags) <= MAX_TAGS_PER_RESOURCE


def test_altered_tag_is_rejected_as_tampered(codec):
    tags = codec.encode(METADATA, ARN)
    part = next(t for t in tags if t["Key"] == "rdsbackup:meta:01")
    flipped = ("A" if part["Value"][10] != "A" else "B")
    altered = _replace(tags, part["Key"], part["Value"][:10] + flipped + part["Value"][11:])
    with pytest.raises(TagMetadataTampered, match="altered"):
        codec.decode(altered, ARN)


def test_altered_header_is_rejected_as_tampered(codec):
    tags = codec.encode(METADATA, ARN)
    header = tags_as_dict(tags)[HEADER_KEY]
    with pytest.raises(TagMetadataTampered):
        codec.decode(_replace(tags, HEADER_KEY, header.replace("v1", "v9")), ARN)


def test_tags_moved_onto_another_snapshot_are_rejected(codec):
    tags = codec.encode(METADATA, ARN)
    with pytest.raises(TagMetadataIdentityMismatch, match="another snapshot"):
        codec.decode(tags, OTHER_ARN)


def test_moved_tags_with_a_forged_identity_fingerprint_fail_authentication(codec):
    tags = codec.encode(METADATA, ARN)
    forged_header = TagCodec(codec._kms, codec.key_arn)  # same key, compute the other snapshot's header
    other_header = tags_as_dict(forged_header.encode(METADATA, OTHER_ARN))[HEADER_KEY].split(" ")
    header = tags_as_dict(tags)[HEADER_KEY].split(" ")
    header[2] = other_header[2]
    with pytest.raises(TagMetadataTampered):
        codec.decode(_replace(tags, HEADER_KEY, " ".join(header)), OTHER_ARN)


def test_tags_made_under_another_key_are_rejected(world, codec):
    kms = boto3.client("kms", region_name="us-east-1")
    other = TagCodec(kms, kms.create_key()["KeyMetadata"]["Arn"])
    with pytest.raises(TagMetadataWrongKey, match="another KMS key"):
        codec.decode(other.encode(METADATA, ARN), ARN)


def test_wrong_key_is_detected_by_kms_even_with_a_forged_key_fingerprint(world, codec):
    kms = boto3.client("kms", region_name="us-east-1")
    other = TagCodec(kms, kms.create_key()["KeyMetadata"]["Arn"])
    tags = other.encode(METADATA, ARN)
    header = tags_as_dict(tags)[HEADER_KEY].split(" ")
    header[3] = tags_as_dict(codec.encode(METADATA, ARN))[HEADER_KEY].split(" ")[3]
    with pytest.raises(TagMetadataWrongKey):
        codec.decode(_replace(tags, HEADER_KEY, " ".join(header)), ARN)


def test_missing_part_is_reported_as_missing(codec):
    tags = [t for t in codec.encode(METADATA, ARN) if t["Key"] != "rdsbackup:meta:00"]
    with pytest.raises(TagMetadataMissing, match=r"part\(s\) \[0\]"):
        codec.decode(tags, ARN)


def test_forged_marker_without_metadata_is_reported_as_missing(codec):
    with pytest.raises(TagMetadataMissing, match="no rds-backup metadata"):
        codec.decode([{"Key": MANAGED_KEY, "Value": "true"}], ARN)


def test_fifty_tags_including_the_users_own_is_the_limit(codec):
    ours = codec.encode(METADATA, ARN)
    room = MAX_TAGS_PER_RESOURCE - len(ours)
    users = [{"Key": f"team{i}", "Value": "x"} for i in range(room)]
    plan_tags(users, ours, ARN)  # exactly 50: fine
    with pytest.raises(TagLimitExceeded, match="would carry 51 tags"):
        plan_tags([*users, {"Key": "one-more", "Value": "x"}], ours, ARN)


def test_encode_refuses_when_the_metadata_cannot_fit_beside_the_users_tags(codec):
    with pytest.raises(TagLimitExceeded, match="only 2 are free"):
        codec.encode(METADATA, ARN, max_tags=2)


def test_our_previous_tags_do_not_count_against_the_limit_and_stale_parts_are_removed(codec):
    old = [*codec.encode(METADATA, ARN), {"Key": "rdsbackup:meta:40", "Value": "stale"}]
    new = codec.encode(METADATA, ARN)
    add, remove = plan_tags([*old, {"Key": "owner", "Value": "me"}], new, ARN)
    assert add == new
    assert remove == ["rdsbackup:meta:40"]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("k", "v" * 257, "257-character value"),
        ("k" * 129, "v", "1..128"),
        ("k", "semi;colon", "characters AWS does not allow"),
        ("bad#key", "v", "characters AWS does not allow"),
        ("aws:thing", "v", "reserved prefix"),
    ],
)
def test_tags_aws_would_refuse_are_refused(key, value, message):
    with pytest.raises(TagLimitExceeded, match=message):
        validate_tag(key, value, ARN)


def test_allowed_characters_pass():
    validate_tag("rdsbackup:meta:00", "Ab09 _.:/=+-@" + "é", ARN)
    validate_tag("k", "v" * 256, ARN)
