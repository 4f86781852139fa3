"""The version-skip check: post-deployment migrations of an older minor still pending (pure).

When an upgrade skips a minor version (or a minor's post-deployment
migrations were never run before the next minor was deployed), the regular
migrations of the newer minor have already run while post-deployment
migrations of the older one are still pending; one written for the schema of
its own minor (dropping what the next minor's regular migrations changed,
say) then breaks (GitLab Operator issue 1952; GitLab's zero-downtime upgrades
go one minor at a time for this reason). By the time a PostDeployMigration
runs, the deployed version's regular migrations have run: the chart's
rollout waits for them.

So the check: a pending migration of ``db/post_migrate`` whose milestone is
below the deployed version's minor is a skip. GitLab's migrations name their
milestone (``milestone '17.3'`` in the class: gitlabhq
``lib/gitlab/database/migrations/milestone_mixin.rb``, which refuses to
instantiate a migration without one), and ``db:migrate:status`` does not
print it, so the pre-flight lists, after the status table, each
``db/post_migrate`` file with the first milestone it declares
(:data:`LISTING`).

It fails closed. "Unknown" stops the run the same way, naming why: a
deployed version that is not a GitLab version (an image by digest alone:
set ``spec.gitlabVersion``), a pre-flight log without the listing (args of
the creator's own, a cut log), a pending post-deployment migration that
names no milestone. Either way the plan shows it, and the run waits for an
approval of that plan (``kubectl pdm approve``), which is the acknowledgement.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from pdm_operator import history
from pdm_operator.model import Body

#: The reasons a run waits with (Gated) until its plan is approved.
SKIPPED = "VersionSkipped"
UNKNOWN = "VersionSkipUnknown"
REASONS = (SKIPPED, UNKNOWN)

BEGIN = "pdm-operator: db/post_migrate milestones"
END = "pdm-operator: end of db/post_migrate milestones"
#: Where CNG's images keep the Rails application (CNG ``gitlab-rails``: /srv/gitlab).
POST_MIGRATE = "/srv/gitlab/db/post_migrate"

#: The pre-flight's lines after the status task: each post-deployment
#: migration file and its first declared milestone ("-": none), one awk over
#: all of them (thousands of files on GitLab), between two marker lines so a
#: cut log is told from an empty list.
LISTING = (
    f"echo '{BEGIN}';\n"
    "shopt -s nullglob;\n"
    f"pdm_files=({POST_MIGRATE}/*.rb);\n"
    'if [ "${#pdm_files[@]}" -gt 0 ]; then\n'
    '  awk \'FNR == 1 { if (f != "") print f, m; f = FILENAME; m = "-" }\n'
    '    m == "-" && match($0, /^[[:space:]]*milestone[[:space:](]+["\\047][0-9]+[.][0-9]+/) {\n'
    '      m = substr($0, RSTART, RLENGTH); sub(/.*[\\"\\047]/, "", m) }\n'
    '    END { if (f != "") print f, m }\' "${pdm_files[@]}";\n'
    "fi;\n"
    f"echo '{END}';\n"
)

_LINE = re.compile(r"^(?:\S*/)?(\d+)_\w+\.rb (\S+)$")
_MINOR = re.compile(r"^(\d+)\.(\d+)$")


def milestones(log: str) -> dict[str, str] | None:
    """Version → milestone ("-" for none) of every post-deployment migration the
    pre-flight listed; None when the listing is not whole in ``log``."""
    lines = log.splitlines()
    try:
        start = lines.index(BEGIN)
        end = lines.index(END, start)
    except ValueError:
        return None
    out: dict[str, str] = {}
    for line in lines[start + 1 : end]:
        m = _LINE.match(line.strip())
        if m is None:
            return None  # not what the listing prints: not trusted
        out[m.group(1)] = m.group(2)
    return out


@dataclass(frozen=True)
class Finding:
    reason: str
    message: str
    #: The pending versions it is about, with their milestones ("-": none).
    versions: tuple[tuple[str, str], ...] = ()

    def as_status(self) -> Body:
        return {
            "reason": self.reason,
            "message": self.message,
            "migrations": [{"version": v, "milestone": m} for v, m in self.versions],
        }


def find(  # noqa: PLR0911 - one return per answer, in the order they are told
    deployed: str, pending: Sequence[str], listed: dict[str, str] | None
) -> Finding | None:
    """The skip (or why it cannot be ruled out) among the ``pending`` versions the run
    applies; None when there is none."""
    if not pending:
        return None
    version = history.Version.parse(deployed)
    if version is None:
        return Finding(
            UNKNOWN,
            f"the deployed version {deployed!r} is not a GitLab version, so whether older "
            "post-deployment migrations are pending cannot be told (set spec.gitlabVersion)",
        )
    if listed is None:
        return Finding(
            UNKNOWN,
            "the pre-flight printed no whole list of db/post_migrate milestones (pre-flight "
            "args of its own, or a cut log), so whether post-deployment migrations of an older "
            "minor are pending cannot be told",
        )
    minor = (version.major, version.minor)
    unlisted = sorted({v for v in pending if v not in listed})
    if unlisted:
        # After the rollout only post-deployment migrations should be pending, and
        # every one is in the listing: one that is not (a regular migration still
        # pending, migrations outside /srv/gitlab/db/post_migrate) is not known.
        return Finding(
            UNKNOWN,
            f"pending migrations {', '.join(unlisted[:10])} are not in the pre-flight's listing "
            f"of {POST_MIGRATE} (a regular migration still pending, or migrations kept "
            "elsewhere), so whether they belong to an older minor cannot be told",
            tuple((v, "-") for v in unlisted),
        )
    post = sorted(set(pending))
    nameless = [(v, "-") for v in post if not _MINOR.match(listed[v])]
    if nameless:
        return Finding(
            UNKNOWN,
            f"pending post-deployment migrations {', '.join(v for v, _ in nameless)} name no "
            "milestone, so whether they belong to an older minor cannot be told",
            tuple(nameless),
        )
    older = [(v, listed[v]) for v in post if _minor(listed[v]) < minor]
    if not older:
        return None
    return Finding(
        SKIPPED,
        f"{len(older)} pending post-deployment migration(s) of an older minor than the deployed "
        f"{version.major}.{version.minor} ({deployed}), whose regular migrations already ran: "
        + ", ".join(f"{v} ({m})" for v, m in older[:10])
        + (f" and {len(older) - 10} more" if len(older) > 10 else "")
        + "; they were written for the schema before it (a skipped minor, or a minor whose "
        "post-deployment migrations never ran)",
        tuple(older),
    )


def _minor(text: str) -> tuple[int, int]:
    m = _MINOR.match(text)
    assert m is not None
    return int(m.group(1)), int(m.group(2))
