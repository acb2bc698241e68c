"""The repository: init/open, backups (BackupWriter), reading, listing, verify, forget, prune, copy.

Object layout under the repository URL (see docs/repository-format.md):

    config                plaintext JSON: format name and version, repository id
    keys/<id>             plaintext JSON: the master key wrapped by KMS or a passphrase
    data/<xx>/<pack id>   packs of sealed blocks
    index/<id>            sealed index objects
    manifests/<rp id>     sealed restore point manifests (JSON)
    locks/<id>            sealed lock objects
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime

from rdsbackup.errors import (
    BackupAborted,
    CorruptObject,
    MissingObject,
    RepositoryDamaged,
    RepositoryError,
    RepositoryExists,
    RepositoryNotFound,
    RestorePointNotFound,
    WrongRepositoryKey,
)
from rdsbackup.repository import crypto
from rdsbackup.repository.backends import Backend, backend_for
from rdsbackup.repository.chunking import profile as chunking_profile
from rdsbackup.repository.config import (
    FORMAT_NAME,
    FORMAT_VERSION,
    chunk_id_scheme,
    decode_config,
    decode_key_doc,
    with_checksum,
)
from rdsbackup.repository.crypto import AuthenticationFailed, Keys
from rdsbackup.repository.damage import DamageRegistry, load_damage
from rdsbackup.repository.index import Index, encode_new_entries, pack_id_from_key
from rdsbackup.repository.locks import Lock, default_lifetime
from rdsbackup.repository.memory import tune_allocator_for_streaming
from rdsbackup.repository.packs import Packer, Stats, Uploader
from rdsbackup.repository.streams import BLOCK_AD, StreamReader, write_stream

INDEX_AD = b"rdsbackup index"
MANIFEST_AD = b"rdsbackup manifest"
PASSWORD_ENV = "RDSBACKUP_PASSWORD"


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def _by_source(restore_points: list[dict]) -> dict[str, list[dict]]:
    """Readable restore points per source id, oldest first (unreadable ones: no policy applies to them)."""
    out: dict[str, list[dict]] = {}
    for rp in restore_points:
        if "error" not in rp:
            out.setdefault(rp.get("source_id", ""), []).append(rp)
    return out


def current_chains(restore_points: list[dict]) -> dict[str, list[dict]]:
    """Per source id, the points of the database its newest point was taken from. A database recreated
    under the same name has a new resource id (`source_resource_id`, recorded at backup time): the
    points of the old one are another chain. A point that records no resource id (written before it was
    recorded) belongs to whatever chain is current."""
    out = {}
    for source, rps in _by_source(restore_points).items():
        current = next((rp["source_resource_id"] for rp in reversed(rps) if rp.get("source_resource_id")), None)
        out[source] = [rp for rp in rps if rp.get("source_resource_id") in (None, current)]
    return out


def old_chains(restore_points: list[dict]) -> dict[str, dict[str, list[str]]]:
    """Per source id, the older chains: {source_id: {old resource id: [restore point ids]}}. Retention
    neither counts nor forgets them; the backup-account session warns about them."""
    out: dict[str, dict[str, list[str]]] = {}
    current = {source: {rp["id"] for rp in rps} for source, rps in current_chains(restore_points).items()}
    for source, rps in _by_source(restore_points).items():
        for rp in rps:
            if rp["id"] not in current[source]:
                out.setdefault(source, {}).setdefault(rp["source_resource_id"], []).append(rp["id"])
    return out


def _password(password: str | None) -> str:
    if password is None:
        password = os.environ.get(PASSWORD_ENV)
    if not password:
        raise WrongRepositoryKey(
            f"no repository passphrase: pass one or set {PASSWORD_ENV} (or use a KMS-keyed repository)"
        )
    return password


def _find_refs(value, out: set[str]) -> None:
    """Collect the root ids of every stream ref ({"blob": hex, "size": n, ...}) inside metadata."""
    if isinstance(value, dict):
        blob = value.get("blob")
        if isinstance(blob, str) and "size" in value and len(blob) == 32:
            out.add(blob)
        for v in value.values():
            _find_refs(v, out)
    elif isinstance(value, list):
        for v in value:
            _find_refs(v, out)


class Repository:
    """An opened repository. See the module docstring of `rdsbackup.repository` for the API."""

    def __init__(self, backend: Backend, config: dict, keys: Keys):
        self.backend = backend
        self.url = backend.url
        self.config = config
        self.id = config["id"]
        self._keys = keys
        self._stats = Stats()
        self._index_obj: Index | None = None
        self._index_keys: list[str] = []
        self.bad_index_objects: dict[str, str] = {}
        self.damage = DamageRegistry()
        self._index_lock = threading.Lock()
        # Lock lifetime (stale threshold; refresh bound = half of it): $RDSBACKUP_LOCK_LIFETIME or 30 min.
        self.lock_ttl = default_lifetime()
        # Seconds to wait for a conflicting lock (None: each operation's default); every wait is
        # reported to `on_lock_wait` (the CLI prints it on stderr) and kept in `lock_waits`.
        self.lock_wait: float | None = None
        # recorded in every manifest this Repository commits (the job: the source's resource id)
        self.manifest_defaults: dict = {}
        self.on_lock_wait = None
        self.lock_waits: list[dict] = []
        self._exclusive: Lock | None = None
        self.upload_threads = 2

    # --- init / open ---------------------------------------------------------------------------

    @classmethod
    def init(cls, url: str, *, kms_key_id: str | None = None, password: str | None = None,
             kind: str | None = None, chunk_ids: str = crypto.CHUNK_ID_BLAKE3) -> Repository:
        """Create a repository at `url`: RepositoryExists if one is there already. `kind="archive"`
        marks an archive repository (see rdsbackup.repository.archive); `chunk_ids` is how it names
        its chunks (an archive repository takes its source's)."""
        backend = backend_for(url)
        if backend.exists("config"):
            raise RepositoryExists(f"a repository already exists at {backend.url}")
        repo_id = os.urandom(16).hex()
        if kms_key_id:
            master, key_doc = crypto.wrap_with_kms(kms_key_id, repo_id)
        else:
            master = os.urandom(32)
            key_doc = crypto.wrap_with_password(master, _password(password), repo_id)
        key_doc["created"] = _now_iso()
        config = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "id": repo_id, "created": _now_iso(),
                  "chunk_id": chunk_ids}
        if kind:
            config["kind"] = kind
        # Key first, config last: a repository exists (for open and init) once its config does. The
        # config is written only if absent, so of two concurrent inits exactly one wins; the loser's
        # key document (for a master key nobody uses) is removed.
        key_name = f"keys/{os.urandom(8).hex()}"
        backend.put(key_name, with_checksum(key_doc))
        if not backend.put_new("config", with_checksum(config)):
            backend.delete(key_name)
            raise RepositoryExists(f"a repository already exists at {backend.url} (created concurrently)")
        return cls(backend, config, Keys(master, chunk_id_scheme=chunk_ids))

    @classmethod
    def open(cls, url: str, *, password: str | None = None) -> Repository:
        """Open the repository at `url` with its KMS key or passphrase (default: $RDSBACKUP_PASSWORD)."""
        backend = backend_for(url)
        try:
            raw = backend.get("config")
        except MissingObject:
            raise RepositoryNotFound(f"no repository at {backend.url} (no config object)") from None
        config = decode_config(raw, backend.url)
        key_docs = []
        damaged = []
        for key, _size in backend.list("keys/"):
            try:
                key_docs.append((key, decode_key_doc(backend.get(key), key, backend.url)))
            except MissingObject:
                continue
            except RepositoryDamaged as exc:
                damaged.append(str(exc))
        if not key_docs:
            if damaged:
                raise RepositoryDamaged("; ".join(damaged))
            raise RepositoryDamaged(f"repository {backend.url} has no key objects (keys/ is empty)")
        master = None
        errors = []
        for key, doc in sorted(key_docs, key=lambda kd: kd[1].get("type") != "kms"):
            try:
                if doc.get("type") == "kms":
                    master = crypto.unwrap_with_kms(doc, config["id"])
                else:
                    master = crypto.unwrap_with_password(doc, _password(password), config["id"])
                if master is not None:
                    break
            except WrongRepositoryKey as exc:
                # Without checksums (format 1) a damaged key object or config id looks the same as a
                # wrong passphrase: say so.
                hint = "" if "checksum" in doc and "checksum" in config else (
                    f" (or key object {key} or the config is damaged: format 1 objects carry no checksum)")
                errors.append(f"{exc}{hint}")
        if master is None:
            errors += damaged
            raise WrongRepositoryKey(f"cannot open repository {backend.url}: {'; '.join(errors) or 'no usable key'}")
        return cls(backend, config, Keys(master, chunk_id_scheme=chunk_id_scheme(config)))

    @property
    def stats(self) -> dict:
        """Counters since open: objects_written, bytes_written, puts."""
        return self._stats.as_dict()

    def _put(self, key: str, data: bytes) -> None:
        self.backend.put(key, data)
        self._stats.record(len(data))

    # --- index ---------------------------------------------------------------------------------

    def _index(self, *, reload: bool = False) -> Index:
        """The in-memory index (the union of the index objects), loaded once or reloaded. Chunks in
        blocks the damage registry names are left out; an index object that does not open is skipped
        and named in `bad_index_objects` (backups then store its chunks again; readers and prune say to
        run `rdsbackup repair index`)."""
        with self._index_lock:
            if self._index_obj is None or reload:
                self.damage = load_damage(self.backend, self._keys)
                index = Index()
                keys = []
                bad: dict[str, str] = {}
                for key, _size in sorted(self.backend.list("index/")):
                    try:
                        sealed = self.backend.get(key)
                    except MissingObject:
                        continue  # replaced by a prune meanwhile; its successor is listed too
                    try:
                        index.load(self._keys.open(sealed, INDEX_AD), self.damage)
                    except (AuthenticationFailed, ValueError, struct.error) as exc:
                        bad[key] = (f"index object {key} in {self.url} is damaged ({exc}): run "
                                    f"`rdsbackup repair index` to rebuild the index from the packs")
                        continue
                    keys.append(key)
                self._index_obj = index
                self._index_keys = keys
                self.bad_index_objects = bad
            return self._index_obj

    # --- backup --------------------------------------------------------------------------------

    # --- locks ---------------------------------------------------------------------------------

    def _lock_wait(self, given: float | None) -> float:
        """How long to wait for a lock: the caller's value, the repository's, or a lifetime and a minute
        (so that a crashed prune's lock on another host is always waited out)."""
        if given is not None:
            return given
        if self.lock_wait is not None:
            return self.lock_wait
        return self.lock_ttl + 60.0

    def _heard_wait(self, event: dict) -> None:
        self.lock_waits.append(event)
        if self.on_lock_wait is not None:
            self.on_lock_wait(event)

    def take_lock(self, kind: str, owner: str, *, wait: float | None = None) -> Lock:
        """Acquire a lock of `kind` ("backup", "restore", "verify", "archive": shared; "exclusive")."""
        lock = Lock(self.backend, self._keys, kind, owner=owner, ttl=self.lock_ttl, on_wait=self._heard_wait)
        return lock.acquire(wait=self._lock_wait(wait))

    @contextlib.contextmanager
    def shared_lock(self, kind: str, owner: str, *, wait: float | None = None):
        """Hold a shared lock ("restore", "verify", "archive") for the block: prune cannot run meanwhile. Inside an
        exclusive lock of this Repository nothing more is taken."""
        if self._exclusive is not None:
            yield self._exclusive
            return
        lock = self.take_lock(kind, owner, wait=wait)
        try:
            yield lock
        finally:
            lock.release()

    @contextlib.contextmanager
    def exclusive_lock(self, owner: str, *, wait: float | None = None):
        """Hold the exclusive lock for the block (re-entrant within this Repository): no backup,
        restore, verify or other prune runs meanwhile."""
        if self._exclusive is not None:
            yield self._exclusive
            return
        lock = self.take_lock("exclusive", owner, wait=0.0 if wait is None and self.lock_wait is None else wait)
        self._exclusive = lock
        try:
            yield lock
        finally:
            self._exclusive = None
            lock.release()

    # --- backup --------------------------------------------------------------------------------

    def begin_backup(self, *, source_id: str, engine: str, lock_wait: float | None = None) -> BackupWriter:
        """Start a backup: takes a shared backup lock, waiting up to `lock_wait` seconds (default: the
        repository's `lock_wait`, else the lock lifetime and a minute) for a running prune to end
        (RepositoryLocked after that). The backup stops (LockLost) if its lock goes unrefreshed for
        longer than the refresh bound."""
        tune_allocator_for_streaming()
        lock = self.take_lock("backup", f"backup of {source_id}", wait=lock_wait)
        try:
            # Reload: backups committed since open are dedup candidates, and what a prune removed is not.
            index = self._index(reload=True)
        except BaseException:
            lock.release()
            raise
        return BackupWriter(self, index, lock, source_id=source_id, engine=engine)

    # --- manifests -----------------------------------------------------------------------------

    def _manifest_ids(self) -> list[str]:
        return [key.rsplit("/", 1)[-1] for key, _ in self.backend.list("manifests/")]

    def _read_manifest(self, rp_id: str) -> dict:
        key = f"manifests/{rp_id}"
        try:
            sealed = self.backend.get(key)
        except MissingObject:
            raise RestorePointNotFound(f"restore point {rp_id} not found in {self.url}") from None
        try:
            doc = json.loads(self._keys.open(sealed, MANIFEST_AD + rp_id.encode()))
        except (AuthenticationFailed, ValueError) as exc:
            raise CorruptObject(
                f"manifest {key} in {self.url} is corrupt ({exc})", object_name=key, restore_point=rp_id
            ) from None
        return doc

    def load_manifest(self, rp_id: str) -> dict:
        """The metadata given to commit, plus id and time (and size, new_bytes, chunks)."""
        if not rp_id or "/" in rp_id:
            raise RestorePointNotFound(f"restore point {rp_id!r} not found in {self.url}")
        return self._read_manifest(rp_id)

    def list_restore_points(self, source_id: str | None = None) -> list[dict]:
        """Summaries of the restore points (manifests without the stream refs), oldest first. A manifest
        that cannot be read is listed as {"id", "time": "", "error"}."""

        def read(rp_id: str) -> dict | None:
            try:
                return self._read_manifest(rp_id)
            except RestorePointNotFound:
                return None  # forgotten meanwhile
            except CorruptObject as exc:
                # Listed, not hidden and not fatal to the listing: verify and restore report it too.
                return {"id": rp_id, "time": "", "error": str(exc)}

        self.damage = load_damage(self.backend, self._keys)  # restore points marked by `repair points`
        with ThreadPoolExecutor(max_workers=8, thread_name_prefix="rdsbackup-list") as pool:
            docs = list(pool.map(read, self._manifest_ids()))
        out = []
        for doc in docs:
            if doc is None or (source_id is not None and doc.get("source_id") != source_id):
                continue
            summary = {k: v for k, v in doc.items() if k not in ("streams", "stream_roots")}
            if doc.get("id") in self.damage.restore_points:
                summary["damaged"] = self.damage.restore_points[doc["id"]]
            out.append(summary)
        out.sort(key=lambda d: (d.get("time", ""), d.get("id", "")))
        return out

    # --- reading -------------------------------------------------------------------------------

    def open_stream(self, ref: dict, *, restore_point: str | None = None,
                    part: tuple[int, int] | None = None, separator: bytes = b"\n") -> Iterator[bytes]:
        """Yield the stream's bytes (in pieces of a few MiB), verifying every chunk. CorruptObject and
        MissingObject name the pack (and `restore_point`, when given). With `part=(p, n)`, only part p
        of n of a stream of `separator`-terminated records (StreamReader.iter_part): n readers load one
        stream side by side."""
        try:
            root = bytes.fromhex(ref["blob"])
        except (KeyError, TypeError, ValueError):
            raise RepositoryError(f"not a stream reference: {ref!r}") from None
        tune_allocator_for_streaming()
        reader = StreamReader(self, restore_point=restore_point)
        if part is not None:
            return reader.iter_part(root, part[0], part[1], separator=separator)
        return reader.iter_stream(root)

    def read_streams(self, refs: list[dict], *, restore_point: str | None = None) -> Iterator[bytearray]:
        """The bytes of each stream of `refs`, whole and in order, every chunk verified, their blocks read
        together (StreamReader.read_streams): for many small streams, such as a batch of small tables."""
        roots = []
        for ref in refs:
            try:
                roots.append(bytes.fromhex(ref["blob"]))
            except (KeyError, TypeError, ValueError):
                raise RepositoryError(f"not a stream reference: {ref!r}") from None
        return StreamReader(self, restore_point=restore_point).read_streams(roots)

    def read_stream_to(self, ref: dict, fileobj, *, restore_point: str | None = None) -> int:
        n = 0
        for piece in self.open_stream(ref, restore_point=restore_point):
            fileobj.write(piece)
            n += len(piece)
        return n

    # --- verify --------------------------------------------------------------------------------

    def verify(self, rp_id: str | None = None, *, read_data: bool = False, lock_wait: float | None = None) -> dict:
        """Check structure (see `_verify`) under a shared "verify" lock, so no prune runs meanwhile."""
        with self.shared_lock("verify", "verify", wait=lock_wait):
            return self._verify(rp_id, read_data=read_data)

    def _verify(self, rp_id: str | None = None, *, read_data: bool = False) -> dict:
        from rdsbackup.repository.verify import verify

        return verify(self, rp_id, read_data=read_data)

    # --- retention -----------------------------------------------------------------------------

    def forget(
        self, *, keep_last: int | None = None, keep_days: float | None = None, source_id: str | None = None,
        keep_ids: set[str] | frozenset[str] = frozenset(), min_age_seconds: float = 0,
    ) -> list[str]:
        """Remove the manifests that the policy does not keep, per source id (a restore point is kept
        if it is among the newest `keep_last` of its source or younger than `keep_days`, or its id is in
        `keep_ids`: e.g. not archived yet). Never a point younger than `min_age_seconds` (a burst of
        backups must not flush history), nor one of an older chain of its source (`old_chains`): only the
        chain of the database the newest point was taken from counts. Returns the removed ids. Data goes
        with the next prune."""
        if keep_last is None and keep_days is None:
            raise ValueError("forget needs keep_last and/or keep_days")
        if (keep_last is not None and keep_last < 0) or (keep_days is not None and keep_days < 0):
            raise ValueError("keep_last and keep_days must not be negative")
        now = time.time()
        removed = []
        for rps in current_chains(self.list_restore_points(source_id)).values():
            newest_first = list(reversed(rps))
            for n, rp in enumerate(newest_first):
                age = now - _parse_time(rp["time"])
                keep = age < min_age_seconds
                if keep_last is not None and n < keep_last:
                    keep = True
                if keep_days is not None and age <= keep_days * 86400:
                    keep = True
                if not keep and rp["id"] not in keep_ids:
                    removed.append(rp["id"])
        for rp_id in removed:
            self.backend.delete(f"manifests/{rp_id}")
        return sorted(removed)

    def forget_restore_points(self, rp_ids: list[str]) -> list[str]:
        """Remove exactly these restore points (their manifests; data goes with the next prune), even
        ones whose manifest is damaged. RestorePointNotFound before anything is removed if one is
        unknown."""
        known = set(self._manifest_ids())
        unknown = [rp for rp in rp_ids if rp not in known]
        if unknown:
            raise RestorePointNotFound(f"restore point(s) {', '.join(unknown)} not found in {self.url}: "
                                       "nothing forgotten")
        self.backend.delete_many([f"manifests/{rp}" for rp in rp_ids])
        return sorted(set(rp_ids))

    def prune(self, *, repack_below: float = 0.5, lock_wait: float | None = None,
              unsafe_disk_full: bool = False) -> dict:
        """Delete data no restore point references. Takes the exclusive lock (unless this Repository
        holds it already): RepositoryLocked while a backup, restore or verify runs (a running backup
        may reference any indexed chunk). Packs less than `repack_below` used are rewritten with
        their live blocks only. `unsafe_disk_full` (CLI --disk-full): for a repository on a full disk,
        takes no lock (the operator makes sure nothing else runs) and frees space before writing."""
        from rdsbackup.repository.prune import prune

        if unsafe_disk_full:
            return prune(self, repack_below=repack_below, lock=self._exclusive, disk_full=True)
        with self.exclusive_lock("prune", wait=lock_wait) as lock:
            return prune(self, repack_below=repack_below, lock=lock)

    def upgrade(self, *, lock_wait: float | None = None) -> dict:
        """Make a format 1 repository format 2: rewrite every pack that has no trailer (its live blocks
        move to new, self-describing packs; a prune on the way), then write the config with version 2
        and a checksum. Idempotent; a crash part-way leaves a readable repository to upgrade again."""
        from rdsbackup.repository.packs import TrailerMissing, read_trailer
        from rdsbackup.repository.prune import prune

        with self.exclusive_lock("upgrade", wait=lock_wait) as lock:
            old = []
            for key, size in self.backend.list("data/"):
                pid = pack_id_from_key(key)
                if pid is None:
                    continue
                try:
                    read_trailer(self.backend, self._keys, pid, size)
                except TrailerMissing:
                    old.append(pid)
                except (AuthenticationFailed, ValueError):
                    old.append(pid)  # a damaged trailer: the rewrite gives the pack a good one
            result = prune(self, lock=lock, rewrite=set(old))
            from_version = self.config.get("version")
            if from_version != FORMAT_VERSION:
                config = {k: v for k, v in self.config.items() if k != "checksum"}
                config["version"] = FORMAT_VERSION
                # Its chunks keep the names they have (rehashing would mean rewriting every pack).
                config["chunk_id"] = chunk_id_scheme(config)
                config["upgraded"] = _now_iso()
                self.backend.replace("config", with_checksum(config))
                self.config = config
                for key, _size in self.backend.list("keys/"):
                    doc = json.loads(self.backend.get(key))
                    if "checksum" not in doc:
                        self.backend.replace(key, with_checksum(doc))
        return {"from_version": from_version, "version": FORMAT_VERSION, "packs_rewritten": len(old),
                "prune": result}

    def copy_restore_point(self, rp_id: str, other: Repository) -> str:
        """Copy a restore point into `other` (e.g. an archive repository) as a self-contained full;
        returns its id there."""
        manifest = self.load_manifest(rp_id)
        meta = {k: v for k, v in manifest.items() if k not in ("id", "time", "stream_roots")}
        meta["copied_from"] = {"repository": self.id, "restore_point": rp_id, "time": manifest.get("time")}
        with other.begin_backup(source_id=manifest.get("source_id", ""), engine=manifest.get("engine", "")) as w:
            copied: dict[str, dict] = {}

            def convert(value):
                if isinstance(value, dict):
                    blob = value.get("blob")
                    if isinstance(blob, str) and "size" in value and len(blob) == 32:
                        if blob not in copied:
                            prof = value.get("profile", "bulk")
                            copied[blob] = w.add_stream(
                                "copy", self.open_stream(value, restore_point=rp_id), profile=prof
                            )
                        return {**value, **copied[blob]}
                    return {k: convert(v) for k, v in value.items()}
                if isinstance(value, list):
                    return [convert(v) for v in value]
                return value

            meta = convert(meta)
            for root in manifest.get("stream_roots", []):
                if root not in copied:
                    convert({"blob": root, "size": 0, "profile": "bulk"})
            return w.commit(meta)


# Blocks up to this size are sealed on the thread that closes them (`BackupWriter.seal_block`).
INLINE_SEAL_BYTES = 32 * 1024


class SealedBlock:
    """A block sealed on the calling thread: the `result()` of a done future, without a future's locks."""

    __slots__ = ("size",)

    def __init__(self, size: int):
        self.size = size

    def result(self) -> int:
        return self.size


class BackupWriter:
    """One backup in progress. Use as a context manager; see `Repository.begin_backup`."""

    def __init__(self, repo: Repository, index: Index, lock: Lock, *, source_id: str, engine: str):
        self.repo = repo
        self.keys = repo._keys
        self.index = index
        self.lock = lock
        self.source_id = source_id
        self.engine = engine
        self.started = _now_iso()
        self.uploader = Uploader(repo.backend, repo._stats, threads=repo.upload_threads)
        self.packer = Packer(index, self.uploader, repo._keys)
        # Blocks are compressed and encrypted on these threads (zstd and AES release the GIL) while
        # the caller's thread goes on chunking; the semaphore bounds the blocks held in memory.
        self._sealer = ThreadPoolExecutor(max_workers=2, thread_name_prefix="rdsbackup-seal")
        self._seal_slots = threading.BoundedSemaphore(16)
        # Blocks from number block_base on are this backup's; new_records are its chunks' index entries.
        self.block_base = len(index.blocks)
        self.new_records = bytearray()
        self.roots: list[str] = []
        self._roots_lock = threading.Lock()
        self.size = 0
        self.chunks = 0
        self.new_bytes = 0
        self.done = False

    def __enter__(self) -> BackupWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.done:
            self.abort()

    def seal_block(self, block_no: int, raw: bytearray, records: bytearray) -> Future | SealedBlock:
        """Seal a block and add it to a pack; the result's `result()` is its stored size. A full block
        is sealed on a sealing thread. A small one (a stream's last, the whole of a small table's
        stream) is sealed on the calling thread, which waits for its size next: for a database of
        thousands of small tables, the hand-over to a sealing thread and back costs several times
        the sealing itself."""
        self.uploader.check()
        self.lock.check()  # a backup whose lock was lost stops at once (LockLost), not only at commit
        self._seal_slots.acquire()
        if len(raw) <= INLINE_SEAL_BYTES:
            return SealedBlock(self._seal(block_no, raw, records))
        try:
            return self._sealer.submit(self._seal, block_no, raw, records)
        except BaseException:
            self._seal_slots.release()
            raise

    def _seal(self, block_no: int, raw: bytearray, records: bytearray) -> int:
        try:
            sealed = self.keys.seal(raw, BLOCK_AD)
            self.packer.add_block(block_no, sealed, len(raw), records)
            return len(sealed)
        except BaseException as exc:
            if self.uploader.error is None:
                self.uploader.error = exc
            raise
        finally:
            self._seal_slots.release()

    def add_stream(self, name: str, source, *, profile: str = "bulk") -> dict:
        """Store one stream (an iterable of bytes or a binary file-like object). Thread-safe.
        Returns its ref: {"blob", "size", "chunks", "new_bytes", "profile"}."""
        if self.done:
            raise RepositoryError("the backup was already committed or aborted")
        prof = chunking_profile(profile)
        try:
            ref = write_stream(self, source, prof)
        except BackupAborted:
            raise
        except BaseException:
            # An upload failure is the real cause if there was one. Otherwise the stream is lost but the
            # backup is not: the caller may skip the stream and commit the rest.
            self.uploader.check()
            raise
        with self._roots_lock:
            self.roots.append(ref["blob"])
            self.size += ref["size"]
            self.chunks += ref["chunks"]
            self.new_bytes += ref["new_bytes"]
        return ref

    def commit(self, metadata: dict) -> str:
        """Flush packs, write the index, then the manifest (last); release the lock; return the id."""
        if self.done:
            raise RepositoryError("the backup was already committed or aborted")
        try:
            self._sealer.shutdown(wait=True)
            self.uploader.check()
            self.packer.flush()
            index_bytes = 0
            if self.new_records:
                plain = encode_new_entries(self.index, self.block_base, self.new_records)
                sealed = self.keys.seal(plain, INDEX_AD)
                key = f"index/{os.urandom(16).hex()}"
                self.repo._put(key, sealed)
                index_bytes = len(sealed)
                self.repo._index_keys.append(key)
            roots: set[str] = set(self.roots)
            _find_refs(metadata, roots)
            rp_id = os.urandom(8).hex()
            manifest = dict(metadata)
            manifest.setdefault("source_id", self.source_id)
            manifest.setdefault("engine", self.engine)
            manifest.setdefault("started", self.started)
            manifest.setdefault("size", self.size)
            manifest.setdefault("chunks", self.chunks)
            for key, value in self.repo.manifest_defaults.items():
                manifest.setdefault(key, value)
            manifest["id"] = rp_id
            manifest["time"] = _now_iso()
            manifest["stream_roots"] = sorted(roots)
            manifest["stored_bytes"] = self.new_bytes + index_bytes
            self.lock.check()
            self.repo._put(
                f"manifests/{rp_id}", self.keys.seal(json.dumps(manifest).encode(), MANIFEST_AD + rp_id.encode())
            )
        except BaseException:
            self.abort()
            raise
        self.done = True
        self.uploader.close()
        self.lock.release()
        return rp_id

    def abort(self) -> None:
        """Give up: no manifest is written; uploaded packs stay unreferenced until a prune."""
        if self.done:
            return
        self.done = True
        try:
            self._sealer.shutdown(wait=True, cancel_futures=True)
            self.uploader.close()
        finally:
            self.lock.release()
            # Chunks of this backup are not in any stored index: forget them so a later backup in this
            # process does not dedup against data that no index will ever describe.
            self.repo._index_obj = None
