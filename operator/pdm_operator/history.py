"""Which post-deployment migrations ran at which GitLab version: the rollback floor (pure).

Post-deployment migrations are irreversible and are written for the version
that ships them: they may drop a column the previous version still reads.
Once those of version V have run, rolling the application back below V is no
longer safe. This module keeps, per environment, one record per migration run
that applied something (or may have), and answers whether a rollback to a
version is safe.

Where the records live, and why there: a ConfigMap ``pdm-history-<environment>``
in the operator's lock namespace, beside the environment's Lease. A
PostDeployMigration's own status is not durable enough (GitOps tools prune
old ones, and people delete them); a ConfigMap outlives them, needs no new
API, and ``kubectl get configmap -o yaml`` reads it during an incident. Each
run is one key, added with a JSON merge patch, so two operators never lose
each other's records.

The answers fail closed. A record that cannot be decoded (cut JSON, a field
missing, a key under ``binaryData``) is a run whose version and migrations
are unknown, never no run; a recorded version that is not one of GitLab's
forms (:class:`Version`) cannot be compared with anything; and neither can
an auto-deploy version and a release of the same minor version (auto-deploys
of 18.7 are built from master both before and after 18-7-stable-ee is cut).
Each of these makes a rollback's answer, and the floor, ``unknown``. So does
a history that does not exist or holds nothing: the answer cannot tell "no
migration ever ran" from "the wrong environment or namespace".

Pruning (:func:`to_prune`), decided so that it never changes an answer and no
namespace pushes out another's records:

* Each namespace keeps at most ``KEEP`` records of its own runs; past that,
  only that namespace's oldest records go. Migrations of many namespaces may
  share one environment, and one that runs often must not erase the record
  of another's run.
* A record that an answer still depends on is never pruned, whatever its
  namespace's count: an undecodable record or one whose version cannot be
  read (they make answers unknown until a person looks), and every run no
  other run dominates, the floor first. A run is dominated by a run of a
  version at or above its own that can be compared with it (the newer of
  two at one version dominates the older): any target at or above the
  dominating run is above the dominated one too, and any target below it is
  unsafe anyway, so dropping the dominated run changes no answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

from pdm_operator import images, model
from pdm_operator.model import Body

PREFIX = "pdm-history-"
COMPONENT = "pdm-history"
#: Runs kept per namespace (besides those no answer may lose): about 300
#: bytes each, so even a few namespaces stay far below a ConfigMap's 1 MiB.
KEEP = 100
#: The floor, and a rollback's answer, when they cannot be known.
UNKNOWN = "unknown"


def configmap_name(environment: str) -> str:
    return f"{PREFIX}{environment}"


@dataclass(frozen=True)
class Run:
    """One migration run, as recorded."""

    namespace: str
    name: str
    uid: str
    version: str  # the GitLab version deployed when it ran
    image: str
    completed: str  # RFC 3339
    outcome: str  # Succeeded | Failed
    #: Versions of the migrations it applied; None when unknown (no pre-flight,
    #: or a failed run whose progress is unknown): taken as unsafe. A version
    #: marked as executed counts as applied: ``schema_migrations`` says so now.
    migrations: list[str] | None
    #: Versions pending at the run that it left out (spec.migrations.hold or
    #: only, the environment's holds): still pending after it.
    held: list[str] = field(default_factory=list)
    #: Versions recorded as executed without running them
    #: (spec.migrations.markExecuted): the versions, reason, by, replacement.
    marked: Body | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}.{self.name}.{self.uid[:8]}"

    def encode(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    def describe(self) -> str:
        what = (
            "migrations unknown (no pre-flight list)"
            if self.migrations is None
            else ", ".join(self.migrations)
        )
        if self.marked:
            what += (
                f"; marked executed without running: {', '.join(self.marked.get('versions') or [])}"
                f" by {self.marked.get('by') or 'unknown'} ({self.marked.get('reason') or ''})"
            )
            if self.marked.get("replacement"):
                what += f", replacement: {self.marked['replacement']}"
        if self.held:
            what += f"; held: {', '.join(self.held)}"
        return (
            f"pdm {self.namespace}/{self.name} ({self.outcome.lower()} at {self.completed}, "
            f"GitLab {self.version}): {what}"
        )


@dataclass(frozen=True)
class Unreadable(Run):
    """A history key that cannot be decoded: a run whose version and migrations are
    unknown. A :class:`Run` (version ``unknown``, migrations None), so that
    whatever reads the records counts it as a run that may have applied
    anything, at a version nothing can be compared with."""

    #: The ConfigMap key, and why its value is not a record.
    where: str = ""
    why: str = ""

    @classmethod
    def at(cls, key: str, why: str) -> Unreadable:
        return cls("", key, "", UNKNOWN, "", "", "Unknown", None, where=key, why=why)

    @property
    def key(self) -> str:
        return self.where

    def describe(self) -> str:
        return f"record {self.where!r} cannot be read ({self.why}): its run is unknown"


_STRINGS = ("namespace", "name", "uid", "version", "image", "completed", "outcome")


def decode(text: str) -> Run | None:
    """A record as :meth:`Run.encode` writes it, every field present; None otherwise."""
    try:
        raw = json.loads(text)
    except ValueError:
        return None
    if not isinstance(raw, dict) or any(not isinstance(raw.get(k), str) for k in _STRINGS):
        return None
    if "migrations" not in raw:
        return None
    migrations = raw["migrations"]
    # held and marked are written since holds and marks exist; older records have neither.
    held, marked = raw.get("held", []), raw.get("marked")
    if not (
        (migrations is None or _strings(migrations))
        and _strings(held)
        and (marked is None or (isinstance(marked, dict) and _strings(marked.get("versions"))))
    ):
        return None
    return Run(**{k: raw[k] for k in _STRINGS}, migrations=migrations, held=held, marked=marked)


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _why(text: str) -> str:
    try:
        raw = json.loads(text)
    except ValueError:
        return "not JSON"
    if not isinstance(raw, dict):
        return "not a JSON object"
    missing = [k for k in (*_STRINGS, "migrations") if k not in raw]
    if missing:
        return f"no {', '.join(missing)}"
    return "a field of the wrong type"


def _entries(configmap: Body | None) -> list[tuple[str, Run]]:
    """Each key of a history ConfigMap with what it holds."""
    cm = configmap or {}
    out: list[tuple[str, Run]] = []
    for key, value in (cm.get("data") or {}).items():
        run = decode(value) if isinstance(value, str) else None
        out.append((key, run if run is not None else Unreadable.at(key, _why(str(value)))))
    for key in cm.get("binaryData") or {}:
        out.append((key, Unreadable.at(key, "binary data, not a record")))
    return out


def _order(record: Run) -> tuple[str, str]:
    return (record.completed, record.key)


def runs(configmap: Body | None) -> list[Run]:
    """The records of a history ConfigMap, oldest first; the undecodable ones first of all."""
    return sorted((r for _, r in _entries(configmap)), key=_order)


# --- versions -------------------------------------------------------------------
# The forms GitLab gives a version, each checked at its source:
#
# * Releases are git tags v18.6.0-ee, v18.6.0-rc42-ee (CE: v18.6.0) and
#   CNG image tags v18.6.0; deployments name them 18.6.0-rc42.ee.0
#   (release-tools lib/release_tools/deployments/deployment_version_parser.rb,
#   lib/release_tools/qa/ref.rb TAG_REGEX).
# * Omnibus packages and images: tags 18.6.0+ee.0 and 18.6.0+rc42.ce.0, package
#   versions and Docker image tags 18.6.0-ee.0 and 18.6.0-rc42.ee.0 ("+" is not
#   allowed in an image tag, so it becomes "-"; omnibus-gitlab
#   doc/development/package_version_format.md, lib/gitlab/build/info/docker.rb).
# * Auto-deploy (GitLab.com): release-tools tags omnibus
#   MAJOR.MINOR.TIMESTAMP+<gitlab sha, 11>.<omnibus sha, 11>
#   (lib/release_tools/auto_deploy/tagger/omnibus.rb TAG_FORMAT) and CNG
#   MAJOR.MINOR.TIMESTAMP+<gitlab sha, 11> (…/tagger/cng_image.rb), the
#   TIMESTAMP being the branch head's %Y%m%d%H%M. Deployments carry the
#   package's 18.7.202611221200-a1b2c3d4e5f.f8e5a8b3c2d (deployment_version_parser.rb,
#   qa/ref.rb AUTO_DEPLOY_TAG_REGEX), the omnibus package and image add the
#   build iteration (-0; omnibus-gitlab lib/gitlab/build/info/package.rb
#   release_version), and CNG's images are tagged with the CNG tag's
#   $CI_COMMIT_REF_SLUG (CNG build-scripts/build.sh tag_and_push: lower case,
#   everything but 0-9 and a-z turned into "-"): 18-7-202611221200-a1b2c3d4e5f.
#
# Anything else is not a version: 18-6-stable-ee (a branch), latest, master, a
# sha, 18.6 (a milestone), omnibus nightly and branch builds (13.1.1+rnightly.…,
# +rfbranch.…: master's code under the last tag's number).
_RELEASE = re.compile(
    r"v?(?P<major>\d{1,3})\.(?P<minor>\d{1,3})\.(?P<patch>\d{1,3})"
    r"(?:(?:-rc(?P<rc>\d+))?(?:-(?:ee|ce))?"  # git tags
    r"|[+-](?:rc(?P<omnibus_rc>\d+)\.)?(?:ee|ce)\.\d+)",  # omnibus
    re.IGNORECASE,
)
_AUTO_DEPLOY = re.compile(
    r"(?P<major>\d{1,3})\.(?P<minor>\d{1,3})\.(?P<stamp>\d{12})"
    r"[+-](?P<sha>[0-9a-f]{11,40})(?:\.[0-9a-f]{11,40})?(?:-\d+)?",
    re.IGNORECASE,
)
_AUTO_DEPLOY_SLUG = re.compile(
    r"(?P<major>\d{1,3})-(?P<minor>\d{1,3})-(?P<stamp>\d{12})-(?P<sha>[0-9a-f]{11,40})",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Version:
    """A GitLab version: a release (18.6.0-rc2 < 18.6.0 < 18.6.1) or an auto-deploy
    build (18.7.202612011206-<sha>.<sha>, ordered by its timestamp).

    Only partly ordered (:meth:`compare`): an auto-deploy build and a release
    of the same minor version cannot be ordered, nor two auto-deploy builds
    of one timestamp and different commits. The edition (-ee, -ce) and the
    omnibus release number do not count.
    """

    major: int
    minor: int
    #: A release's patch number, or an auto-deploy build's timestamp.
    patch: int
    #: The release candidate's number; None for a final release or an auto-deploy build.
    rc: int | None = None
    #: An auto-deploy build's GitLab commit (11 hex digits); None for a release.
    commit: str | None = None

    @classmethod
    def parse(cls, text: str) -> Version | None:
        text = text.strip()
        m = _RELEASE.fullmatch(text)
        if m is not None:
            rc = m.group("rc") or m.group("omnibus_rc")
            return cls(
                int(m.group("major")),
                int(m.group("minor")),
                int(m.group("patch")),
                rc=None if rc is None else int(rc),
            )
        m = _AUTO_DEPLOY.fullmatch(text) or _AUTO_DEPLOY_SLUG.fullmatch(text)
        if m is not None:
            return cls(
                int(m.group("major")),
                int(m.group("minor")),
                int(m.group("stamp")),
                commit=m.group("sha").lower()[:11],
            )
        return None

    @property
    def auto_deploy(self) -> bool:
        return self.commit is not None

    def compare(self, other: Version) -> int | None:
        """-1, 0 or 1 as ``self`` is below, the same as or above ``other``; None
        when the two cannot be ordered."""
        if (self.major, self.minor) != (other.major, other.minor):
            return _sign((self.major, self.minor), (other.major, other.minor))
        if self.auto_deploy != other.auto_deploy:
            return None
        if self.auto_deploy:
            if self.patch == other.patch and self.commit != other.commit:
                return None
            return _sign((self.patch,), (other.patch,))
        # A release candidate comes before its release.
        mine = (self.patch, int(self.rc is None), self.rc or 0)
        theirs = (other.patch, int(other.rc is None), other.rc or 0)
        return _sign(mine, theirs)

    def __str__(self) -> str:
        if self.commit is not None:
            return f"{self.major}.{self.minor}.{self.patch}+{self.commit}"
        rc = "" if self.rc is None else f"-rc{self.rc}"
        return f"{self.major}.{self.minor}.{self.patch}{rc}"


def _sign(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    return (a > b) - (a < b)


def deployed_version(migration: Body, image: str) -> str:
    """``spec.gitlabVersion``, else the tag of the image the migration ran.

    When both are given and both are GitLab versions, the higher of the two:
    the record sets the rollback floor, and a ``gitlabVersion`` below the
    image that ran would let a rollback below that image pass as safe.
    """
    given = str((migration.get("spec") or {}).get("gitlabVersion") or "")
    tag = images.tag(image) or ""
    if not given:
        return tag or image
    mine, theirs = Version.parse(given), Version.parse(tag)
    if mine is not None and theirs is not None and theirs.compare(mine) == 1:
        return tag
    return given


def unreadable_version(migration: Body, image: str) -> str | None:
    """Why a run of ``migration`` with ``image`` would be recorded at no GitLab version.

    Such a record makes every rollback answer of the environment unknown
    until someone mends it by hand, so a run is not started with one.
    """
    version = deployed_version(migration, image)
    if Version.parse(version) is not None:
        return None
    return (
        f"the GitLab version this run would be recorded at, {version!r} (spec.gitlabVersion, "
        "else the image's tag), is not one of GitLab's version forms, and the environment's "
        "rollback answers would all become unknown; create the PostDeployMigration again with "
        "spec.gitlabVersion set (e.g. 18.6.1, or 18.7.202611221200-a1b2c3d4e5f.f8e5a8b3c2d)"
    )


# --- answers --------------------------------------------------------------------
def _applied_something(record: Run) -> bool:
    return record.migrations != []


def why_unknown(record: Run) -> str | None:
    """Why ``record`` cannot be ordered with anything; None when it can."""
    if isinstance(record, Unreadable):
        return record.describe()
    if Version.parse(record.version) is None:
        return (
            f"pdm {record.namespace}/{record.name}: its version {record.version!r} is not a "
            "GitLab version (set spec.gitlabVersion)"
        )
    return None


@dataclass(frozen=True)
class Answer:
    """Whether a rollback to a version is safe, by the records of an environment."""

    #: Nothing is recorded: whether anything ran is unknown.
    empty: bool
    #: Runs that applied (or may have applied) migrations above the target: unsafe.
    above: list[Run] = field(default_factory=list)
    #: Runs that cannot be compared with the target (undecodable, an
    #: unreadable version, a version that cannot be ordered with it).
    unknown: list[Run] = field(default_factory=list)

    @property
    def safe(self) -> bool:
        return not self.empty and not self.above and not self.unknown


def judge(records: Sequence[Run], target: Version) -> Answer:
    """What ``records`` say of a rollback to ``target``: unsafe, unknown, or safe."""
    above: list[Run] = []
    unknown: list[Run] = []
    for record in records:
        if not _applied_something(record):
            continue
        ran = None if isinstance(record, Unreadable) else Version.parse(record.version)
        order = None if ran is None else ran.compare(target)
        if order is None:
            unknown.append(record)
        elif order > 0:
            above.append(record)
    return Answer(not records, above, unknown)


def unsafe(records: Sequence[Run], target: str) -> list[Run]:
    """The records that make a rollback to ``target`` unsafe or unknown, oldest first.

    A run that applied (or may have applied) migrations at a version above
    ``target``, or at a version that cannot be compared with it; a record
    that cannot be read. Every record when ``target`` is not a version.
    """
    wanted = Version.parse(target)
    if wanted is None:
        return [r for r in records if _applied_something(r)]
    answer = judge(records, wanted)
    return sorted([*answer.above, *answer.unknown], key=_order)


@dataclass(frozen=True)
class Unknown:
    """The floor when it cannot be known; ``version`` reads ``unknown`` wherever
    the floor is shown (status, metric), and ``why`` says what to look at."""

    why: tuple[str, ...]
    version: str = UNKNOWN

    def describe(self) -> str:
        return "; ".join(self.why)


def _needed(records: Sequence[Run]) -> list[Run]:
    """The records an answer depends on: unknown ones, and the runs no other dominates.

    A run is dominated by one of an ordered version at or above its own (the
    newer record of two at one version): that run answers for it.
    """
    known = [
        (r, v)
        for r in records
        if _applied_something(r) and not isinstance(r, Unreadable)
        for v in [Version.parse(r.version)]
        if v is not None
    ]

    def dominated(run: Run, version: Version) -> bool:
        for other, theirs in known:
            order = theirs.compare(version)
            if order is not None and (order > 0 or (order == 0 and _order(other) > _order(run))):
                return True
        return False

    out: list[Run] = []
    for record in records:
        if not _applied_something(record):
            continue
        if isinstance(record, Unreadable):
            out.append(record)
            continue
        mine = Version.parse(record.version)
        if mine is None or not dominated(record, mine):
            out.append(record)
    return out


def floor(records: Sequence[Run]) -> Run | Unknown | None:
    """The run that sets the rollback floor: the highest version that applied something.

    :class:`Unknown` when nothing is recorded, when a record or its version
    cannot be read, or when the highest runs cannot be ordered; None when the
    records say that nothing was applied. A rollback to the floor or above is
    exactly what :func:`judge` answers safe.
    """
    if not records:
        return Unknown(("no run is recorded",))
    needed = _needed(records)
    if not needed:
        return None
    why = [w for r in needed for w in [why_unknown(r)] if w is not None]
    if why:
        return Unknown(tuple(why))
    tops = needed
    versions = [Version.parse(r.version) for r in tops]
    if any(a.compare(b) is None for a in versions if a for b in versions if b):
        return Unknown(
            (
                f"the versions {', '.join(r.version for r in tops)} cannot be ordered "
                "(an auto-deploy build and a release of one minor version, or two auto-deploy "
                "builds of one timestamp)",
            )
        )
    return max(tops, key=_order)


def to_prune(configmap: Body | None, keep: int = KEEP) -> list[str]:
    """Keys to remove: per namespace, its oldest records beyond ``keep`` that no
    answer depends on (see the module's docstring)."""
    entries = _entries(configmap)
    needed = {id(r) for r in _needed([r for _, r in entries])}
    by_namespace: dict[str, list[tuple[str, Run]]] = {}
    for key, record in entries:
        if not isinstance(record, Unreadable):
            by_namespace.setdefault(record.namespace, []).append((key, record))
    drop: list[str] = []
    for own in by_namespace.values():
        own.sort(key=lambda e: _order(e[1]))
        excess = len(own) - keep
        for key, record in own:
            if excess <= 0:
                break
            if id(record) not in needed:
                drop.append(key)
                excess -= 1
    return sorted(drop)


def floor_version(records: Iterable[Run]) -> str | None:
    """The floor as status and metric show it: a version, ``unknown``, or None (nothing applied)."""
    top = floor(list(records))
    return None if top is None else top.version


def applied(status: Body, job_hash: str | None) -> list[str] | None:
    """What a run applied, from its pre-flight list; None when that is not known.

    A success applied every pending migration. A failure applied those before
    the one it stopped at (each migration commits on its own), and may have
    applied part of that one (GitLab's post-deployment migrations often run
    outside a transaction, ``disable_ddl_transaction!``), so it counts too;
    as long as the log named it; otherwise the progress is unknown.
    """
    pf = status.get("preflight") or {}
    if pf.get("phase") != "Succeeded" or (job_hash and pf.get("jobHash") != job_hash):
        return None
    entries = status.get("pendingMigrations") or []
    pending = [str(m.get("version")) for m in entries]
    if int(pf.get("pendingCount") or 0) > len(pending):
        return None  # the list in the status was cut: not all of it is known
    if any("action" in m for m in entries):
        # A selection's Job acts on its versions one at a time, oldest first,
        # every database at each (pdm_operator.selection): held ones never ran.
        pending = sorted({str(m.get("version")) for m in entries if m.get("action") != "Hold"})
    if status.get("jobOutcome") == "Succeeded":
        return pending
    stopped = ((status.get("failure") or {}).get("migration") or {}).get("version")
    if stopped and stopped in pending:
        return pending[: pending.index(stopped) + 1]
    return None


def configmap(environment: str, namespace: str) -> Body:
    """An empty history ConfigMap for ``environment``."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": configmap_name(environment),
            "namespace": namespace,
            "labels": {
                model.LABEL_MANAGED_BY: "pdm-operator",
                model.LABEL_COMPONENT: COMPONENT,
                model.LABEL_ENVIRONMENT: environment,
            },
        },
        "data": {},
    }
