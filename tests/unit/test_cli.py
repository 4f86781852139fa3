"""The CI commands: defaults as the CRD applies them, progress of `wait`,
and `render` run as the console script."""

from __future__ import annotations

import copy
import io
import os
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from pdm_operator import cli, errors

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"
IMAGE = "registry.example.com/gitlab-org/build/cng/gitlab-toolbox-ee:v18.6.0"


def crd_schema() -> dict:
    crd = yaml.safe_load((ROOT / "crds" / "pdm-operator.io_postdeploymigrations.yaml").read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]


def test_offline_defaults_are_the_crds_defaults() -> None:
    spec = crd_schema()["properties"]
    declared = {k: v["default"] for k, v in spec.items() if "default" in v and k != "job"}
    assert declared == cli.SPEC_DEFAULTS
    job = spec["job"]["properties"]
    assert {k: v["default"] for k, v in job.items() if "default" in v} == cli.JOB_DEFAULTS
    pre = spec["preflight"]["properties"]
    assert {k: v["default"] for k, v in pre.items() if "default" in v} == cli.PREFLIGHT_DEFAULTS


def script(name: str) -> str:
    found = shutil.which(
        name, path=os.pathsep.join([str(Path(os.sys.executable).parent), os.environ["PATH"]])
    )
    assert found, f"console script {name} is not installed"
    return found


EXAMPLE = [
    "render",
    "-f",
    str(ROOT / "examples" / "pdm.yaml"),
    "--image",
    IMAGE,
    "--template",
    str(ROOT / "examples" / "gitlab-chart-release.yaml"),
    "-n",
    "gitlab",
]


def test_render_prints_the_job_exactly_as_the_golden_file() -> None:
    out = subprocess.run(
        [script("pdm-operator"), *EXAMPLE],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    golden = GOLDEN / "cli-render-example.yaml"
    if os.environ.get("PDM_UPDATE_GOLDEN") == "1":
        golden.write_text(out.stdout)
    assert out.stdout == golden.read_text(), (
        "render output changed; if intended, regenerate with PDM_UPDATE_GOLDEN=1"
    )
    # The chart's Job of a regular deploy carries the variable; the copy never does.
    assert (
        "SKIP_POST_DEPLOYMENT_MIGRATIONS"
        in (ROOT / "examples" / "gitlab-chart-release.yaml").read_text()
    )
    job = yaml.safe_load(out.stdout)
    pod = job["spec"]["template"]["spec"]
    for c in pod["initContainers"] + pod["containers"]:
        assert "SKIP_POST_DEPLOYMENT_MIGRATIONS" not in [e["name"] for e in c.get("env", [])]
    # Named only by the script that unsets it before the migrations.
    assert out.stdout.count("unset SKIP_POST_DEPLOYMENT_MIGRATIONS") == 1
    assert [c["name"] for c in pod["initContainers"]] == ["certificates", "configure"]
    assert {v["name"] for v in pod["volumes"]} >= {"migrations-config", "init-migrations-secrets"}


def run_render(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [script("pdm-operator"), "render", *args], capture_output=True, text=True, check=False
    )


def test_render_of_a_chart_pdm_without_a_template_file_says_how_to_give_one() -> None:
    out = run_render("-f", str(ROOT / "examples" / "pdm.yaml"), "--image", IMAGE)
    assert out.returncode == cli.EXIT_ERROR
    assert "--template" in out.stderr
    assert "Traceback" not in out.stderr


def test_render_with_a_file_lacking_the_charts_job_names_what_it_looked_for(
    tmp_path: Path,
) -> None:
    other = tmp_path / "other.yaml"
    other.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    out = run_render(
        "-f", str(ROOT / "examples" / "pdm.yaml"), "--image", IMAGE, "--template", str(other)
    )
    assert out.returncode == cli.EXIT_ERROR
    assert "a Job labelled app=migrations,release=gitlab, found 0" in out.stderr


def test_render_from_helm_template_output_with_the_bbm_check_job_copies_the_migrations_job(
    tmp_path: Path,
) -> None:
    release = list(
        yaml.safe_load_all((ROOT / "examples" / "gitlab-chart-release.yaml").read_text())
    )
    job = next(d for d in release if d and d["kind"] == "Job")
    check = copy.deepcopy(job)
    check["metadata"]["name"] = "gitlab-migrations-bbm-3b1f2c7"
    check["metadata"]["labels"]["gitlab.com/batched-background-migrations-check"] = "true"
    check["spec"]["template"]["spec"]["containers"][0]["args"] = [
        "/scripts/wait-for-batched-background-migrations"
    ]
    rendered = tmp_path / "helm-template.yaml"
    rendered.write_text(yaml.safe_dump_all([*release, check]))
    with_check = [*EXAMPLE[:-3], str(rendered), *EXAMPLE[-2:]]
    out = subprocess.run(
        [script("pdm-operator"), *with_check], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == (GOLDEN / "cli-render-example.yaml").read_text()


def test_render_refuses_a_run_pdm_that_sets_the_skip_variable(tmp_path: Path) -> None:
    manifest = tmp_path / "pdm.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "pdm-operator.io/v1alpha1",
                "kind": "PostDeployMigration",
                "metadata": {"name": "skips"},
                "spec": {
                    "environment": "gstg",
                    "image": {"reference": IMAGE},
                    "job": {"env": [{"name": "SKIP_POST_DEPLOYMENT_MIGRATIONS", "value": "false"}]},
                },
            }
        )
    )
    out = run_render("-f", str(manifest))
    assert out.returncode == cli.EXIT_ERROR
    assert "Rails skips every post-deployment migration" in out.stderr


def test_render_works_as_a_kubectl_plugin_with_the_same_output() -> None:
    args = EXAMPLE
    plugin = subprocess.run(
        [script("kubectl-pdm"), *args], capture_output=True, text=True, check=False
    )
    direct = subprocess.run(
        [script("pdm-operator"), *args], capture_output=True, text=True, check=False
    )
    assert plugin.returncode == 0
    assert plugin.stdout == direct.stdout


def test_render_without_an_image_for_from_deployment_is_a_usage_error() -> None:
    out = subprocess.run(
        [script("pdm-operator"), "render", "-f", str(ROOT / "examples" / "pdm.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 2
    assert "pass --image" in out.stderr
    assert "Traceback" not in out.stderr


def test_render_of_a_file_without_a_migration_is_a_usage_error(tmp_path: Path) -> None:
    f = tmp_path / "x.yaml"
    f.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    out = subprocess.run(
        [script("pdm-operator"), "render", "-f", str(f)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 2
    assert "expected exactly one PostDeployMigration, found 0" in out.stderr


@pytest.mark.parametrize(
    ("status", "code", "shown"),
    [
        (None, None, "NotFound"),
        (
            {
                "state": "Gated",
                "reason": "EnvironmentLocked",
                "conditions": [
                    {
                        "type": "Gated",
                        "status": "True",
                        "reason": "EnvironmentLocked",
                        "message": "x/y runs",
                    }
                ],
            },
            None,
            "Gated (EnvironmentLocked): x/y runs",
        ),
        (
            {
                "state": "Running",
                "reason": "Created",
                "conditions": [
                    {
                        "type": "JobCreated",
                        "status": "True",
                        "reason": "Created",
                        "message": "Job j",
                    }
                ],
            },
            None,
            "Running (Created)",
        ),
        (
            {
                "state": "Succeeded",
                "reason": "JobComplete",
                "conditions": [{"type": "Succeeded", "status": "True", "reason": "JobComplete"}],
            },
            0,
            "Succeeded",
        ),
        (
            {
                "state": "Failed",
                "reason": "DeadlineExceeded",
                "conditions": [
                    {
                        "type": "Failed",
                        "status": "True",
                        "reason": "DeadlineExceeded",
                        "message": "too slow",
                    }
                ],
                "failure": {"pod": "p-1", "logTail": "boom\n"},
            },
            1,
            "--- log tail of p-1 ---\nboom",
        ),
    ],
    ids=["not-found", "gated", "running", "succeeded", "failed"],
)
def test_wait_progress_line_and_exit_code(
    status: dict | None, code: int | None, shown: str
) -> None:
    obj = None if status is None else {"metadata": {"name": "m"}, "status": status}
    line, got = cli.progress("m", obj)
    assert got == code
    assert shown in line


def test_wait_shows_progress_as_rails_announces_it_each_change_a_new_line() -> None:
    def running(shown: dict) -> str:
        status = {"state": "Running", "reason": "Created", "progress": shown}
        line, code = cli.progress("m", {"metadata": {"name": "m"}, "status": status})
        assert code is None
        return line

    first = running(
        {
            "summary": "1/3",
            "current": {
                "database": "main",
                "version": "20261115000003",
                "name": "BackfillProjectStatistics",
                "since": "2026-12-06T12:00:10Z",
            },
        }
    )
    assert first == (
        "pdm/m: Running (Created): 1/3 migrations done, running 20261115000003 "
        "BackfillProjectStatistics on main since 2026-12-06T12:00:10Z"
    )
    assert running({"summary": "2/3"}) == "pdm/m: Running (Created): 2/3 migrations done"
    assert "now unknown: the log" in running({"summary": "2/3", "unknown": "the log ..."})


def test_the_pending_list_is_shown_once_the_preflight_answered() -> None:
    running = {"status": {"preflight": {"phase": "Running", "jobName": "m-p1"}}}
    assert cli.pending_lines(running) is None
    assert cli.pending_lines(None) is None
    answered = {
        "status": {
            "preflight": {
                "phase": "Succeeded",
                "jobName": "m-p1",
                "completionTime": "2026-12-02T10:00:00Z",
                "pendingCount": 3,
            },
            "pendingMigrations": [
                {"database": "main", "version": "20261115000001", "name": "Add index"},
                {"database": "ci", "version": "20261115000001", "name": "Add index"},
            ],
        }
    }
    assert cli.pending_lines(answered) == [
        "pending migrations (3, pre-flight m-p1 at 2026-12-02T10:00:00Z):",
        "  20261115000001  Add index  (main)",
        "  20261115000001  Add index  (ci)",
        "  ... and 1 more",
    ]
    answered["status"]["pendingMigrations"] = []
    answered["status"]["preflight"]["pendingCount"] = 0
    assert cli.pending_lines(answered)[-1] == "  none: every migration is up"  # type: ignore[index]


def test_the_approver_sees_the_preflights_image_and_args_and_a_warning_before_custom_ones() -> None:
    from pdm_operator import preflight  # noqa: PLC0415

    image = "registry.example.com/cng/gitlab-toolbox-ee:v18.6.0"
    shown = {
        "status": {
            "preflight": {
                "phase": "Succeeded",
                "jobName": "m-p1",
                "pendingCount": 1,
                "image": image,
                "args": list(preflight.DEFAULT_ARGS),
            },
            "pendingMigrations": [
                {"database": "main", "version": "20261115000001", "name": "Add index"}
            ],
        }
    }
    assert cli.pending_lines(shown)[0].startswith("pending migrations (1")  # type: ignore[index]
    assert cli.preflight_lines(shown) == [
        f"pre-flight image: {image}",
        "pre-flight args: the default (db:migrate:status, then the milestones of db/post_migrate)",
    ]
    shown["status"]["preflight"]["args"] = ["/bin/sh", "-c", "printf 'database: main'"]
    lines = cli.pending_lines(shown)
    assert lines is not None
    assert lines[0].startswith("WARNING: non-default pre-flight args (spec.preflight.args [")
    assert lines[1].startswith("pending migrations (1")
    assert cli.preflight_lines(shown)[1] == (
        'pre-flight args: ["/bin/sh", "-c", "printf \'database: main\'"]'
    )


def failed_pdm(name: str = "gstg-2026-11-22", **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "gitlab", "uid": "u", "labels": {"team": "db"}},
        "spec": {"environment": "gstg", "image": {"reference": "r/t:1"}, "suspend": False},
        "status": {
            "state": "Failed",
            "reason": "BackoffLimitExceeded",
            "jobOutcome": "Failed",
            "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}],
            **status,
        },
    }


def test_a_retry_copies_the_spec_under_a_derived_name_pointing_back() -> None:
    retry = cli.retry_of(failed_pdm(), {"gstg-2026-11-22", "gstg-2026-11-22-retry-1"})
    assert retry["metadata"]["name"] == "gstg-2026-11-22-retry-2"
    assert retry["metadata"]["annotations"] == {
        "pdm-operator.io/retry-of": "gstg-2026-11-22",
        "pdm-operator.io/retry-first": "gstg-2026-11-22",
        "pdm-operator.io/retry-attempt": "1",
    }
    assert retry["metadata"]["labels"] == {"team": "db"}
    assert retry["spec"] == failed_pdm()["spec"]
    assert "status" not in retry
    assert "uid" not in retry["metadata"]


def test_a_retry_at_a_time_waits_for_it_and_a_retry_of_a_retry_counts_the_chain() -> None:
    at = datetime(2026, 12, 7, 13, 0, tzinfo=UTC)
    second = failed_pdm("gstg-2026-11-22-retry-1")
    second["metadata"]["annotations"] = {
        "pdm-operator.io/retry-of": "gstg-2026-11-22",
        "pdm-operator.io/retry-first": "gstg-2026-11-22",
        "pdm-operator.io/retry-attempt": "1",
    }
    second["spec"]["notBefore"] = "2026-12-06T13:00:00Z"
    retry = cli.retry_of(second, {"gstg-2026-11-22", "gstg-2026-11-22-retry-1"}, at)
    assert retry["metadata"]["name"] == "gstg-2026-11-22-retry-2"
    assert retry["metadata"]["annotations"] == {
        "pdm-operator.io/retry-of": "gstg-2026-11-22-retry-1",
        "pdm-operator.io/retry-first": "gstg-2026-11-22",
        "pdm-operator.io/retry-attempt": "2",
    }
    assert retry["spec"]["notBefore"] == "2026-12-07T13:00:00Z"


def test_a_retry_does_not_copy_the_approval_of_the_failed_plan() -> None:
    failed = failed_pdm()
    failed["spec"]["approval"] = {
        "required": True,
        "approved": {"planHash": "abc", "by": "alice", "at": "2026-12-06T12:00:00Z"},
    }
    retry = cli.retry_of(failed, set())
    assert retry["spec"]["approval"] == {"required": True}


@pytest.mark.parametrize(
    ("at", "why"),
    [
        ("tomorrow", "not an RFC 3339 time"),
        ("2026-12-07T13:00:00", "has no time zone"),
        ("2026-12-06T11:00:00Z", "already past"),
    ],
)
def test_a_retry_at_a_time_that_cannot_be_meant_is_refused(at: str, why: str) -> None:
    with pytest.raises(cli.UsageError, match=why):
        cli.retry_at(at, datetime(2026, 12, 6, 12, 0, tzinfo=UTC))


def test_a_retry_of_a_retry_counts_on_and_names_stay_within_the_limit() -> None:
    assert cli.retry_name("x-retry-1", {"x-retry-1"}) == "x-retry-2"
    long = cli.retry_name("m" * 54, set())
    assert long == "m" * 46 + "-retry-1"
    assert len(long) <= 54


@pytest.mark.parametrize(
    ("status", "why"),
    [
        ({"state": "Running", "conditions": [], "jobOutcome": None}, "is Running, not Failed"),
        (
            {"reason": "BlockingReportFailed", "jobOutcome": "Succeeded"},
            "failed after its Job succeeded",
        ),
    ],
)
def test_only_a_failed_migration_is_retried(status: dict[str, Any], why: str) -> None:
    with pytest.raises(cli.RetryRefused, match=why):
        cli.retry_of(failed_pdm(**status), set())


def test_an_unreachable_api_server_is_an_error_exit_not_a_verdict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """rollback-check exits 1 only for "unsafe": an API failure is 2, with its message."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    code = cli.main(
        ["rollback-check", "gstg", "--to", "18.6.0", "--kubeconfig", str(kubeconfig), "-n", "x"]
    )
    assert code == cli.EXIT_ERROR
    assert "error: the API server:" in capsys.readouterr().err


# --- rollback-check ---------------------------------------------------------------
WHERE = "pdm-operator/pdm-history-gprd"


def history_of(*records: Any, **extra: Any) -> dict[str, Any]:
    """A history ConfigMap holding ``records`` (Runs, or raw values under their key)."""
    data = {}
    for r in records:
        if isinstance(r, tuple):
            data[r[0]] = r[1]
        else:
            data[r.key] = r.encode()
    return {"metadata": {"name": "pdm-history-gprd"}, "data": data, **extra}


def ran(version: str, migrations: list[str] | None = None, name: str = "") -> Any:
    from pdm_operator import history  # noqa: PLC0415

    return history.Run(
        namespace="gitlab",
        name=name or f"gprd-{version}",
        uid=f"uid-{version}",
        version=version,
        image=f"toolbox:{version}",
        completed="2026-11-22T12:40:00Z",
        outcome="Succeeded",
        migrations=["20261115000001"] if migrations is None else migrations,
    )


ROLLBACK_CASES = [
    pytest.param(None, "18.5.0", cli.ROLLBACK_UNKNOWN, ["UNKNOWN", "does not exist"], id="no-cm"),
    pytest.param(history_of(), "18.5.0", cli.ROLLBACK_UNKNOWN, ["holds no record"], id="empty"),
    pytest.param(
        history_of(ran("18.5.0"), binaryData={"gitlab.gprd-x.0123abcd": "e30="}),
        "18.6.0",
        cli.ROLLBACK_UNKNOWN,
        [
            "UNKNOWN",
            "'gitlab.gprd-x.0123abcd' cannot be read (binary data",
            "kubectl get configmap",
        ],
        id="binary-record",
    ),
    pytest.param(
        history_of(ran("18.5.0"), ("gitlab.gprd-y.0123abcd", '{"namespace":"gitlab","na')),
        "18.6.0",
        cli.ROLLBACK_UNKNOWN,
        ["UNKNOWN", "'gitlab.gprd-y.0123abcd' cannot be read (not JSON)"],
        id="cut-record",
    ),
    pytest.param(
        history_of(ran("18-6-stable-ee")),
        "18.9.0",
        cli.ROLLBACK_UNKNOWN,
        ["UNKNOWN", "'18-6-stable-ee' is not a GitLab version", "spec.gitlabVersion"],
        id="unreadable-version",
    ),
    pytest.param(
        history_of(ran("18.7.202611221200-a1b2c3d4e5f.f8e5a8b3c2d")),
        "18.7.0",
        cli.ROLLBACK_UNKNOWN,
        ["UNKNOWN", "cannot be ordered with 18.7.0"],
        id="auto-deploy-against-a-release",
    ),
    pytest.param(
        history_of(ran("18.6.0-RC1")),
        "18.6.0-rc2",
        0,
        ["safe: rolling gprd back to 18.6.0-rc2", "the floor is 18.6.0-RC1"],
        id="safe",
    ),
    pytest.param(
        history_of(ran("18-7-202612011200-a1b2c3d4e5f")),
        "18.7.202611221200-0b1c2d3e4f5.f8e5a8b3c2d",
        cli.ROLLBACK_UNSAFE,
        ["UNSAFE", "GitLab 18-7-202612011200-a1b2c3d4e5f", "20261115000001"],
        id="unsafe",
    ),
    pytest.param(
        history_of(ran("18.6.0"), ran("latest")),
        "18.5.0",
        cli.ROLLBACK_UNSAFE,
        ["UNSAFE", "GitLab 18.6.0", "these records cannot be compared", "'latest'"],
        id="unsafe-and-unknown",
    ),
]


@pytest.mark.parametrize(("configmap", "target", "code", "says"), ROLLBACK_CASES)
def test_rollback_check_answers_safe_only_from_a_history_it_can_read(
    configmap: dict[str, Any] | None, target: str, code: int, says: list[str]
) -> None:
    got, text = cli.rollback_verdict("gprd", target, configmap, WHERE)
    assert got == code, text
    for words in says:
        assert words in text


def test_rollback_check_says_unknown_when_no_history_is_recorded() -> None:
    code, text = cli.rollback_verdict("gprd", "18.5.0", None, WHERE)
    assert code == cli.ROLLBACK_UNKNOWN == 3
    assert "spec.environment" in text
    assert "-n names the operator's namespace" in text
    assert "safe:" not in text


def test_rollback_check_refuses_a_target_that_is_not_a_version() -> None:
    with pytest.raises(cli.UsageError, match="not a GitLab version"):
        cli.rollback_verdict("gprd", "18-6-stable-ee", history_of(ran("18.5.0")), WHERE)


def test_rollback_check_finds_the_history_where_the_environment_says() -> None:
    declared = {"metadata": {"name": "gprd"}, "status": {"history": "ops/pdm-history-gprd"}}
    assert cli.history_location("gprd", None, declared) == ("ops", "pdm-history-gprd")
    # -n names the operator's namespace outright.
    assert cli.history_location("gprd", "pdm-system", None) == ("pdm-system", "pdm-history-gprd")


def test_rollback_check_says_unknown_for_an_undeclared_environment_not_a_guessed_namespace() -> (
    None
):
    why = cli.history_location("gprd", None, None)
    assert isinstance(why, str)
    assert "not declared" in why
    assert "-n" in why


def test_rollback_check_says_unknown_when_the_environment_does_not_say_where_yet() -> None:
    why = cli.history_location("gprd", None, {"metadata": {"name": "gprd"}, "status": {}})
    assert isinstance(why, str)
    assert "status.history" in why


def test_the_help_names_rollback_checks_unknown_exit_code() -> None:
    epilog = cli.build_parser().epilog or ""
    assert "rollback-check exits 0 (safe), 1 (unsafe), 2 (error), 3 (unknown" in epilog


def test_rollback_check_says_unknown_for_an_environment_two_operators_serve() -> None:
    declared = {
        "metadata": {"name": "gprd"},
        "status": {
            "history": "ops/pdm-history-gprd",
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "HistoryElsewhere", "message": "x"}
            ],
        },
    }
    why = cli.history_location("gprd", None, declared)
    assert isinstance(why, str)
    assert "HistoryElsewhere" in why


# --- wait: the waits of windows, change locks and deploys ---------------------------
def gated(reason: str, message: str, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "m"},
        "status": {
            "state": "Gated",
            "reason": reason,
            "conditions": [
                {"type": "Reconciling", "status": "True", "reason": "Gated", "message": "Gated"},
                {"type": "Gated", "status": "True", "reason": reason, "message": message},
            ],
            **status,
        },
    }


@pytest.mark.parametrize(
    "reason",
    [
        "OutsideWindow",
        "ChangeLocked",
        "DeployInProgress",
        "GitLabDeploymentPending",
        "GitLabDeployInProgress",
        "GitLabUnreachable",
        "GitLabTokenMissing",
        "DeployedCommitUnknown",
        "DeployedCommitMismatch",
        "GitLabRefused",
        "ImageFollowed",
        "ChangeLockUnknown",
        "InvalidWindow",
        "NotBefore",
    ],
)
def test_wait_shows_each_wait_before_the_run_and_goes_on_waiting(reason: str) -> None:
    line, code = cli.progress("m", gated(reason, f"why: {reason}"))
    assert code is None
    assert line == f"pdm/m: Gated ({reason}): why: {reason}"


def test_wait_outside_the_windows_shows_when_the_next_opens() -> None:
    """status.windowOpens is the opening; shown once, whatever the message says."""
    said = "outside the windows of environment 'gprd': the next opens at 2026-12-07T13:00:00Z"
    line, code = cli.progress("m", gated("OutsideWindow", said, windowOpens="2026-12-07T13:00:00Z"))
    assert code is None
    assert line.count("2026-12-07T13:00:00Z") == 1
    line, _ = cli.progress(
        "m", gated("OutsideWindow", "outside", windowOpens="2026-12-07T13:00:00Z")
    )
    assert (
        line == "pdm/m: Gated (OutsideWindow): outside (the window opens at 2026-12-07T13:00:00Z)"
    )


# --- lock, unlock, locks -------------------------------------------------------------
NOW = datetime(2026, 12, 2, 10, 0, 0, tzinfo=UTC)
FORBIDDEN = (
    'postdeployenvironments.pdm-operator.io "gprd" is forbidden: User "bob" cannot patch '
    'resource "postdeployenvironments" in API group "pdm-operator.io" at the cluster scope'
)


def environment(name: str = "gprd", lock: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"namespaces": ["gitlab"]}
    if lock is not None:
        spec["changeLock"] = lock
    return {"metadata": {"name": name, "resourceVersion": "1"}, "spec": spec}


def merge(target: Any, patch: Any) -> Any:
    """A JSON merge patch (RFC 7386), as the API server applies one."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge(out.get(key), value)
    return out


class Environments:
    """The API server as lock, unlock and locks meet it: PostDeployEnvironments
    (a merge patch guarded by its resourceVersion, as the server guards it),
    the caller's user name, refusals, and every patch it was sent."""

    def __init__(self, *declared: dict[str, Any], user: str = "alice") -> None:
        self.objects = {e["metadata"]["name"]: copy.deepcopy(e) for e in declared}
        self.user = user
        self.refuse: dict[str, errors.ApiError] = {}
        self.patches: list[dict[str, Any]] = []
        #: Run once before the next patch applies: someone else writing meanwhile.
        self.meanwhile: Any = None

    def _refused(self, call: str) -> None:
        if call in self.refuse:
            raise self.refuse[call]

    def get_environment(self, name: str) -> dict[str, Any] | None:
        self._refused("get")
        found = self.objects.get(name)
        return copy.deepcopy(found) if found else None

    def list_environments(self) -> list[dict[str, Any]]:
        self._refused("list")
        return [copy.deepcopy(e) for e in self.objects.values()]

    def whoami(self) -> str:
        self._refused("whoami")
        return self.user

    def patch_environment(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.patches.append(copy.deepcopy(patch))
        self._refused("patch")
        if self.meanwhile:
            meanwhile, self.meanwhile = self.meanwhile, None
            meanwhile(self)
        live = self.objects.get(name)
        if live is None:
            raise errors.NotFound(f'postdeployenvironments "{name}" not found', 404, "NotFound")
        wanted = (patch.get("metadata") or {}).get("resourceVersion")
        if wanted and wanted != live["metadata"]["resourceVersion"]:
            raise errors.Conflict("the object has been modified", 409, "Conflict")
        body = merge(live, {k: v for k, v in patch.items() if k != "metadata"})
        body["metadata"]["resourceVersion"] = str(int(live["metadata"]["resourceVersion"]) + 1)
        self.objects[name] = body
        return copy.deepcopy(body)

    def lock_of(self, name: str = "gprd") -> Any:
        return self.objects[name]["spec"].get("changeLock")


def run(api: Environments, *argv: str, now: datetime = NOW) -> tuple[int, str]:
    """``kubectl pdm ARGV`` against ``api`` at ``now``: the exit code and stdout."""
    args = cli.build_parser(prog="kubectl pdm").parse_args(argv)
    out = io.StringIO()
    command = {"lock": cli.lock, "unlock": cli.unlock}[args.command]
    return command(api, args, out, now), out.getvalue()


ALICES = {"reason": "CR 1234: database failover", "by": "alice", "at": "2026-12-02T09:00:00Z"}


def test_lock_writes_the_reason_the_callers_own_name_and_now() -> None:
    api = Environments(environment())
    code, out = run(api, "lock", "gprd", "--reason", "  CR 1234: database failover ")
    assert code == 0
    assert api.patches == [
        {
            "metadata": {"resourceVersion": "1"},
            "spec": {
                "changeLock": {
                    "reason": "CR 1234: database failover",
                    "by": "alice",
                    "at": "2026-12-02T10:00:00Z",
                    "until": None,
                }
            },
        }
    ]
    assert api.lock_of() == {
        "reason": "CR 1234: database failover",
        "by": "alice",
        "at": "2026-12-02T10:00:00Z",
    }
    assert out.splitlines()[0] == (
        "postdeployenvironment/gprd locked by alice at 2026-12-02T10:00:00Z until "
        "kubectl pdm unlock gprd: CR 1234: database failover"
    )
    assert "a migration Job already running goes on" in out


@pytest.mark.parametrize(
    ("flag", "until"),
    [
        (["--for", "2h"], "2026-12-02T12:00:00Z"),
        (["--for", "90m"], "2026-12-02T11:30:00Z"),
        (["--for", "1d"], "2026-12-03T10:00:00Z"),
        (["--for", "1h30m"], "2026-12-02T11:30:00Z"),
        (["--until", "2026-12-02T19:00:00+01:00"], "2026-12-02T18:00:00Z"),
        (["--until", "2026-12-02T18:00:00Z"], "2026-12-02T18:00:00Z"),
    ],
)
def test_a_lock_with_an_end_lapses_then_by_itself(flag: list[str], until: str) -> None:
    api = Environments(environment())
    code, out = run(api, "lock", "gprd", "--reason", "freeze", *flag)
    assert code == 0
    assert api.lock_of()["until"] == until
    assert f"locked by alice at 2026-12-02T10:00:00Z until {until}: freeze" in out


@pytest.mark.parametrize(
    ("flag", "says"),
    [
        (["--until", "2026-12-02T09:59:59Z"], "is already past (it is 2026-12-02T10:00:00Z UTC)"),
        (["--until", "2026-12-02T10:00:00Z"], "is already past"),
        (["--until", "2026-12-02T18:00:00"], "has no time zone"),
        (["--until", "tomorrow"], "is not an RFC 3339 time"),
        (["--for", "2"], "is not a duration (2h, 90m, 1d, 1h30m)"),
        (["--for", "2 hours"], "is not a duration"),
        (["--for", "0m"], "is no time at all"),
        (["--reason", " "], "--reason must say why"),
        (["--reason", "x" * 1025], "at most 1024"),
    ],
)
def test_a_lock_that_would_hold_nothing_is_refused_before_anything_is_written(
    flag: list[str], says: str
) -> None:
    api = Environments(environment())
    with pytest.raises(cli.UsageError, match=re.escape(says)):
        run(api, "lock", "gprd", "--reason", "freeze", *flag)
    assert api.patches == []


def test_until_and_for_are_one_or_the_other() -> None:
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["lock", "gprd", "--reason", "x", "--for", "1h", "--until",
                                       "2026-12-02T18:00:00Z"])  # fmt: skip


def test_someone_elses_lock_is_replaced_only_with_force_and_shown_first(
    capsys: pytest.CaptureFixture[str],
) -> None:
    theirs = {**ALICES, "until": "2026-12-02T12:00:00Z"}
    api = Environments(environment(lock=theirs), user="bob")
    code, out = run(api, "lock", "gprd", "--reason", "incident 42")
    assert code == cli.LOCK_REFUSED
    assert out == ""
    assert api.patches == []
    assert capsys.readouterr().err == (
        "refused: gprd: already locked by alice since 2026-12-02T09:00:00Z until "
        "2026-12-02T12:00:00Z: CR 1234: database failover. It holds until it is unlocked or "
        "lapses; to take it over in your name (your reason and end), lock again with --force\n"
    )

    code, out = run(api, "lock", "gprd", "--reason", "incident 42", "--force")
    assert code == 0
    assert out.splitlines()[0] == (
        "gprd: replaces the lock by alice since 2026-12-02T09:00:00Z until 2026-12-02T12:00:00Z: "
        "CR 1234: database failover (--force)"
    )
    # alice's end is not kept under bob's name: his lock holds until he unlocks it.
    assert api.lock_of() == {"reason": "incident 42", "by": "bob", "at": "2026-12-02T10:00:00Z"}


@pytest.mark.parametrize(
    ("lock", "user", "says"),
    [
        (ALICES, "alice", "gprd: replaces your own lock by alice since 2026-12-02T09:00:00Z"),
        (
            {**ALICES, "until": "2026-12-02T09:30:00Z"},
            "bob",
            "gprd: replaces a lapsed lock by alice since 2026-12-02T09:00:00Z lapsed at "
            "2026-12-02T09:30:00Z",
        ),
    ],
    ids=["own", "lapsed"],
)
def test_ones_own_lock_or_a_lapsed_one_is_replaced_without_force(
    lock: dict[str, Any], user: str, says: str
) -> None:
    api = Environments(environment(lock=lock), user=user)
    code, out = run(api, "lock", "gprd", "--reason", "longer", "--for", "4h")
    assert code == 0
    assert out.startswith(says)
    assert api.lock_of()["by"] == user
    assert api.lock_of()["until"] == "2026-12-02T14:00:00Z"


def test_a_lock_set_meanwhile_is_read_again_not_overwritten(
    capsys: pytest.CaptureFixture[str],
) -> None:
    api = Environments(environment(), user="bob")

    def alice_locks(server: Environments) -> None:
        live = server.objects["gprd"]
        live["spec"]["changeLock"] = dict(ALICES)
        live["metadata"]["resourceVersion"] = "2"

    api.meanwhile = alice_locks
    code, _ = run(api, "lock", "gprd", "--reason", "incident 42")
    assert code == cli.LOCK_REFUSED
    assert "already locked by alice" in capsys.readouterr().err
    assert api.lock_of() == ALICES


def test_unlock_removes_the_lock_and_says_whose_it_was() -> None:
    api = Environments(environment(lock={**ALICES, "until": "2026-12-02T12:00:00Z"}), user="bob")
    code, out = run(api, "unlock", "gprd")
    assert code == 0
    assert api.patches == [{"metadata": {"resourceVersion": "1"}, "spec": {"changeLock": None}}]
    assert api.lock_of() is None
    assert out == (
        "postdeployenvironment/gprd unlocked (it was locked by alice since 2026-12-02T09:00:00Z "
        "until 2026-12-02T12:00:00Z: CR 1234: database failover)\n"
    )


def test_unlocking_an_unlocked_environment_says_so_and_succeeds() -> None:
    api = Environments(environment())
    code, out = run(api, "unlock", "gprd")
    assert (code, out) == (0, "postdeployenvironment/gprd is not locked: nothing to do\n")
    assert api.patches == []


@pytest.mark.parametrize("command", [["lock", "gprd", "--reason", "x"], ["unlock", "gprd"]])
def test_an_undeclared_environment_is_named_as_such(command: list[str]) -> None:
    api = Environments(environment("gstg"))
    with pytest.raises(cli.UsageError) as refused:
        run(api, *command)
    assert str(refused.value) == (
        f"cannot {command[0]} 'gprd': environment 'gprd' is not declared (no "
        "PostDeployEnvironment 'gprd': `kubectl get pdenv` lists them)"
    )


@pytest.mark.parametrize(
    ("call", "command", "says"),
    [
        ("patch", ["lock", "gprd", "--reason", "x", "--force"], "locking 'gprd' was refused"),
        ("patch", ["unlock", "gprd"], "unlocking 'gprd' was refused"),
        ("get", ["unlock", "gprd"], "reading PostDeployEnvironment 'gprd' was refused"),
    ],
)
def test_a_refusal_names_the_verb_and_resource_it_needs(
    call: str, command: list[str], says: str
) -> None:
    api = Environments(environment(lock=ALICES), user="bob")
    api.refuse[call] = errors.Forbidden(FORBIDDEN, 403, "Forbidden")
    with pytest.raises(cli.UsageError) as refused:
        run(api, *command)
    verb = {"patch": "patch", "get": "get"}[call]
    assert str(refused.value) == (
        f"{says}: {FORBIDDEN}\n  it needs {verb} on postdeployenvironments.pdm-operator.io "
        "(cluster-scoped, so through a ClusterRoleBinding: the ClusterRole <release>-locker "
        "(pdm-operator-locker by default) grants it)"
    )
    assert api.lock_of() == ALICES


def test_a_user_who_cannot_learn_their_name_is_told_which_right_is_missing() -> None:
    api = Environments(environment())
    api.refuse["whoami"] = errors.Forbidden("selfsubjectreviews is forbidden", 403, "Forbidden")
    with pytest.raises(cli.UsageError, match=r"create on selfsubjectreviews\.authentication"):
        run(api, "lock", "gprd", "--reason", "x")
    assert api.patches == []


def test_an_unreachable_api_server_is_said_so_not_answered_for() -> None:
    api = Environments(environment())
    api.refuse["get"] = errors.Transient("MaxRetryError: connection refused")
    with pytest.raises(cli.UsageError) as refused:
        run(api, "unlock", "gprd")
    assert str(refused.value) == (
        "reading PostDeployEnvironment 'gprd': the API server could not be reached: "
        "MaxRetryError: connection refused"
    )


def test_the_policys_refusal_is_shown_as_the_server_says_it() -> None:
    """The admission policy answers 422 (Invalid) with its own message."""
    api = Environments(environment())
    said = (
        'postdeployenvironments.pdm-operator.io "gprd" is forbidden: ValidatingAdmissionPolicy '
        "'pdm-operator-change-lock' denied request: spec.changeLock.by must be ..."
    )
    api.refuse["patch"] = errors.Invalid(said, 422, "Invalid")
    with pytest.raises(cli.UsageError) as refused:
        run(api, "lock", "gprd", "--reason", "x")
    assert str(refused.value) == f"locking 'gprd': the API server answered: {said}"


def test_locks_lists_every_environment_with_its_lock() -> None:
    lapsed = {"reason": "old\nfreeze", "by": "bob", "until": "2026-12-01T00:00:00Z"}
    envs = [
        environment("gstg"),
        environment("gprd", lock={**ALICES, "until": "2026-12-02T12:00:00Z"}),
        environment("pre", lock=lapsed),
    ]
    assert cli.lock_rows(envs, NOW) == [
        "ENVIRONMENT   LOCK     BY      SINCE                  UNTIL                  REASON",
        "gprd          locked   alice   2026-12-02T09:00:00Z   2026-12-02T12:00:00Z   "
        "CR 1234: database failover",
        "gstg          -",
        "pre           lapsed   bob     -                      2026-12-01T00:00:00Z   old freeze",
    ]


def test_the_help_names_locks_exit_codes() -> None:
    epilog = cli.build_parser().epilog or ""
    assert "lock exits 0 (locked), 1 (refused: locked by someone else, without --force)" in epilog
