"""The policy config: a bad config stops synth with an error that names the policy and the field."""

import copy
import json
from pathlib import Path

import pytest

from infra.config import ConfigError, load_config, parse_config

VALID = {
    "repositories": {"main": {}},
    "policies": [{
        "name": "nightly",
        "schedule": {"expression": "cron(0 3 * * ? *)", "timezone": "Europe/Berlin"},
        "selection": {"resources": ["orders-db"], "tags": {"backup": "nightly"}},
        "snapshot_retention": 7,
    }],
}


def _parse(config):
    return parse_config(config, default_account="123456789012", default_region="us-east-1")


def _with(**policy_changes):
    config = copy.deepcopy(VALID)
    config["policies"][0].update(policy_changes)
    return config


def test_valid_config_parses_with_defaults():
    config = _parse(VALID)
    policy = config.policies[0]
    assert policy.concurrency == 4
    assert policy.schedule.timezone == "Europe/Berlin"
    assert config.timing.retry_max_attempts >= 1


@pytest.mark.parametrize(("change", "expected"), [
    ({"retention_days": 3}, 'policy "nightly": field "retention_days": unknown field'),
    ({"schedule": {"expression": "cron(0 3 * * *)"}}, 'policy "nightly": field "schedule.expression"'),
    ({"schedule": {"expression": "cron(0 3 * * * *)"}}, "exactly one of day-of-month and day-of-week"),
    ({"schedule": {"expression": "cron(0 25 * * ? *)"}}, "hours value 25 is out of range"),
    ({"schedule": {"expression": "every day"}}, "neither cron(...) nor rate(...)"),
    ({"schedule": {"expression": "rate(1 days)"}}, "invalid rate expression"),
    ({"schedule": {"expression": "rate(1 day)", "timezone": "Mars/Olympus"}}, "unknown time zone 'Mars/Olympus'"),
    ({"snapshot_retention": 0}, 'policy "nightly": field "snapshot_retention"'),
    ({"selection": {}}, 'policy "nightly": field "selection"'),
    ({"selection": {"resources": ["not an id!"]}}, "neither an RDS DB/cluster ARN nor an identifier"),
    ({"replication": {"region": "us-east-1"}},
     'field "replication": the target (123456789012, us-east-1) is the source'),
    ({"replication": {"account": "123456789012"}}, "is the source itself"),
    ({"replication": {}}, "give a target 'region' and/or 'account'"),
    ({"image_backup": {"repository": "nope"}}, 'field "image_backup.repository": unknown repository \'nope\''),
    ({"image_backup": {"repository": "main"}, "archive": {"repository": "cold", "after_days": 30}},
     'field "archive.repository": unknown repository'),
    # settings that would be accepted and then do nothing are refused, naming the field
    ({"archive": {"repository": "main", "after_days": 30}},
     'policy "nightly": \'archive\' has no effect without \'image_backup\''),
    ({"maintenance": {}}, "'maintenance' has no effect without 'image_backup'"),
    ({"image_backup": {"repository": "main"}, "archive": {"repository": "main", "after_days": 3, "gfs": {"weekly": 4}}},
     'field "archive": \'gfs\' has no effect without \'retention_days\''),
    ({"image_backup": {"repository": "main"},
      "archive": {"repository": "main", "after_days": 30, "retention_days": 30}},
     "'retention_days' (30) must exceed 'after_days' (30)"),
    ({"image_backup": {"repository": "main"}, "archive": {"repository": "main", "after_days": 30}},
     "repository 'main' is also policy \"nightly\"'s archive repository"),
    ({"concurrency": 0}, 'field "concurrency"'),
    ({"name": "Bad_Name"}, 'policy "Bad_Name": field "name"'),
])
def test_bad_config_names_policy_and_field(change, expected):
    with pytest.raises(ConfigError) as error:
        _parse(_with(**change))
    assert expected in str(error.value)


def test_unknown_top_level_field_is_named():
    config = copy.deepcopy(VALID)
    config["polices"] = []
    with pytest.raises(ConfigError, match='field "polices": unknown field'):
        _parse(config)


def test_duplicate_policy_names_are_rejected():
    config = copy.deepcopy(VALID)
    config["policies"].append(copy.deepcopy(config["policies"][0]))
    with pytest.raises(ConfigError, match="policy name 'nightly' is used twice"):
        _parse(config)


def test_replicating_policy_must_have_one_source_account():
    change = {"selection": {"tags": {"a": "b"}, "accounts": ["111111111111", "222222222222"]},
              "replication": {"region": "eu-west-1"}}
    with pytest.raises(ConfigError, match="one policy per source account"):
        _parse(_with(**change))


def test_config_file_named_in_context_is_loaded(tmp_path: Path):
    path = tmp_path / "policies.json"
    path.write_text(json.dumps(VALID))
    config = load_config({"rdsbackup:config_file": str(path)}, base_dir=tmp_path, default_account="1",
                         default_region="r")
    assert config.policies[0].name == "nightly"


def test_missing_and_malformed_config_files_are_clear(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config({"rdsbackup:config_file": "nope.json"}, base_dir=tmp_path, default_account="1",
                    default_region="r")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="is not valid JSON"):
        load_config({"rdsbackup:config_file": "bad.json"}, base_dir=tmp_path, default_account="1",
                    default_region="r")
    with pytest.raises(ConfigError, match="no rdsbackup config"):
        load_config({}, base_dir=tmp_path, default_account="1", default_region="r")


def test_shipped_cdk_json_demo_policy_is_valid():
    context = json.loads((Path(__file__).parents[2] / "cdk.json").read_text())["context"]
    config = _parse(context["rdsbackup"])
    assert [policy.name for policy in config.policies] == ["demo"]


@pytest.mark.parametrize(("schedule", "rpo_hours"), [
    ("cron(0 3 * * ? *)", 36),            # daily
    ("cron(0 3 ? * MON-FRI *)", 108),     # weekdays: the weekend gap of 72 h counts
    ("cron(0 5 ? * 1 *)", 252),           # EventBridge's 1 is Sunday: weekly
    ("rate(12 hours)", 18),
])
def test_rpo_defaults_to_one_and_a_half_schedule_intervals(schedule, rpo_hours):
    policy = _parse(_with(schedule={"expression": schedule}))
    assert policy.policies[0].rpo_seconds == rpo_hours * 3600


def test_configured_rpo_is_used():
    assert _parse(_with(rpo="30h")).policies[0].rpo_seconds == 30 * 3600
    assert _parse(_with(rpo="2d")).policies[0].rpo_seconds == 2 * 86400


@pytest.mark.parametrize(("change", "expected"), [
    ({"rpo": "36 hours"}, "field \"rpo\": '36 hours' is not a duration"),
    ({"rpo": "30s"}, 'field "rpo"'),
    ({"rpo": "12h"}, 'field "rpo": \'12h\' is shorter than the time between two scheduled backups (24 h)'),
    ({"restore_test": {"targets": ["restore_point"]}},
     'field "restore_test.targets": \'restore_point\' needs the policy\'s "image_backup" section'),
    ({"restore_test": {}}, 'field "restore_test.worker": a policy without "image_backup" needs a test worker'),
    ({"restore_test": {"worker": {"results_repository": "nowhere"}}},
     'field "restore_test.worker.results_repository": unknown repository \'nowhere\''),
    ({"restore_test": {"worker": {}}}, 'field "restore_test.worker.results_repository": Field required'),
    ({"restore_test": {"worker": {"results_repository": "main"}}, "image_backup": {"repository": "main"}},
     'field "restore_test.worker": the policy\'s restore tests run on its "image_backup.worker"'),
    ({"restore_test": {"targets": ["replica"]}, "image_backup": {"repository": "main"}},
     '\'replica\' needs the policy\'s "replication" section'),
    ({"restore_test": {"targets": ["archive"]}}, 'field "restore_test.targets.0"'),
    ({"restore_test": {"targets": []}}, 'field "restore_test.targets"'),
    ({"restore_test": {"sample": 0}}, 'field "restore_test.sample"'),
    ({"restore_test": {"instance_class": "t3.micro"}}, 'field "restore_test.instance_class"'),
    ({"restore_test": {"schedule": {"expression": "cron(0 5 * * * *)"}}}, 'field "restore_test.schedule'),
    ({"restore_test": {"keep": True}}, 'field "restore_test.keep": unknown field'),
])
def test_bad_rpo_or_restore_test_is_named(change, expected):
    with pytest.raises(ConfigError) as error:
        _parse(_with(**change))
    assert expected in str(error.value)


def test_restore_test_defaults_are_weekly_small_and_test_what_the_policy_keeps():
    image = _parse(_with(restore_test={}, image_backup={"repository": "main"})).policies[0]
    assert image.restore_test.schedule.expression == "cron(0 5 ? * SUN *)"
    assert image.restore_test.sample is None and image.restore_test.instance_class is None
    assert image.restore_test_targets == ["snapshot", "restore_point"]
    assert _parse(VALID).policies[0].restore_test_targets == []


def _testing_the_archive(**restore_test):
    config = _with(image_backup={"repository": "main"}, archive={"repository": "cold", "after_days": 0},
                   restore_test=restore_test)
    config["repositories"] = {"main": {}, "cold": {"storage_class": "DEEP_ARCHIVE"}}
    return config


def test_archived_restore_points_are_tested_only_when_asked_for_and_only_with_an_archive():
    policy = _parse(_testing_the_archive(targets=["snapshot", "archived_restore_point"])).policies[0]
    assert policy.restore_test_targets == ["snapshot", "archived_restore_point"]
    assert policy.restore_test.retrieval_tier == "Bulk"  # the cheapest tier: a test is not in a hurry
    # the default tests what costs little: never the archive
    assert _parse(_testing_the_archive()).policies[0].restore_test_targets == ["snapshot", "restore_point"]
    with pytest.raises(ConfigError) as error:
        _parse(_with(image_backup={"repository": "main"}, restore_test={"targets": ["archived_restore_point"]}))
    assert 'field "restore_test.targets": \'archived_restore_point\' needs the policy\'s "archive" section, ' \
           "which it does not have" in str(error.value)


def test_an_archived_restore_test_in_a_tier_the_archive_class_does_not_offer_is_refused():
    with pytest.raises(ConfigError) as error:
        _parse(_testing_the_archive(targets=["archived_restore_point"], retrieval_tier="Expedited"))
    assert str(error.value).endswith('field "restore_test.retrieval_tier": archive repository \'cold\' keeps its '
                                     "packs in DEEP_ARCHIVE, which offers the tiers Standard and Bulk, not Expedited")


def test_a_snapshot_only_policy_tests_its_snapshots_on_a_worker_of_its_own():
    test = _parse(_with(restore_test={"worker": {"results_repository": "main", "subnets": ["subnet-0a1b"]}}))
    policy = test.policies[0]
    assert policy.image_backup is None and policy.restore_test_targets == ["snapshot"]
    assert policy.restore_test.worker.results_repository == "main"
    assert policy.restore_test.worker.subnets == ["subnet-0a1b"] and policy.restore_test.worker.cpu == 1024


@pytest.mark.parametrize(("repositories", "extra", "expected"), [
    ({"main": {"object_lock_mode": "COMPLIANCE"}}, {},
     'field "repositories.main": \'object_lock_mode\' has no effect without \'object_lock_days\''),
    ({"main": {"storage_class": "DEEP_ARCHIVE"}}, {},
     'field "repositories.main.storage_class": DEEP_ARCHIVE is for archive repositories'),
    ({"main": {}, "cold": {"storage_class": "INTELLIGENT_TIERING"}},
     {"archive": {"repository": "cold", "after_days": 7}},
     'field "repositories.cold.storage_class": INTELLIGENT_TIERING is not an archive class'),
])
def test_repository_settings_that_cannot_work_are_refused(repositories, extra, expected):
    config = _with(image_backup={"repository": "main"}, **extra)
    config["repositories"] = repositories
    with pytest.raises(ConfigError) as error:
        _parse(config)
    assert expected in str(error.value)


def test_maintenance_network_groups_need_subnets():
    config = copy.deepcopy(VALID)
    config["maintenance_network"] = {"security_groups": ["sg-0123"]}
    with pytest.raises(ConfigError, match=r'field "maintenance_network": .*apply to the \'subnets\' given'):
        _parse(config)


def test_object_lock_mode_defaults_to_compliance_for_archives_and_governance_for_backups():
    from infra.config import object_lock_mode

    config = _with(image_backup={"repository": "main"}, archive={"repository": "cold", "after_days": 7})
    config["repositories"] = {"main": {"object_lock_days": 7}, "cold": {"storage_class": "GLACIER",
                                                                        "object_lock_days": 90}}
    parsed = _parse(config)
    assert object_lock_mode("main", parsed.repositories["main"], parsed) == "GOVERNANCE"
    assert object_lock_mode("cold", parsed.repositories["cold"], parsed) == "COMPLIANCE"
    config["repositories"]["cold"]["object_lock_mode"] = "GOVERNANCE"
    parsed = _parse(config)
    assert object_lock_mode("cold", parsed.repositories["cold"], parsed) == "GOVERNANCE"


def test_concurrency_beyond_the_inline_maps_40():
    assert _parse(_with(concurrency=500)).policies[0].concurrency == 500
    with pytest.raises(ConfigError, match='field "concurrency"'):
        _parse(_with(concurrency=1001))


def test_a_hundred_policies_naming_a_thousand_databases_parse():
    config = copy.deepcopy(VALID)
    template = config["policies"][0]
    config["policies"] = [{**template, "name": f"policy-{n:03d}",
                           "selection": {"resources": [f"db-{n:03d}-{i}" for i in range(10)]}} for n in range(100)]
    parsed = _parse(config)
    assert sum(len(p.selection.resources) for p in parsed.policies) == 1000


def test_raised_limits_reach_the_handlers_per_account_region():
    from rdsbackup_lambdas.slots import COPY, SNAPSHOT, SlotLimits

    config = copy.deepcopy(VALID)
    config["limits"] = {"snapshot_copies": 10, "places": [
        {"account": "222222222222", "region": "eu-west-1", "snapshot_creations": 300}]}
    runtime = SlotLimits.from_json(json.dumps(_parse(config).limits.as_runtime()))
    assert runtime.limit(SNAPSHOT, "222222222222", "eu-west-1") == 300
    assert runtime.limit(SNAPSHOT, "222222222222", "us-east-1") == 100
    assert runtime.limit(COPY, "222222222222", "eu-west-1") == 10
    config["limits"]["places"][0]["snapshot_creations"] = 0
    with pytest.raises(ConfigError, match=r'field "limits\.places\.0\.snapshot_creations"'):
        _parse(config)


def test_restore_points_have_a_minimum_age_derived_like_the_snapshots():
    from infra.config import Policy

    base = {"name": "nightly", "schedule": {"expression": "cron(0 3 * * ? *)"}, "selection": {"resources": ["db"]},
            "snapshot_retention": 7, "image_backup": {"repository": "main", "retention": {"keep_last": 5}}}
    # a daily schedule makes 5 restore points in 5 days: a burst of sessions cannot forget younger ones
    assert Policy.model_validate(base).restore_point_min_age_seconds == 5 * 86400
    assert Policy.model_validate({**base, "retention_min_days": 2}).restore_point_min_age_seconds == 2 * 86400


def _archiving(retention: dict, after_days: int, **policy) -> dict:
    config = _with(image_backup={"repository": "main", "retention": retention},
                   archive={"repository": "cold", "after_days": after_days}, **policy)
    config["repositories"]["cold"] = {"storage_class": "DEEP_ARCHIVE"}
    return config


@pytest.mark.parametrize(("retention", "after_days", "policy", "within"), [
    ({"keep_last": 7}, 30, {}, "8 days"),  # daily backups, daily backup-account session
    ({"keep_last": 7, "keep_days": 20}, 30, {}, "21 days"),
    ({"keep_last": 30}, 3, {"schedule": {"expression": "rate(1 hour)"}}, "2.25 days"),
])
def test_a_retention_that_forgets_every_point_before_it_is_due_for_the_archive_is_refused(
        retention, after_days, policy, within):
    with pytest.raises(ConfigError) as error:
        _parse(_archiving(retention, after_days, **policy))
    message = str(error.value)
    assert message.startswith('policy "nightly": field "image_backup.retention"'), message
    assert f'field "archive.after_days" ({after_days})' in message and f"within {within}" in message
    assert "keep_days" in message and "or less" in message  # says how to fix it


@pytest.mark.parametrize(("retention", "after_days", "policy"), [
    ({"keep_last": 7}, 8, {}),  # forgotten on day 7 or 8: not decidable, the run-time guard decides
    ({"keep_last": 7, "keep_days": 30}, 30, {}),
    ({"keep_last": None}, 30, {}),  # nothing is forgotten
    ({"keep_last": 7}, 0, {}),
    # a weekly backup-account session forgets a week later: day 14 at the latest
    ({"keep_last": 7}, 10, {"maintenance": {"schedule": {"expression": "cron(0 6 ? * 1 *)"}}}),
])
def test_a_retention_that_may_keep_points_until_they_are_due_is_accepted(retention, after_days, policy):
    _parse(_archiving(retention, after_days, **policy))
