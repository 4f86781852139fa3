"""When a run may start, as the environment says it: its change lock (its own, or
read from GitLab's issues), its windows, its own rollouts, and the whole
environment's deploy from GitLab's record (``when``, ``deployments``). Each
is a gate of ``before_job.first_hold``, before the environment's lock."""

from __future__ import annotations

from pdm_operator import deployments, environments, gates, when
from pdm_operator.decide.asks import (
    Decision,
    GetDeployment,
    ReadGitLabDeployments,
    ReadGitLabIssues,
)
from pdm_operator.decide.state import Pass, preflight_running
from pdm_operator.model import Body

#: A Deployment of the environment's ``spec.quietDeployments`` is rolling out.
DEPLOY_IN_PROGRESS = "DeployInProgress"
#: Holds that change with a person's edit or the clock, not with the cluster:
#: looked at as often as the environment's policy (and when they lift by
#: themselves: ``gates.Hold.opens``).
SLOW = (
    frozenset(
        {
            when.OUTSIDE_WINDOW,
            when.CHANGE_LOCKED,
            when.INVALID_WINDOW,
            when.CHANGE_LOCK_UNKNOWN,
            gates.NOT_BEFORE,
        }
    )
    | deployments.NEEDS_ACTION
)


def environment_says_when(p: Pass, policy: environments.Policy) -> Decision[gates.Hold | None]:
    """The environment's change lock, its windows and its own rollouts.

    The window decides when a run starts: a pre-flight already running under
    the lock goes on and its Job follows. A change lock stops even that (the
    pre-flight is abandoned and runs again after it): no migration Job starts
    under a change lock, a person's decision that a person lifts. A running
    Job never gets here. These are the platform admin's rules: nothing a
    creator writes (``spec.pipeline`` included) skips them.
    """
    hold = when.locked(p.environment, policy.change_lock, p.at)
    if hold is None and not preflight_running(p.status):
        hold = when.outside(p.environment, policy.windows, p.at)
    if hold is None:
        hold = yield from _locked_in_gitlab(p, policy)
    if hold is not None:
        return hold
    for name in policy.quiet_deployments:
        deployment: Body | None = yield GetDeployment(name)
        busy = gates.rollout(name, deployment)
        if busy is not None:
            return gates.Hold(
                DEPLOY_IN_PROGRESS,
                f"{busy.message}: a deploy is in progress (spec.quietDeployments of "
                f"PostDeployEnvironment {p.environment!r}), and no run starts during one",
            )
    return None


def _locked_in_gitlab(p: Pass, policy: environments.Policy) -> Decision[gates.Hold | None]:
    """``spec.changeLockFrom``: an open issue with its labels locks the environment;
    one that cannot be read holds too (``when.locked_by_issues``)."""
    source = when.LockSource.of(policy.change_lock_from)
    if source is None:
        return None
    token = deployments.token_for(
        source.url,
        source.project,
        source.token_ref,
        p.spec,
        "the environment's change-lock source",
        "spec.changeLockFrom",
    )
    if isinstance(token, gates.Hold):
        return token
    found = yield ReadGitLabIssues(source, token)
    return when.locked_by_issues(p.environment, source, found)


def whole_environment_deployed(p: Pass, policy: environments.Policy) -> Decision[gates.Hold | None]:
    """``spec.gitlabDeployments``: every GitLab environment named runs this version
    and none is being deployed, from GitLab's record (``deployments``). Asked
    after the local gates, so a migration held by them costs GitLab nothing."""
    watch = deployments.Watch.of({"gitlabDeployments": policy.gitlab_deployments})
    if watch is None:
        return None
    token = deployments.token_ref(watch, p.spec)
    if isinstance(token, gates.Hold):
        return token
    image = str(p.status.get("sourceImage") or p.status["image"])
    commit = deployments.commit(p.migration, image, watch.project)
    if isinstance(commit, gates.Hold):
        return commit
    found = yield ReadGitLabDeployments(watch, token)
    return deployments.judge(watch, commit, found)
