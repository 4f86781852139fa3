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
each other's records; the oldest beyond ``KEEP`` are pruned.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass

from pdm_operator import images, model
from pdm_operator.model import Body

PREFIX = "pdm-history-"
COMPONENT = "pdm-history"
KEEP = 200


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
    #: or a failed run whose progress is unknown): taken as unsafe.
    migrations: list[str] | None

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
        return (
            f"pdm {self.namespace}/{self.name} ({self.outcome.lower()} at {self.completed}, "
            f"GitLab {self.version}): {what}"
        )


def decode(text: str) -> Run | None:
    try:
        raw = json.loads(text)
        migrations = raw.get("migrations")
        return Run(
            namespace=str(raw["namespace"]),
            name=str(raw["name"]),
            uid=str(raw["uid"]),
            version=str(raw["version"]),
            image=str(raw.get("image", "")),
            completed=str(raw.get("completed", "")),
            outcome=str(raw.get("outcome", "Succeeded")),
            migrations=None if migrations is None else [str(m) for m in migrations],
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def runs(configmap: Body | None) -> list[Run]:
    """The records of a history ConfigMap, oldest first (unreadable ones skipped)."""
    found = [decode(v) for v in ((configmap or {}).get("data") or {}).values()]
    return sorted((r for r in found if r is not None), key=lambda r: (r.completed, r.key))


def to_prune(configmap: Body | None, keep: int = KEEP) -> list[str]:
    """Keys of the oldest records beyond ``keep``."""
    data = (configmap or {}).get("data") or {}
    ordered = runs(configmap)
    drop = {r.key for r in ordered[: max(0, len(ordered) - keep)]}
    return sorted(k for k in data if k in drop)


# --- versions -------------------------------------------------------------------
_VERSION = re.compile(r"^v?(\d+(?:\.\d+)*)(?:-(rc\d+))?(?:[-+.].*)?$")


@dataclass(frozen=True, order=True)
class Version:
    """A GitLab version, ordered: 18.6.0-rc2 < 18.6.0 < 18.6.1 < 18.7.202612011206.

    The dotted numbers compare numerically (auto-deploy versions carry a
    timestamp as their patch number); a release candidate (``-rcN``) comes
    before its release; anything else after the numbers (``-ee``, the
    auto-deploy commit shas) does not count.
    """

    numbers: tuple[int, ...]
    final: bool
    rc: int

    @classmethod
    def parse(cls, text: str) -> Version | None:
        m = _VERSION.match(text.strip())
        if m is None:
            return None
        numbers = tuple(int(n) for n in m.group(1).split("."))
        while len(numbers) < 3:
            numbers = (*numbers, 0)
        rc = m.group(2)
        return cls(numbers, rc is None, int(rc[2:]) if rc else 0)


def deployed_version(migration: Body, image: str) -> str:
    """``spec.gitlabVersion``, else the tag of the image the migration ran."""
    given = (migration.get("spec") or {}).get("gitlabVersion")
    if given:
        return str(given)
    return images.tag(image) or image


def unsafe(records: list[Run], target: str) -> list[Run]:
    """The runs that make a rollback to ``target`` unsafe, oldest first.

    A run that applied (or may have applied) migrations at a version above
    ``target``, or at a version that cannot be compared with it.
    """
    wanted = Version.parse(target)
    out = []
    for run in records:
        if run.migrations == []:
            continue  # applied nothing
        ran = Version.parse(run.version)
        if wanted is None or ran is None or ran > wanted:
            out.append(run)
    return out


def floor(records: list[Run]) -> Run | None:
    """The run that sets the rollback floor: the highest version that applied something."""
    candidates = [
        (v, r)
        for r in records
        if r.migrations != []
        for v in [Version.parse(r.version)]
        if v is not None
    ]
    if not candidates:
        return None
    return max(candidates, key=lambda c: (c[0], c[1].completed))[1]


def applied(status: Body, job_hash: str | None) -> list[str] | None:
    """What a run applied, from its pre-flight list; None when that is not known.

    A success applied every pending migration. A failure applied those before
    the one it stopped at (each migration commits on its own), as long as the
    log named it; otherwise the progress is unknown.
    """
    pf = status.get("preflight") or {}
    if pf.get("phase") != "Succeeded" or (job_hash and pf.get("jobHash") != job_hash):
        return None
    pending = [str(m.get("version")) for m in status.get("pendingMigrations") or []]
    if int(pf.get("pendingCount") or 0) > len(pending):
        return None  # the list in the status was cut: not all of it is known
    if status.get("jobOutcome") == "Succeeded":
        return pending
    stopped = ((status.get("failure") or {}).get("migration") or {}).get("version")
    if stopped and stopped in pending:
        return pending[: pending.index(stopped)]
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
