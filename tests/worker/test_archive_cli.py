"""`rdsbackup archive`, and restore/verify/forget/list against archive repositories, run as the console
script against a real PostgreSQL server: file:// archives, and S3 archives in moto's server with Glacier
storage classes (retrievals kept in progress with rdsbackup_local.moto_patches.slow_retrievals)."""

from __future__ import annotations

import json
import os
import subprocess

import boto3
import pytest

from rdsbackup_local.moto_patches import slow_retrievals
from tests.support.moto_server import moto_endpoint, moto_server_url  # noqa: F401  (fixtures)
from tests.support.postgres_server import schema_dump, shared_server, table_checksums
from tests.worker.test_cli import (  # noqa: F401  (fixture)
    DB_PASSWORD_VAR,
    REPO_PASSPHRASE,
    assert_one_line_failure,
    db_args,
    rdsbackup,
    run,
)

pytestmark = pytest.mark.postgres

ARCHIVE_PASSPHRASE = "archive passphrase"
EXIT_RETRIEVAL_PENDING = 75


@pytest.fixture(scope="module")
def server():
    server = shared_server()
    for name in ("arc_src", "arc_restored", "arc_restored2", "arc_s3"):
        server.drop_database(name)
    server.create_database("arc_src")
    server.psql(
        "CREATE TABLE items (id int PRIMARY KEY, name text, price numeric);"
        "INSERT INTO items SELECT i, 'item ' || i, i * 0.25 FROM generate_series(1, 20000) i;"
        "CREATE INDEX items_name ON items (name);", dbname="arc_src")
    return server


def arun(rdsbackup, *args, **kwargs):  # noqa: F811
    env = dict(kwargs.pop("env", None) or {}, RDSBACKUP_ARCHIVE_PASSWORD=ARCHIVE_PASSPHRASE)
    return run(rdsbackup, *args, env=env, **kwargs)


@pytest.fixture(scope="module")
def backups(server, rdsbackup, tmp_path_factory):  # noqa: F811
    """A backup repository with two restore points of arc_src (a change in between):
    (url, [ids], [table checksums at each])."""
    url = f"file://{tmp_path_factory.mktemp('arc-backup')}"
    assert run(rdsbackup, "repo", "init", "--repo", url).returncode == 0
    ids, sums = [], []
    for day in range(2):
        if day:
            server.psql("UPDATE items SET price = price + 1 WHERE id % 97 = 0;", dbname="arc_src")
        out = run(rdsbackup, "backup", "postgres", "--repo", url, *db_args(server), "--database", "arc_src",
                  "--source-id", "arc-db", "--json", password=server.password)
        assert out.returncode == 0, out.stderr
        ids.append(json.loads(out.stdout)["restore_point_id"])
        sums.append(table_checksums(server, "arc_src"))
    return url, ids, sums


def restore(rdsbackup, server, repo, rp_id, target, *extra, env=None):  # noqa: F811
    return arun(rdsbackup, "restore", "postgres", "--repo", repo, "--restore-point", rp_id, *db_args(server),
                "--database", "arc_src", "--target-database", target, "--replace", *extra,
                password=server.password, env=env)


def restore_started(rdsbackup, server, repo, rp_id, target, *extra, env=None) -> subprocess.Popen:  # noqa: F811
    """`restore` as a running process whose stderr can be read line by line (stdout discarded)."""
    full_env = dict(os.environ, RDSBACKUP_PASSWORD=REPO_PASSPHRASE, RDSBACKUP_ARCHIVE_PASSWORD=ARCHIVE_PASSPHRASE,
                    **{DB_PASSWORD_VAR: server.password}, **(env or {}))
    return subprocess.Popen(
        [rdsbackup, "restore", "postgres", "--repo", repo, "--restore-point", rp_id, *db_args(server),
         "--database", "arc_src", "--target-database", target, "--replace", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=full_env)


def test_archive_restore_delete_one_and_the_other_still_restores(server, rdsbackup, backups, tmp_path):  # noqa: F811
    url, ids, sums = backups
    archive = f"file://{tmp_path / 'archive'}"
    out = arun(rdsbackup, "archive", "--repo", url, "--archive-repo", archive, "--restore-point", *ids, "--json")
    assert out.returncode == 0, out.stderr
    results = json.loads(out.stdout)
    assert [r["restore_point_id"] for r in results] == ids and all(r["archived"] for r in results)
    listed = json.loads(arun(rdsbackup, "list", "--repo", archive, "--json").stdout)
    assert [p["id"] for p in listed] == ids and {p["source_id"] for p in listed} == {"arc-db"}
    # Archiving again archives nothing twice.
    again = arun(rdsbackup, "archive", "--repo", url, "--archive-repo", archive, "--restore-point", ids[0])
    assert again.returncode == 0 and "already archived" in again.stdout
    # Restore from the archive equals the source at that time.
    assert restore(rdsbackup, server, archive, ids[0], "arc_restored").returncode == 0
    assert table_checksums(server, "arc_restored") == sums[0]
    # Delete the newer point's objects (manifest, index object, packs) as archive retention does.
    from rdsbackup.repository.archive import ArchiveRepository

    repo = ArchiveRepository.open_archive(archive, password=ARCHIVE_PASSPHRASE)
    record = repo.record(ids[1])
    repo.backend.delete(f"manifests/{ids[1]}")
    repo.backend.delete_many(record["index"] + record["packs"])
    verified = arun(rdsbackup, "verify", "--repo", archive, "--read-data")
    assert verified.returncode == 0, verified.stderr
    assert restore(rdsbackup, server, archive, ids[0], "arc_restored2").returncode == 0
    assert table_checksums(server, "arc_restored2") == sums[0]
    assert schema_dump(server, "arc_restored2") == schema_dump(server, "arc_restored")


def test_forget_on_an_archive_keeps_recent_points(rdsbackup, backups, tmp_path):  # noqa: F811
    url, ids, _ = backups
    archive = f"file://{tmp_path / 'archive'}"
    assert arun(rdsbackup, "archive", "--repo", url, "--archive-repo", archive, "--restore-point", *ids).returncode == 0
    out = arun(rdsbackup, "forget", "--repo", archive, "--keep-days", "30", "--keep-monthly", "3", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["deleted"] == []
    assert arun(rdsbackup, "forget", "--repo", archive, "--keep-last", "1").returncode == 1
    assert arun(rdsbackup, "forget", "--repo", url, "--keep-last", "5", "--keep-weekly", "2").returncode == 1


def test_archive_fails_clearly(rdsbackup, backups, tmp_path):  # noqa: F811
    url, ids, _ = backups
    archive = f"file://{tmp_path / 'archive'}"
    missing = arun(rdsbackup, "archive", "--repo", url, "--archive-repo", archive,
                   "--restore-point", "0123456789abcdef")
    assert_one_line_failure(missing, "restore point 0123456789abcdef not found")
    no_key = run(rdsbackup, "archive", "--repo", url, "--archive-repo", archive, "--restore-point", ids[0])
    assert_one_line_failure(no_key, "RDSBACKUP_ARCHIVE_PASSWORD")
    into_backup = arun(rdsbackup, "archive", "--repo", url, "--archive-repo", url, "--restore-point", ids[0])
    assert_one_line_failure(into_backup, "is a backup repository, not an archive repository")
    made = arun(rdsbackup, "archive", "--repo", url, "--archive-repo", archive, "--restore-point", ids[0])
    assert made.returncode == 0, made.stderr
    backwards = arun(rdsbackup, "archive", "--repo", archive, "--archive-repo", url, "--restore-point", ids[0])
    assert_one_line_failure(backwards, "is an archive repository; archive from the backup repository")


def test_restore_from_deep_archive_requests_retrieval_exits_75_then_waits(
        server, rdsbackup, backups, moto_endpoint):  # noqa: F811
    url, ids, sums = backups
    boto3.client("s3").create_bucket(Bucket="cli-archive")
    archive = "s3://cli-archive/nightly"
    env = {"AWS_ENDPOINT_URL": moto_endpoint}
    out = arun(rdsbackup, "archive", "--repo", url, "--archive-repo", archive, "--restore-point", ids[1],
               "--storage-class", "DEEP_ARCHIVE", "--json", env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["storage_class"] == "DEEP_ARCHIVE"
    # List and structural verify need no retrieval; --read-data names the packs that need one.
    assert arun(rdsbackup, "list", "--repo", archive, env=env).returncode == 0
    assert arun(rdsbackup, "verify", "--repo", archive, env=env).returncode == 0
    read = arun(rdsbackup, "verify", "--repo", archive, "--read-data", env=env)
    assert read.returncode == EXIT_RETRIEVAL_PENDING, read.stderr
    assert "need a retrieval" in read.stderr and ids[1] in read.stderr and "needs retrieval: pack data/" in read.stdout
    with slow_retrievals() as retrievals:
        expedited = restore(rdsbackup, server, archive, ids[1], "arc_s3", "--retrieval-tier", "Expedited", env=env)
        assert_one_line_failure(expedited, "Expedited is not offered for DEEP_ARCHIVE")
        first = restore(rdsbackup, server, archive, ids[1], "arc_s3", "--retrieval-tier", "Bulk", env=env)
        assert first.returncode == EXIT_RETRIEVAL_PENDING, first.stderr
        assert "being retrieved from DEEP_ARCHIVE" in first.stderr
        assert "retrieval requests made now (tier Bulk)" in first.stderr
        second = restore(rdsbackup, server, archive, ids[1], "arc_s3", env=env)
        assert second.returncode == EXIT_RETRIEVAL_PENDING and "made now" not in second.stderr
        # --wait polls until the retrieval is done, then restores. The retrieval completes only once the
        # restore has said it is waiting (not after a fixed delay, which a busy machine outruns).
        waiting = restore_started(rdsbackup, server, archive, ids[1], "arc_s3", "--wait", "--wait-interval", "1",
                                  env=env)
        try:
            said = ""
            while "waiting:" not in said and waiting.poll() is None:
                said += waiting.stderr.readline()
            retrievals.complete()
            rest, _ = waiting.communicate(timeout=120)
        finally:
            waiting.kill()
    assert waiting.returncode == 0, said + rest
    assert "waiting:" in said
    assert table_checksums(server, "arc_s3") == sums[1]
    assert arun(rdsbackup, "verify", "--repo", archive, "--read-data", env=env).returncode == 0
