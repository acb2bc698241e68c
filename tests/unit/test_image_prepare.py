"""prepare_worker: the two temporary groups exactly, the DB's groups, credentials, engines, idempotence."""

from __future__ import annotations

from unittest import mock

import botocore.client
import pytest
from botocore.exceptions import ClientError
from rdsbackup_lambdas.errors import CredentialsNotFound, EngineNotSupported, SecurityGroupError, WorkerFailed
from rdsbackup_lambdas.handlers import prepare_worker
from rdsbackup_lambdas.image import names

from tests.unit.image_support import net_fixture  # noqa: F401 (the net fixture)

_real_make_api_call = botocore.client.BaseClient._make_api_call


def tags_of(group: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in group.get("Tags", [])}


def rules(perms: list[dict]) -> list[tuple]:
    """(protocol, from, to, group ids, cidrs) of each permission, sorted, for exact comparisons."""
    return sorted(
        (p["IpProtocol"], p.get("FromPort"), p.get("ToPort"),
         tuple(sorted(g["GroupId"] for g in p.get("UserIdGroupPairs", []))),
         tuple(sorted(r["CidrIp"] for r in p.get("IpRanges", []))))
        for p in perms
    )


def test_groups_allow_only_worker_to_db_on_the_db_port(net, ctx):
    item = net.item(net.instance())
    image = prepare_worker.handler(item, ctx)
    db_sg, worker_sg = image["db_security_group"], image["worker_security_group"]
    db_group, worker_group = net.group(db_sg), net.group(worker_sg)
    assert db_group["VpcId"] == worker_group["VpcId"] == net.vpc
    # DB group: inbound only from the worker group on 5432; no outbound (default egress revoked).
    assert rules(db_group["IpPermissions"]) == [("tcp", 5432, 5432, (worker_sg,), ())]
    assert db_group["IpPermissionsEgress"] == []
    # Worker group: no inbound; outbound only to the DB group on 5432, plus HTTPS for AWS endpoints.
    assert worker_group["IpPermissions"] == []
    assert rules(worker_group["IpPermissionsEgress"]) == [
        ("tcp", 443, 443, (), ("0.0.0.0/0",)), ("tcp", 5432, 5432, (db_sg,), ())]
    for group in (db_group, worker_group):
        tags = tags_of(group)
        assert tags["rdsbackup:temporary"] == "true" and tags["rdsbackup:session"] == item["session_id"]
        assert tags["rdsbackup:resource"] == item["resource"]["arn"]
        assert names.parse_iso(tags["rdsbackup:created-at"]) is not None
        assert len(group["GroupName"]) <= 255 and item["session_id"] in group["GroupName"]


def test_worker_https_goes_only_to_the_vpc_endpoints_the_config_names(net, ctx):
    """image_backup.worker.egress: HTTPS to the S3 gateway endpoint's prefix list and the interface
    endpoints' group, nothing to anywhere else; the DB rule stays."""
    ec2 = net.ec2()
    prefix_list = ec2.create_managed_prefix_list(PrefixListName="s3", AddressFamily="IPv4", MaxEntries=2,
                                                 Entries=[{"Cidr": "52.216.0.0/15"}])["PrefixList"]["PrefixListId"]
    endpoints = ec2.create_security_group(GroupName="vpc-endpoints", Description="interface endpoints",
                                          VpcId=net.vpc)["GroupId"]
    item = net.item(net.instance(), egress={"prefix_lists": [prefix_list], "security_groups": [endpoints]})
    image = prepare_worker.handler(item, ctx)
    egress = net.group(image["worker_security_group"])["IpPermissionsEgress"]

    def destinations(perms):
        return sorted((p["IpProtocol"], p["FromPort"], target) for p in perms for target in
                      [g["GroupId"] for g in p.get("UserIdGroupPairs", [])]
                      + [pl["PrefixListId"] for pl in p.get("PrefixListIds", [])]
                      + [r["CidrIp"] for r in p.get("IpRanges", [])])

    assert destinations(egress) == sorted([("tcp", 443, prefix_list), ("tcp", 443, endpoints),
                                           ("tcp", 5432, image["db_security_group"])])  # no 0.0.0.0/0
    # a retried prepare adds nothing twice
    prepare_worker.handler(item, ctx)
    assert destinations(net.group(image["worker_security_group"])["IpPermissionsEgress"]) == destinations(egress)


def test_result_describes_the_db_and_names_the_managed_secret(net, ctx):
    db = net.instance()
    image = prepare_worker.handler(net.item(db), ctx)
    assert image["phase"] == "prepared" and image["engine"] == "postgres"
    assert image["endpoint"] == db["Endpoint"]["Address"] and image["port"] == 5432
    assert image["secret_arn"] == db["MasterUserSecret"]["SecretArn"]
    assert image["subnets"] == net.subnets and image["temp_bucket"] is None
    assert "password" not in str(image).lower()


def test_db_keeps_its_own_groups_and_gets_ours(net, ctx):
    image = prepare_worker.handler(net.item(net.instance()), ctx)
    assert net.groups_of("orders") == [net.db_group, image["db_security_group"]]


def test_retried_prepare_reuses_groups_and_rules(net, ctx):
    item = net.item(net.instance())
    first = prepare_worker.handler(item, ctx)
    second = prepare_worker.handler(item, ctx)
    assert (first["db_security_group"], first["worker_security_group"]) == (
        second["db_security_group"], second["worker_security_group"])
    assert len(net.temporary_groups()) == 2
    assert net.groups_of("orders") == [net.db_group, first["db_security_group"]]
    assert len(net.group(first["worker_security_group"])["IpPermissionsEgress"]) == 2


def test_two_resources_of_one_session_get_their_own_groups(net, ctx):
    a = prepare_worker.handler(net.item(net.instance("orders")), ctx)
    b = prepare_worker.handler(net.item(net.instance("billing")), ctx)
    assert len({a["db_security_group"], b["db_security_group"], a["worker_security_group"],
                b["worker_security_group"]}) == 4


def test_aurora_cluster_gets_the_group_on_the_cluster(net, ctx):
    cluster = net.cluster()
    image = prepare_worker.handler(net.item(cluster), ctx)
    assert image["endpoint"] == cluster["Endpoint"] and image["port"] == 5432
    assert image["secret_arn"] == cluster["MasterUserSecret"]["SecretArn"]
    assert net.groups_of("ledger", "cluster") == [net.db_group, image["db_security_group"]]


def test_missing_credentials_say_how_to_fix_and_create_nothing(net, ctx):
    item = net.item(net.instance(managed_secret=False))
    with pytest.raises(CredentialsNotFound, match=r"manage-master-user-password.*image_backup\.secret_arn"):
        prepare_worker.handler(item, ctx)
    assert net.temporary_groups() == []


def test_policy_secret_is_used_when_given(net, ctx):
    item = net.item(net.instance(managed_secret=False))
    secret = "arn:aws:secretsmanager:us-east-1:123456789012:secret:orders-backup-AbCdEf"
    item["image_backup"]["secret_arn"] = secret
    assert prepare_worker.handler(item, ctx)["secret_arn"] == secret


def test_unsupported_engine_fails_before_creating_anything(net, ctx):
    item = net.item(net.instance(engine="mysql"))
    with pytest.raises(EngineNotSupported, match="'mysql'"):
        prepare_worker.handler(item, ctx)
    assert net.temporary_groups() == []


def test_worker_subnets_must_be_in_the_db_vpc(net, ctx):
    item = net.item(net.instance(), subnets=[net.other_vpc_subnet])
    with pytest.raises(WorkerFailed, match="not in the VPC"):
        prepare_worker.handler(item, ctx)


def test_worker_subnets_from_the_settings_are_used(net, ctx):
    item = net.item(net.instance(), subnets=[net.subnets[1]])
    assert prepare_worker.handler(item, ctx)["subnets"] == [net.subnets[1]]


def test_group_creation_failure_is_a_security_group_error(net, ctx):
    def fake(self, operation_name, params):
        if operation_name == "CreateSecurityGroup":
            raise ClientError({"Error": {"Code": "SecurityGroupLimitExceeded", "Message": "limit"}}, operation_name)
        return _real_make_api_call(self, operation_name, params)

    item = net.item(net.instance())
    with mock.patch("botocore.client.BaseClient._make_api_call", fake), \
            pytest.raises(SecurityGroupError, match="SecurityGroupLimitExceeded"):
        prepare_worker.handler(item, ctx)
    assert net.groups_of("orders") == [net.db_group]
