"""Every config field has an effect: changing it changes the policies the handlers read (the runtime
policies in the code package, the handlers' environment) or the synthesized templates. A field added to the config
model without either fails this test, so no setting is accepted and then ignored.

The model is walked field by field. Fields the handlers see are proven one at a time against the
runtime policies (cheap); fields that only shape resources are changed all at once, each to a value
that appears nowhere else, and each value is looked for in the synthesized templates (two synths)."""

from __future__ import annotations

import copy
import functools
import json
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from infra.config import BackupConfig, parse_config
from infra.topology import Place, build_topology, runtime_policies
from rdsbackup_local.synth import synthesize

ACCOUNT, REGION = "123456789012", "us-east-1"
RESTORE_TEST_SCHEDULE = "rdsbackup-test-full"

BASE = {
    "control": {"account": ACCOUNT, "region": REGION},
    "notification_emails": ["dba@example.com"],
    "repositories": {"main": {"object_lock_days": 3}, "cold": {"storage_class": "GLACIER"}},
    "maintenance_network": {"subnets": ["subnet-0a"], "security_groups": ["sg-0a"], "assign_public_ip": False},
    "policies": [
        {
            "name": "full",
            "schedule": {"expression": "cron(0 3 * * ? *)", "timezone": "UTC"},
            "selection": {"resources": ["orders-db"], "tags": {"backup": "full"}},
            "snapshot_retention": 7,
            "image_backup": {"repository": "main", "retention": {"keep_last": 7, "keep_days": 30},
                             "secret_arn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:db",
                             "worker": {"subnets": ["subnet-0b"]}},
            "archive": {"repository": "cold", "after_days": 7, "retention_days": 365,
                        "gfs": {"weekly": 4, "monthly": 12, "yearly": 3}},
            "maintenance": {},
            "rpo": "36h",
            "restore_test": {"sample": 2, "instance_class": "db.t4g.small"},
        },
        {
            "name": "copies",
            "schedule": {"expression": "cron(0 4 * * ? *)"},
            "selection": {"tags": {"backup": "copies"}, "accounts": ["222222222222"], "regions": ["us-east-1"]},
            "snapshot_retention": 3,
            "replication": {"region": "eu-west-1", "account": "333333333333", "retention": 2,
                            "kms_key_arn": "arn:aws:kms:eu-west-1:333333333333:key/abc"},
            "image_backup": {"repository": "main",
                             "worker": {"launch_type": "EC2", "capacity_provider": "workers-asg"}},
        },
        {
            # snapshot-only, its restore tests on a test worker of its own
            "name": "snaps",
            "schedule": {"expression": "cron(0 2 * * ? *)"},
            "selection": {"resources": ["ledger-db"]},
            "snapshot_retention": 3,
            "restore_test": {"worker": {
                "results_repository": "main", "launch_type": "EC2", "capacity_provider": "tests-asg",
                "secret_arn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:ledger"}},
        },
    ],
}

# How each field is changed. A value is a replacement; a callable takes the config and changes it.
_FULL, _COPIES, _SNAPS = 0, 1, 2


def _policy(index: int, path: str, value):
    def change(config: dict) -> None:
        node = config["policies"][index]
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return change


def _top(path: str, value):
    def change(config: dict) -> None:
        node = config
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return change


def _repository(name: str, field: str, value):
    def change(config: dict) -> None:
        config["repositories"][name][field] = value
    return change


def _schedule(index: int, section: str, key: str, value, default: str):
    """Change one key of a section's schedule, keeping (or giving) it an expression."""
    def change(config: dict) -> None:
        schedule = config["policies"][index].setdefault(section, {}).setdefault("schedule", {})
        schedule.setdefault("expression", default)
        schedule[key] = value
    return change


def _place(field: str, value):
    """Change one field of a raised-limits place (made on first use)."""
    def change(config: dict) -> None:
        places = config.setdefault("limits", {}).setdefault("places", [])
        if not places:
            places.append({"account": "888888888888", "region": "ca-central-1"})
        places[0][field] = value
    return change


def _rename_policy(config: dict) -> None:
    config["policies"][_FULL]["name"] = "renamed"


CHANGES = {
    "control.account": _top("control.account", "444444444444"),
    "control.region": _top("control.region", "us-west-2"),
    "control.organization_id": _top("control.organization_id", "o-markerorg12"),
    "deployment.name_prefix": _top("deployment.name_prefix", "markerpfx"),
    "break_glass_role_arn": _top("break_glass_role_arn", "arn:aws:iam::444444444444:role/glass-marker"),
    "notification_emails": _top("notification_emails", ["oncall-marker@example.com"]),
    "repositories.storage_class": _repository("main", "storage_class", "INTELLIGENT_TIERING"),
    "repositories.object_lock_days": _repository("main", "object_lock_days", 123),
    "repositories.object_lock_mode": _repository("main", "object_lock_mode", "COMPLIANCE"),
    "timing.retry_interval_seconds": _top("timing.retry_interval_seconds", 77),
    "timing.retry_max_attempts": _top("timing.retry_max_attempts", 13),
    "timing.retry_backoff_rate": _top("timing.retry_backoff_rate", 3.5),
    "timing.not_available_max_attempts": _top("timing.not_available_max_attempts", 17),
    "timing.wait_initial_seconds": _top("timing.wait_initial_seconds", 41),
    "timing.wait_max_seconds": _top("timing.wait_max_seconds", 421),
    "timing.wait_factor": _top("timing.wait_factor", 1.75),
    "timing.wait_timeout_seconds": _top("timing.wait_timeout_seconds", 4321),
    "timing.lease_seconds": _top("timing.lease_seconds", 7777),
    "timing.sg_delete_attempts": _top("timing.sg_delete_attempts", 19),
    "timing.sg_delete_interval_seconds": _top("timing.sg_delete_interval_seconds", 6.5),
    "timing.sweep_after_minutes": _top("timing.sweep_after_minutes", 555),
    "timing.slot_wait_timeout_seconds": _top("timing.slot_wait_timeout_seconds", 5432),
    "limits.snapshot_creations": _top("limits.snapshot_creations", 123),
    "limits.snapshot_copies": _top("limits.snapshot_copies", 17),
    "limits.places.account": _place("account", "777777777777"),
    "limits.places.region": _place("region", "ap-south-1"),
    "limits.places.snapshot_creations": _place("snapshot_creations", 301),
    "limits.places.snapshot_copies": _place("snapshot_copies", 19),
    "maintenance_network.subnets": _top("maintenance_network.subnets", ["subnet-0f00d"]),
    "maintenance_network.security_groups": _top("maintenance_network.security_groups", ["sg-0f00d"]),
    "maintenance_network.assign_public_ip": _top("maintenance_network.assign_public_ip", True),
    "policies.name": _rename_policy,
    "policies.retention_min_days": _policy(_FULL, "retention_min_days", 3.5),
    "policies.schedule.expression": _policy(_FULL, "schedule.expression", "cron(17 3 * * ? *)"),
    "policies.schedule.timezone": _policy(_FULL, "schedule.timezone", "Asia/Tokyo"),
    "policies.schedule.enabled": _policy(_FULL, "schedule.enabled", False),
    "policies.selection.resources": _policy(_FULL, "selection.resources", ["billing-db"]),
    "policies.selection.tags": _policy(_FULL, "selection.tags", {"backup": "other"}),
    "policies.selection.accounts": _policy(_COPIES, "selection.accounts", ["555555555555"]),
    "policies.selection.regions": _policy(_COPIES, "selection.regions", ["us-east-2"]),
    "policies.snapshot_retention": _policy(_FULL, "snapshot_retention", 9),
    "policies.concurrency": _policy(_FULL, "concurrency", 11),
    "policies.max_resources": _policy(_FULL, "max_resources", 77),
    "policies.replication.region": _policy(_COPIES, "replication.region", "eu-central-1"),
    "policies.replication.account": _policy(_COPIES, "replication.account", "666666666666"),
    "policies.replication.kms_key_arn": _policy(_COPIES, "replication.kms_key_arn",
                                                "arn:aws:kms:eu-west-1:333333333333:key/other"),
    "policies.replication.retention": _policy(_COPIES, "replication.retention", 5),
    "policies.image_backup.repository": _policy(_FULL, "image_backup.repository", "other"),
    "policies.image_backup.retention.keep_last": _policy(_FULL, "image_backup.retention.keep_last", 8),
    "policies.image_backup.retention.keep_days": _policy(_FULL, "image_backup.retention.keep_days", 31),
    "policies.image_backup.worker.launch_type": _policy(_COPIES, "image_backup.worker",
                                                        {"launch_type": "FARGATE"}),
    "policies.image_backup.worker.subnets": _policy(_FULL, "image_backup.worker.subnets", ["subnet-0c"]),
    "policies.image_backup.worker.cpu": _policy(_FULL, "image_backup.worker.cpu", 2048),
    "policies.image_backup.worker.memory": _policy(_FULL, "image_backup.worker.memory", 4096),
    "policies.image_backup.worker.timeout_minutes": _policy(_FULL, "image_backup.worker.timeout_minutes", 99),
    "policies.image_backup.worker.capacity_provider": _policy(_COPIES, "image_backup.worker.capacity_provider",
                                                              "other-asg"),
    "policies.image_backup.worker.egress.prefix_lists": _policy(_FULL, "image_backup.worker.egress",
                                                                {"prefix_lists": ["pl-0fee1"]}),
    "policies.image_backup.worker.egress.security_groups": _policy(_FULL, "image_backup.worker.egress",
                                                                   {"security_groups": ["sg-0fee1"]}),
    "policies.image_backup.secret_arn": _policy(_FULL, "image_backup.secret_arn",
                                                "arn:aws:secretsmanager:us-east-1:123456789012:secret:other"),
    "policies.archive.repository": _policy(_FULL, "archive.repository", "colder"),
    "policies.archive.after_days": _policy(_FULL, "archive.after_days", 14),
    "policies.archive.retention_days": _policy(_FULL, "archive.retention_days", 400),
    "policies.archive.retrieval_timeout_hours": _policy(_FULL, "archive.retrieval_timeout_hours", 12),
    "policies.archive.gfs.weekly": _policy(_FULL, "archive.gfs.weekly", 5),
    "policies.archive.gfs.monthly": _policy(_FULL, "archive.gfs.monthly", 13),
    "policies.archive.gfs.yearly": _policy(_FULL, "archive.gfs.yearly", 4),
    "policies.maintenance.schedule.expression": _schedule(_FULL, "maintenance", "expression", "cron(23 6 * * ? *)",
                                                          "cron(0 6 * * ? *)"),
    "policies.maintenance.schedule.timezone": _schedule(_FULL, "maintenance", "timezone", "Europe/Oslo",
                                                        "cron(0 6 * * ? *)"),
    "policies.maintenance.schedule.enabled": _schedule(_FULL, "maintenance", "enabled", False, "cron(0 6 * * ? *)"),
    "policies.maintenance.worker.cpu": _policy(_FULL, "maintenance.worker", {"cpu": 4096}),
    "policies.maintenance.worker.memory": _policy(_FULL, "maintenance.worker", {"memory": 8192}),
    "policies.maintenance.worker.timeout_minutes": _policy(_FULL, "maintenance.worker", {"timeout_minutes": 61}),
    "policies.rpo": _policy(_FULL, "rpo", "40h"),
    "policies.restore_test.schedule.expression": _schedule(_FULL, "restore_test", "expression",
                                                           "cron(29 5 ? * SUN *)", "cron(0 5 ? * SUN *)"),
    "policies.restore_test.schedule.timezone": _schedule(_FULL, "restore_test", "timezone", "America/Lima",
                                                         "cron(0 5 ? * SUN *)"),
    "policies.restore_test.schedule.enabled": _schedule(_FULL, "restore_test", "enabled", False,
                                                        "cron(0 5 ? * SUN *)"),
    "policies.restore_test.sample": _policy(_FULL, "restore_test.sample", 3),
    "policies.restore_test.targets": _policy(_FULL, "restore_test.targets", ["snapshot"]),
    "policies.restore_test.instance_class": _policy(_FULL, "restore_test.instance_class", "db.t4g.large"),
    "policies.restore_test.retrieval_tier": _policy(_FULL, "restore_test.retrieval_tier", "Expedited"),
    "policies.restore_test.timeout_minutes": _policy(_FULL, "restore_test.timeout_minutes", 77),
    "policies.restore_test.worker.results_repository": _policy(_SNAPS, "restore_test.worker.results_repository",
                                                               "other"),
    "policies.restore_test.worker.launch_type": _policy(_SNAPS, "restore_test.worker", {
        "results_repository": "main", "launch_type": "FARGATE"}),
    "policies.restore_test.worker.subnets": _policy(_SNAPS, "restore_test.worker.subnets", ["subnet-0d"]),
    "policies.restore_test.worker.cpu": _policy(_SNAPS, "restore_test.worker.cpu", 512),
    "policies.restore_test.worker.memory": _policy(_SNAPS, "restore_test.worker.memory", 3072),
    "policies.restore_test.worker.timeout_minutes": _policy(_SNAPS, "restore_test.worker.timeout_minutes", 33),
    "policies.restore_test.worker.capacity_provider": _policy(_SNAPS, "restore_test.worker.capacity_provider",
                                                              "other-tests-asg"),
    "policies.restore_test.worker.egress.prefix_lists": _policy(_SNAPS, "restore_test.worker.egress",
                                                                {"prefix_lists": ["pl-0fee2"]}),
    "policies.restore_test.worker.egress.security_groups": _policy(_SNAPS, "restore_test.worker.egress",
                                                                   {"security_groups": ["sg-0fee2"]}),
    "policies.restore_test.worker.secret_arn": _policy(
        _SNAPS, "restore_test.worker.secret_arn", "arn:aws:secretsmanager:us-east-1:123456789012:secret:other"),
}

# Fields that shape resources only: the value each change leaves in the synthesized templates.
TEMPLATE_MARKERS = {
    "control.account": "444444444444",
    "control.region": "us-west-2",
    "notification_emails": "oncall-marker@example.com",
    "repositories.object_lock_days": '"Days": 123',
    "repositories.object_lock_mode": '"Mode": "COMPLIANCE"',
    "policies.schedule.expression": "cron(17 3 * * ? *)",
    "policies.schedule.timezone": "Asia/Tokyo",
    "policies.schedule.enabled": ("rdsbackup-full", "DISABLED"),
    "policies.maintenance.schedule.expression": "cron(23 6 * * ? *)",
    "policies.maintenance.schedule.timezone": "Europe/Oslo",
    "policies.maintenance.schedule.enabled": ("rdsbackup-full-maintenance", "DISABLED"),
    "policies.restore_test.schedule.expression": "cron(29 5 ? * SUN *)",
    "policies.restore_test.schedule.timezone": "America/Lima",
    "policies.restore_test.schedule.enabled": (RESTORE_TEST_SCHEDULE, "DISABLED"),
    "timing.sweep_after_minutes": '"MAX_AGE_MINUTES": "555"',
    # shared slot limits reach the handlers' environment (SLOT_LIMITS)
    "limits.snapshot_creations": '\\"snapshot\\":123',
    "limits.snapshot_copies": '\\"copy\\":17',
    "limits.places.account": '777777777777/',
    "limits.places.region": '/ap-south-1',
    "limits.places.snapshot_creations": '\\"snapshot\\":301',
    "limits.places.snapshot_copies": '\\"copy\\":19',
    "timing.sg_delete_attempts": '"SG_DELETE_ATTEMPTS": "19"',
    "timing.sg_delete_interval_seconds": '"SG_DELETE_INTERVAL_SECONDS": "6.5"',
    # retries live in the state machines' definitions (JSON text inside the template)
    "timing.retry_interval_seconds": '\\"IntervalSeconds\\":77',
    "timing.retry_max_attempts": '\\"MaxAttempts\\":13',
    "timing.retry_backoff_rate": '\\"BackoffRate\\":3.5',
    "timing.not_available_max_attempts": '\\"MaxAttempts\\":17',
    "maintenance_network.subnets": "subnet-0f00d",
    "control.organization_id": "o-markerorg12",
    "break_glass_role_arn": "role/glass-marker",
    "maintenance_network.security_groups": "sg-0f00d",
    "maintenance_network.assign_public_ip": '\\"assign_public_ip\\":true',
}


def model_fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted paths of every leaf field of the config model (through optional, list and dict fields)."""
    out = []
    for name, field in model.model_fields.items():
        nested = []
        for arg in typing.get_args(field.annotation) or (field.annotation,):
            for candidate in (arg, *typing.get_args(arg)):
                if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                    nested.append(candidate)
        out += model_fields(nested[0], f"{prefix}{name}.") if nested else [f"{prefix}{name}"]
    return out


def _changed(field: str) -> dict:
    config = copy.deepcopy(BASE)
    CHANGES[field](config)
    if field in ("policies.image_backup.repository", "policies.restore_test.worker.results_repository"):
        config["repositories"]["other"] = {}
    if field == "policies.archive.repository":
        config["repositories"]["colder"] = {"storage_class": "DEEP_ARCHIVE"}
    return config


@functools.cache
def _base_runtime() -> str:
    return _runtime(BASE)


def _runtime(raw: dict) -> str:
    config: BackupConfig = parse_config(raw, default_account=ACCOUNT, default_region=REGION)
    topology = build_topology(config, control=Place(config.control.account or ACCOUNT,
                                                    config.control.region or REGION))
    network = config.maintenance_network.model_dump()
    return json.dumps([runtime_policies(config, topology, "arn:aws:kms:key"), network], sort_keys=True)


def test_every_field_has_a_change_and_is_proven():
    fields = model_fields(BackupConfig)
    assert sorted(fields) == sorted(CHANGES), (
        "config fields without a change here (add one, and make the field do something): "
        f"{sorted(set(fields) - set(CHANGES))}; stale: {sorted(set(CHANGES) - set(fields))}")


@pytest.mark.parametrize("field", sorted(set(CHANGES) - set(TEMPLATE_MARKERS)))
def test_field_changes_what_the_handlers_read(field):
    assert _runtime(_changed(field)) != _base_runtime(), f"changing {field} changes nothing the handlers read"


@pytest.fixture(scope="module")
def marked_templates(tmp_path_factory) -> dict[str, tuple[str, dict]]:
    """{"base"|"changed": (every template as text, schedule name -> state)}: BASE, and BASE with every
    template-only field changed."""
    changed = copy.deepcopy(BASE)
    for field in TEMPLATE_MARKERS:
        CHANGES[field](changed)
    out = {}
    for name, config in (("base", BASE), ("changed", changed)):
        control = config["control"]
        cdk_out, _ = synthesize(config, tmp_path_factory.mktemp(name) / "cdk.out", account=control["account"],
                                region=control["region"])
        templates = [json.loads(p.read_text()) for p in sorted(Path(cdk_out).glob("*.template.json"))]
        schedules = {r["Properties"]["Name"]: r["Properties"].get("State")
                     for t in templates for r in t.get("Resources", {}).values()
                     if r["Type"] == "AWS::Scheduler::Schedule"}
        out[name] = ("\n".join(json.dumps(t, indent=1) for t in templates), schedules)
    return out


@pytest.mark.parametrize("field", sorted(TEMPLATE_MARKERS))
def test_field_changes_the_templates(field, marked_templates):
    (base, base_schedules), (changed, changed_schedules) = marked_templates["base"], marked_templates["changed"]
    marker = TEMPLATE_MARKERS[field]
    if isinstance(marker, tuple):  # a schedule's state
        schedule, state = marker
        assert changed_schedules.get(schedule) == state != base_schedules.get(schedule), field
        return
    assert marker in changed and marker not in base, f"{field}: {marker!r} should appear only once it is set"
