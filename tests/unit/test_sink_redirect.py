"""A GitLab sink never follows a redirect: the token would go along to wherever it points."""

from __future__ import annotations

from datetime import UTC, datetime

from pdm_operator.reporting.sinks import Context, deliver
from tests.support.fake_gitlab import FakeGitLab


def test_a_redirect_is_not_followed_and_says_why() -> None:
    with FakeGitLab() as gitlab, FakeGitLab() as elsewhere:
        sha = gitlab.add_commits("gitlab-org/gitlab", 1)[0]
        gitlab.faults.error(302, headers={"Location": f"{elsewhere.url}/api/v4/projects/1"})
        migration = {
            "metadata": {"name": "m", "namespace": "gitlab", "uid": "u" * 8},
            "spec": {
                "environment": "gprd",
                "tracking": {
                    "gitlab": {"url": gitlab.url},
                    "version": {"ref": "master", "sha": sha},
                    "sinks": [{"type": "GitLabDeployment", "projects": ["gitlab-org/gitlab"]}],
                },
            },
        }
        ctx = Context(
            migration=migration,
            records=[],
            gitlab_token=lambda: gitlab.token,
            sentry_token=lambda _: "",
            timeout=5.0,
            now=datetime(2026, 12, 6, tzinfo=UTC),
        )
        record = {"sink": "GitLabDeployment", "target": "gitlab-org/gitlab", "desired": "running"}
        result = deliver(record, ctx)
        assert elsewhere.requests == []
    assert result.error is not None
    assert "redirect" in result.error
    assert gitlab.token not in result.error
