"""Snapshot names derive from the session and are always valid RDS identifiers."""

from __future__ import annotations

import re

import pytest
from rdsbackup_lambdas.naming import is_valid_snapshot_id, snapshot_name
from rdsbackup_lambdas.selection import session_id_for


def test_name_is_policy_resource_and_session_suffix():
    name = snapshot_name("demo", "orders", "demo-20261125T031500-a1b2c3")
    assert name == "rdsbackup-demo-orders-20261125t031500-a1b2c3"
    assert snapshot_name("demo", "orders", "demo-20261125T031500-a1b2c3", role="staging").endswith("-staging")


@pytest.mark.parametrize(
    ("policy", "resource", "session"),
    [
        ("Daily_Prod", "Orders--DB-", "Daily_Prod-20261125T031500-a1b2c3"),
        ("p" * 200, "r" * 63, "p" * 200 + "-20261125T031500-a1b2c3"),
        ("x", "db", "--weird--session--"),
        ("9lives", "1db", "9lives-20261125T031500-abcdef"),
    ],
)
def test_names_are_valid_rds_identifiers(policy, resource, session):
    for role in ("", "staging"):
        name = snapshot_name(policy, resource, session, role=role)
        assert is_valid_snapshot_id(name), name
        assert len(name) <= 255 and "--" not in name and not name.endswith("-") and name[0].isalpha()


def test_long_names_are_shortened_with_a_stable_hash_that_keeps_them_distinct():
    long_policy = "p" * 200
    a = snapshot_name(long_policy, "r" * 63, f"{long_policy}-20261125T031500-a1b2c3")
    b = snapshot_name(long_policy, "r" * 62 + "s", f"{long_policy}-20261125T031500-a1b2c3")
    assert a != b and len(a) <= 255
    assert a == snapshot_name(long_policy, "r" * 63, f"{long_policy}-20261125T031500-a1b2c3")
    assert a.endswith("20261125t031500-a1b2c3")


def test_session_id_is_stable_per_execution_and_distinct_between_executions():
    first = session_id_for("demo", "exec-1", "2026-11-25T03:15:00.123Z")
    assert first == session_id_for("demo", "exec-1", "2026-11-25T03:15:00.123Z")
    assert first.startswith("demo-20261125T031500-")
    assert first != session_id_for("demo", "exec-2", "2026-11-25T03:15:00.123Z")


def test_the_temporary_bucket_name_cannot_be_predicted_without_the_deployments_secret():
    """Item 11 (docs/security.md): another account that knows the account and region still cannot create
    the bucket first; every step of one deployment computes the same name."""
    from rdsbackup_lambdas.image import names

    ours = names.temp_bucket_name("333333333333", "ap-southeast-2", "6f1d2c40-ad51-11ef-8b3e-0e2f5a9c7d11")
    assert ours == names.temp_bucket_name("333333333333", "ap-southeast-2", "6f1d2c40-ad51-11ef-8b3e-0e2f5a9c7d11")
    assert ours.startswith("rdsbackup-tmp-333333333333-ap-southeast-2-")
    assert ours != names.temp_bucket_name("333333333333", "ap-southeast-2", "another-deployment")
    assert len(ours) <= 63 and re.fullmatch(r"[a-z0-9][a-z0-9-]*[a-z0-9]", ours)
    with pytest.raises(ValueError, match="TEMP_BUCKET_SECRET"):
        names.temp_bucket_name("333333333333", "ap-southeast-2", "")
