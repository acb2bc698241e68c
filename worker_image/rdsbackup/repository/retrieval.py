"""Objects in cold S3 storage classes: which need a retrieval (S3 RestoreObject), asking for it, and
what deleting one early costs.

GLACIER (Flexible Retrieval) and DEEP_ARCHIVE objects cannot be read until a retrieval makes a
temporary copy readable for a number of days; GLACIER_IR and the warm classes read at once. A file://
repository has no storage classes: everything is ready.
"""

from __future__ import annotations

from dataclasses import dataclass

from rdsbackup.errors import RepositoryError
from rdsbackup.repository.backends import Backend, S3Backend

# Classes whose objects must be retrieved before a GET.
NEEDS_RETRIEVAL = frozenset({"GLACIER", "DEEP_ARCHIVE"})
# Tiers each class accepts (S3 user guide, "Archive retrieval options"): Deep Archive has no Expedited.
TIERS = {"GLACIER": ("Expedited", "Standard", "Bulk"), "DEEP_ARCHIVE": ("Standard", "Bulk")}
RETRIEVAL_TIERS = ("Standard", "Bulk", "Expedited")
# Minimum storage durations (days) S3 bills for when an object is deleted earlier.
MIN_STORAGE_DAYS = {"GLACIER": 90, "DEEP_ARCHIVE": 180, "GLACIER_IR": 90, "STANDARD_IA": 30, "ONEZONE_IA": 30}
# USD per GB-month, us-east-1 list prices (the early-deletion charge is reported as an estimate).
PRICE_PER_GB_MONTH = {
    "GLACIER": 0.0036,
    "DEEP_ARCHIVE": 0.00099,
    "GLACIER_IR": 0.004,
    "STANDARD_IA": 0.0125,
    "ONEZONE_IA": 0.01,
}

READY = "ready"
IN_PROGRESS = "in_progress"
ARCHIVED = "archived"


@dataclass
class ObjectState:
    key: str
    size: int
    storage_class: str
    state: str  # READY, IN_PROGRESS (a retrieval runs) or ARCHIVED (nobody asked for one yet)


def object_states(backend: Backend, keys: list[str]) -> list[ObjectState]:
    """The retrieval state of each of `keys` (objects of the repository)."""
    if not isinstance(backend, S3Backend):
        sizes = dict(backend.list("data/"))
        return [ObjectState(k, sizes.get(k, 0), "STANDARD", READY) for k in keys]
    from botocore.exceptions import BotoCoreError, ClientError

    out = []
    for key in keys:
        try:
            head = backend.client.head_object(Bucket=backend.bucket, Key=backend._key(key))
        except (ClientError, BotoCoreError) as exc:
            raise backend._error(exc, key) if isinstance(exc, ClientError) else RepositoryError(
                f"S3 HEAD of {key} in {backend.url} failed: {exc}"
            ) from exc
        storage_class = head.get("StorageClass") or "STANDARD"
        state = _state_of(storage_class, _restoring(head.get("Restore") or ""))
        out.append(ObjectState(key, int(head.get("ContentLength", 0)), storage_class, state))
    return out


def _state_of(storage_class: str, restoring: bool | None) -> str:
    """READY, IN_PROGRESS or ARCHIVED from an object's class and its retrieval (None: none asked for,
    True: running, False: done and the copy readable)."""
    if storage_class not in NEEDS_RETRIEVAL or restoring is False:
        return READY
    return IN_PROGRESS if restoring else ARCHIVED


def _restoring(header: str) -> bool | None:
    """The x-amz-restore header of a HEAD as `_state_of` takes it."""
    if 'ongoing-request="false"' in header:
        return False
    return True if 'ongoing-request="true"' in header else None


def listed_states(backend: Backend, keys: list[str]) -> list[ObjectState]:
    """As `object_states`, from one listing of the packs (ListObjectsV2 with the RestoreStatus attribute)
    instead of a HEAD per object: the caller needs s3:ListBucket only, never s3:GetObject (which HEAD
    needs), so it can follow a retrieval without being able to read a pack. A key not listed is missing."""
    if not isinstance(backend, S3Backend):
        return object_states(backend, keys)
    from botocore.exceptions import BotoCoreError, ClientError

    from rdsbackup.errors import MissingObject

    wanted = set(keys)
    found: dict[str, ObjectState] = {}
    prefix = backend._key("data/")
    try:
        pages = backend.client.get_paginator("list_objects_v2").paginate(
            Bucket=backend.bucket, Prefix=prefix, OptionalObjectAttributes=["RestoreStatus"])
        for page in pages:
            for obj in page.get("Contents", []):
                key = obj["Key"][len(backend._key("")):]
                if key not in wanted:
                    continue
                status = obj.get("RestoreStatus")
                restoring = None if status is None else bool(status.get("IsRestoreInProgress"))
                storage_class = obj.get("StorageClass") or "STANDARD"
                found[key] = ObjectState(key, int(obj.get("Size", 0)), storage_class,
                                         _state_of(storage_class, restoring))
    except ClientError as exc:
        raise backend._error(exc, prefix) from exc
    except BotoCoreError as exc:
        raise RepositoryError(f"S3 listing of {prefix} in {backend.url} failed: {exc}") from exc
    missing = [k for k in keys if k not in found]
    if missing:
        raise MissingObject(f"{len(missing)} packs are missing from {backend.url} (first: {missing[0]})",
                            object_name=missing[0])
    return [found[k] for k in keys]


def check_tier(storage_class: str, tier: str) -> None:
    allowed = TIERS.get(storage_class)
    if allowed is not None and tier not in allowed:
        raise RepositoryError(
            f"retrieval tier {tier} is not offered for {storage_class} objects: use one of {', '.join(allowed)}"
        )


def request_retrieval(backend: Backend, states: list[ObjectState], *, tier: str, days: int) -> int:
    """Ask S3 to retrieve every ARCHIVED object of `states` (tier Standard, Bulk or Expedited) for
    `days` days; returns how many requests were made. A retrieval already running is left alone."""
    if tier not in RETRIEVAL_TIERS:
        raise RepositoryError(f"unknown retrieval tier {tier!r}: use one of {', '.join(RETRIEVAL_TIERS)}")
    todo = [s for s in states if s.state == ARCHIVED]
    for s in todo:
        check_tier(s.storage_class, tier)
    if not todo:
        return 0
    assert isinstance(backend, S3Backend)
    from botocore.exceptions import BotoCoreError, ClientError

    for s in todo:
        try:
            backend.client.restore_object(
                Bucket=backend.bucket,
                Key=backend._key(s.key),
                RestoreRequest={"Days": days, "GlacierJobParameters": {"Tier": tier}},
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "RestoreAlreadyInProgress":
                continue
            raise backend._error(exc, s.key) from exc
        except BotoCoreError as exc:
            raise RepositoryError(f"S3 RestoreObject of {s.key} in {backend.url} failed: {exc}") from exc
        s.state = IN_PROGRESS
    return len(todo)


def early_deletion_charge(storage_class: str, size: int, age_days: float) -> float:
    """USD (list price estimate) S3 bills for deleting an object of `size` bytes `age_days` old."""
    minimum = MIN_STORAGE_DAYS.get(storage_class)
    if minimum is None or age_days >= minimum:
        return 0.0
    return size / 1e9 * PRICE_PER_GB_MONTH.get(storage_class, 0.0) * (minimum - age_days) / 30.0


def object_lock_until(backend: Backend, key: str) -> str | None:
    """The Object Lock retain-until date of `key` (ISO text), or None when it is not locked."""
    if not isinstance(backend, S3Backend):
        return None
    from botocore.exceptions import ClientError

    try:
        head = backend.client.head_object(Bucket=backend.bucket, Key=backend._key(key))
    except ClientError as exc:
        raise backend._error(exc, key) from exc
    until = head.get("ObjectLockRetainUntilDate")
    if until is None or head.get("ObjectLockMode") is None:
        return None
    return until.isoformat() if hasattr(until, "isoformat") else str(until)
