"""The ``pdm-operator`` command line (also ``kubectl pdm`` through ``kubectl-pdm``).

``run`` is the operator. ``render``, ``diff`` and ``wait`` are for CI and need
no operator: they share the rendering and diffing code the operator uses.

Exit codes: ``render`` 0, or 2 on bad input. ``diff`` like ``kubectl diff``:
0 no change, 1 changes, 2 or more an error. ``wait``: 0 Succeeded, 1 Failed,
2 timed out, 3 an error. ``lock``: 0 locked, 1 refused (someone else's lock,
without ``--force``), 2 an error; ``unlock`` and ``locks``: 0, or 2 an error.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import yaml

from pdm_operator import __version__, errors, model, timestamps

if TYPE_CHECKING:
    from pdm_operator.templates import Template

EXIT_ERROR = 2
WAIT_TIMEOUT, WAIT_ERROR = 2, 3

#: The defaults the CRD applies at admission, applied offline by ``render``.
SPEC_DEFAULTS: dict[str, Any] = {
    "mode": "Run",
    "pipeline": "Regular",
    "suspend": False,
    "preflight": {},
    "approval": {},
}
PREFLIGHT_DEFAULTS: dict[str, Any] = {
    "enabled": True,
    "activeDeadlineSeconds": 900,
    "whenNonePending": "Finish",
}
JOB_DEFAULTS: dict[str, Any] = {
    "activeDeadlineSeconds": 3600,
    "backoffLimit": 0,
    "restartPolicy": "Never",
}


#: Why a Run-mode PDM may not set the variable (also the CRD's CEL message).
SKIP_REFUSED = (
    "spec.job.env must not set SKIP_POST_DEPLOYMENT_MIGRATIONS: Rails skips every "
    "post-deployment migration when the variable is present, whatever its value "
    '("false" included); the migration Job never carries it'
)


class UsageError(Exception):
    """Bad input from the user: a message, exit code 2, no traceback."""


def with_defaults(migration: dict[str, Any]) -> dict[str, Any]:
    spec = {**SPEC_DEFAULTS, **(migration.get("spec") or {})}
    spec["job"] = {**JOB_DEFAULTS, **(spec.get("job") or {})}
    spec["preflight"] = {**PREFLIGHT_DEFAULTS, **(spec.get("preflight") or {})}
    spec["approval"] = {"required": False, **(spec.get("approval") or {})}
    return {**migration, "spec": spec}


def load_migration(path: str, namespace: str | None) -> dict[str, Any]:
    """Read one PostDeployMigration from a file ('-' for stdin), defaults applied."""
    found = [d for d in read_documents(path) if d.get("kind") == model.KIND]
    if len(found) != 1:
        raise UsageError(f"{path}: expected exactly one {model.KIND}, found {len(found)}")
    migration = with_defaults(found[0])
    meta = dict(migration.get("metadata") or {})
    if not meta.get("name"):
        raise UsageError(f"{path}: metadata.name is required")
    spec = migration["spec"]
    for field in ("environment", "image"):
        if not spec.get(field):
            raise UsageError(f"{path}: spec.{field} is required")
    env = (spec.get("job") or {}).get("env") or []
    if spec["mode"] == "Run" and any(e.get("name") == model.SKIP_PDM_ENV for e in env):
        # The same rule as the CRD's CEL rule, so CI hears it before applying.
        raise UsageError(f"{path}: {SKIP_REFUSED}")
    meta["namespace"] = namespace or meta.get("namespace") or "default"
    migration["metadata"] = meta
    return migration


def explicit_image(migration: dict[str, Any], override: str | None) -> str | None:
    return override or migration["spec"]["image"].get("reference")


# --- render -------------------------------------------------------------------
def load_template(path: str | None, migration: dict[str, Any]) -> Template | None:
    """The pod template for an offline render: ``--template FILE`` read as the operator would.

    The file holds the source object (``kubectl get job -o yaml``, or ``helm
    template`` output with several documents): the Job matching
    ``migrationsJob``'s selector (never the batched-background-migrations
    check), or the Deployment named by ``toolboxDeployment``.
    """
    from pdm_operator import templates  # noqa: PLC0415

    source = migration["spec"].get("podTemplateFrom")
    if not source:
        if path:
            raise UsageError("--template needs spec.podTemplateFrom in the manifest")
        return None
    if not path:
        raise UsageError(
            "spec.podTemplateFrom is read from the cluster; pass --template FILE "
            "(the chart's migrations Job or the toolbox Deployment as YAML) to render offline"
        )
    docs = read_documents(path)
    if "migrationsJob" in source:
        selector = templates.job_selector(source["migrationsJob"])
        wanted = dict(pair.split("=", 1) for pair in selector.split(","))
        found = [
            d
            for d in docs
            if d.get("kind") == "Job"
            and wanted.items() <= ((d.get("metadata") or {}).get("labels") or {}).items()
            and not templates.is_bbm_check(d)
        ]
        what = f"a Job labelled {selector}"
    else:
        name = source["toolboxDeployment"]["name"]
        found = [
            d
            for d in docs
            if d.get("kind") == "Deployment" and (d.get("metadata") or {}).get("name") == name
        ]
        what = f"the Deployment {name!r}"
    if len(found) != 1:
        raise UsageError(f"{path}: expected {what}, found {len(found)}")
    template = templates.from_object(found[0], source)
    if isinstance(template, templates.Missing):
        raise UsageError(f"{path}: {template.reason}: {template.message}")
    return template


def read_documents(path: str) -> list[dict[str, Any]]:
    """The YAML documents (mappings) of a file, or of stdin for '-'."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
        return [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]
    except (OSError, yaml.YAMLError) as e:
        raise UsageError(f"cannot read {path}: {e}") from e


def cmd_render(args: argparse.Namespace, out: TextIO) -> int:
    from pdm_operator import diffing, render  # noqa: PLC0415 - keep `--help` light

    migration = load_migration(args.filename, args.namespace)
    image = explicit_image(migration, args.image)
    if image is None:
        raise UsageError(
            "spec.image.fromDeployment is resolved from the live Deployment; "
            "pass --image to stand in for it offline"
        )
    template = load_template(args.template, migration)
    out.write(diffing.to_yaml(render.render_job(migration, image, template)))
    return 0


# --- diff ---------------------------------------------------------------------
COLORS = {"+": "\033[32m", "-": "\033[31m", "@": "\033[36m"}
RESET = "\033[0m"


def colorize(text: str) -> str:
    lines = []
    for line in text.splitlines(keepends=True):
        color = None if line.startswith(("+++", "---")) else COLORS.get(line[:1])
        lines.append(f"{color}{line.rstrip(chr(10))}{RESET}\n" if color else line)
    return "".join(lines)


def rollout_warnings(client: Any, namespace: str, spec: dict[str, Any]) -> list[str]:
    """The Deployments the migration waits for whose new pods would wait for it, and
    those that could not be read (gates.bypass_warnings)."""
    from pdm_operator import gates  # noqa: PLC0415

    found: dict[str, Any] = {}
    unreadable = []
    for name in (spec.get("waitFor") or {}).get("rolledOut") or []:
        try:
            found[name] = client.get_deployment(namespace, name)
        except errors.ApiError as e:
            unreadable.append(f"Deployment {name!r} could not be read ({e.message}): not checked")
    return unreadable + gates.bypass_warnings(list(found), found)


def cmd_diff(args: argparse.Namespace, out: TextIO) -> int:
    from pdm_operator import dryrun, gates, images, kube, sources, templates  # noqa: PLC0415

    migration = load_migration(args.filename, args.namespace)
    client = kube.Kube(kube.load_config(args.kubeconfig))
    ns = migration["metadata"]["namespace"]
    try:
        image = explicit_image(migration, args.image)
        source_image = image
        if image is None:
            resolved = sources.image(client, ns, migration["spec"]["image"])
            if isinstance(resolved, images.Unresolved):
                print(f"error: {resolved.reason}: {resolved.message}", file=sys.stderr)
                return EXIT_ERROR
            image, source_image = resolved.image, resolved.source
        template = sources.template(client, ns, migration["spec"])
        if isinstance(template, templates.Missing):
            print(f"error: {template.reason}: {template.message}", file=sys.stderr)
            return EXIT_ERROR
        if template is not None:
            print(
                f"pod template: {template.kind} {template.name} (uid {template.uid})",
                file=sys.stderr,
            )
            stale = templates.stale(template, source_image or image, image)
            if stale:
                print(f"warning: TemplateStale: {stale}", file=sys.stderr)
        planned = dryrun.plan(client, migration, image, template)
    except errors.ApiError as e:
        print(f"error: the API server rejected the Job: {e.message}", file=sys.stderr)
        return EXIT_ERROR
    for warning in rollout_warnings(client, ns, migration["spec"]):
        print(f"warning: {gates.BYPASS_MISSING}: {warning}", file=sys.stderr)
    color = args.color == "always" or (args.color == "auto" and out.isatty())
    print(planned.diff.summary, file=sys.stderr)
    live = client.get_migration(ns, migration["metadata"]["name"])
    print(
        "\n".join(
            pending_lines(live)
            or [
                "pending migrations: asked of Rails by the operator's pre-flight when the "
                "PostDeployMigration runs (apply it with mode: DryRun to see them first)"
            ]
        ),
        file=sys.stderr,
    )
    if planned.diff.text:
        out.write(colorize(planned.diff.text) if color else planned.diff.text)
    return 1 if planned.diff.changed else 0


def pending_lines(migration: dict[str, Any] | None) -> list[str] | None:
    """The pre-flight's pending list as lines, or None while it is not known.

    Pre-flight args other than the operator's status task come first, as a
    WARNING: the list is whatever they printed.
    """
    from pdm_operator import approval  # noqa: PLC0415

    status = (migration or {}).get("status") or {}
    pf = status.get("preflight") or {}
    if pf.get("phase") != "Succeeded":
        return None
    warning = approval.warning(pf).removesuffix("; ")
    pending = status.get("pendingMigrations") or []
    total = int(pf.get("pendingCount") or len(pending))
    head = f"pending migrations ({total}, pre-flight {pf.get('jobName', '')}"
    head += f" at {pf['completionTime']}):" if pf.get("completionTime") else "):"
    lines = [head] + [
        f"  {m.get('version', '')}  {m.get('name', '')}  ({m.get('database', '')})" for m in pending
    ]
    if total > len(pending):
        lines.append(f"  ... and {total - len(pending)} more")
    if not pending:
        lines.append("  none: every migration is up")
    return ([warning] if warning else []) + lines


def preflight_lines(migration: dict[str, Any]) -> list[str]:
    """The pre-flight pod that found the plan: its image and its args, exactly."""
    from pdm_operator import preflight  # noqa: PLC0415

    pf = ((migration.get("status") or {}).get("preflight")) or {}
    args = pf.get("args")
    if args is None:
        shown = "not recorded (a pre-flight of an older operator)"
    elif preflight.default_args(args):
        # The exact args are in status.preflight.args; the approver needs to know they are ours.
        shown = "the default (db:migrate:status, then the milestones of db/post_migrate)"
    else:
        shown = preflight.describe_args(args)
    lines = [f"pre-flight image: {pf.get('image') or 'not recorded'}", f"pre-flight args: {shown}"]
    skip = (pf.get("versionSkip") or {}).get("message")
    if skip:
        lines.append(f"VERSION SKIP ({pf['versionSkip'].get('reason')}): {skip}")
    return lines


# --- wait ---------------------------------------------------------------------


def progress_text(shown: dict[str, Any]) -> str:
    """``2/3 migrations done, running 2026… Name on main since …`` (status.progress)."""
    text = f"{shown.get('summary', '?')} migrations done"
    current = shown.get("current") or {}
    if current:
        where = f" on {current['database']}" if current.get("database") else ""
        text += (
            f", running {current.get('version', '')} {current.get('name', '')}{where}"
            f" since {current.get('since', '?')}"
        )
    if shown.get("unknown"):
        text += f" (now unknown: {shown['unknown']})"
    return text


def progress(name: str, migration: dict[str, Any] | None) -> tuple[str, int | None]:
    """The progress line for ``migration`` and, once it has ended, the exit code."""
    from pdm_operator import conditions, when  # noqa: PLC0415

    if migration is None:
        return f"pdm/{name}: NotFound (waiting for it to be created)", None
    status = migration.get("status") or {}
    state, reason = status.get("state") or "Pending", status.get("reason") or ""
    line = f"pdm/{name}: {state}" + (f" ({reason})" if reason else "")
    message = next(
        (c.get("message") for c in status.get("conditions") or [] if c.get("reason") == reason),
        "",
    )
    if message and state in ("Gated", "Pending", "Failed"):
        line += f": {message}"
    if state == model.STATE_RUNNING and status.get("progress"):
        line += f": {progress_text(status['progress'])}"
    # Outside the windows: when the next opens (status.windowOpens), once.
    opens = status.get("windowOpens")
    if opens and reason == when.OUTSIDE_WINDOW and opens not in line:
        line += f" (the window opens at {opens})"
    if conditions.is_true(status.get("conditions"), model.SUCCEEDED):
        return line, 0
    if conditions.is_true(status.get("conditions"), model.FAILED):
        failure = status.get("failure") or {}
        if failure.get("logTail"):
            pod = failure.get("pod", "the migration pod")
            line += f"\n--- log tail of {pod} ---\n" + failure["logTail"].rstrip("\n")
        return line, 1
    return line, None


def cmd_wait(args: argparse.Namespace, out: TextIO) -> int:
    from pdm_operator import kube  # noqa: PLC0415

    client = kube.Kube(kube.load_config(args.kubeconfig))
    namespace = args.namespace or current_namespace(args.kubeconfig)
    tty = out.isatty()
    start = time.monotonic()
    last_line = ""
    plan_shown = False
    while True:
        elapsed = time.monotonic() - start
        try:
            migration = client.get_migration(namespace, args.name)
        except Exception as e:  # noqa: BLE001 - any API failure ends the wait with 3
            print(f"\nerror: {e}", file=sys.stderr)
            return WAIT_ERROR
        line, code = progress(args.name, migration)
        plan = None if plan_shown else pending_lines(migration)
        if plan is not None:
            plan_shown = True
            out.write(("\r\033[K" if tty else "") + "\n".join(plan) + "\n")
        if tty:
            # One live line, rewritten in place; the end goes below it.
            head, _, rest = line.partition("\n")
            out.write(
                f"\r\033[K[{elapsed:5.0f}s] {head[:200]}"
                + (f"\n{rest}" if code is not None else "")
            )
        elif line != last_line:
            out.write(f"[{elapsed:5.0f}s] {line}\n")
        out.flush()
        last_line = line
        if code is not None:
            if tty:
                out.write("\n")
            return code
        if elapsed >= args.timeout:
            if tty:
                out.write("\n")
            print(f"timed out after {args.timeout:.0f}s: {line}", file=sys.stderr)
            return WAIT_TIMEOUT
        time.sleep(min(args.interval, max(0.0, args.timeout - elapsed)))


# --- retry --------------------------------------------------------------------
RETRY_REFUSED = 1


def retry_name(name: str, taken: set[str]) -> str:
    """``NAME-retry-N`` with the first free N (``retries.retry_name``)."""
    from pdm_operator import retries  # noqa: PLC0415

    return retries.retry_name(name, taken)


def retry_of(
    failed: dict[str, Any], taken: set[str], not_before: datetime | None = None
) -> dict[str, Any]:
    """A new PostDeployMigration with the failed one's spec (``retries.retry_of``, which
    the environment's retry policy uses too); RetryRefused if it is not retryable."""
    from pdm_operator import retries  # noqa: PLC0415

    try:
        return retries.retry_of(
            failed, retries.retry_name(failed["metadata"]["name"], taken), not_before=not_before
        )
    except retries.RetryRefused as e:
        raise RetryRefused(str(e)) from e


def migration_named(args: argparse.Namespace) -> tuple[Any, str, dict[str, Any]]:
    """The client, the namespace and the PostDeployMigration ``args.name``, which must exist."""
    from pdm_operator import kube  # noqa: PLC0415

    client = kube.Kube(kube.load_config(args.kubeconfig))
    namespace = args.namespace or current_namespace(args.kubeconfig)
    found = client.get_migration(namespace, args.name)
    if found is None:
        raise UsageError(f"pdm/{args.name} not found in namespace {namespace}")
    return client, namespace, found


class RetryRefused(UsageError):
    """The migration is not one that may be retried."""


def retry_at(at: str | None, now: datetime) -> datetime | None:
    """``--at``: an RFC 3339 time with a zone, not past; the retry's ``spec.notBefore``."""
    if at is None:
        return None
    try:
        when = timestamps.parse(at)
    except ValueError as e:
        raise UsageError(
            f"--at {at!r} is not an RFC 3339 time (2026-12-02T18:00:00Z, 2026-12-02T19:00:00+01:00)"
        ) from e
    if when.tzinfo is None:
        raise UsageError(f"--at {at!r} has no time zone: add Z (UTC) or an offset such as +01:00")
    if when <= now:
        raise UsageError(
            f"--at {timestamps.rfc3339(when)} is already past (it is {timestamps.rfc3339(now)} "
            "UTC): leave --at out to retry now"
        )
    return when


def cmd_retry(args: argparse.Namespace, out: TextIO) -> int:
    at = retry_at(args.at, timestamps.now())
    client, namespace, failed = migration_named(args)
    try:
        retry = retry_of(
            failed, {m["metadata"]["name"] for m in client.list_migrations(namespace)}, at
        )
    except RetryRefused as e:
        print(f"refused: {e}", file=sys.stderr)
        return RETRY_REFUSED
    if args.suspend:
        retry["spec"]["suspend"] = True
    try:
        created = client.create_migration(namespace, retry)
    except errors.ApiError as e:
        raise UsageError(f"creating the retry failed: {e.message}") from e
    when = f", not before {retry['spec']['notBefore']}" if at is not None else ""
    out.write(f"pdm/{created['metadata']['name']} created (retry of pdm/{args.name}{when})\n")
    return 0


# --- mark-executed ------------------------------------------------------------------
MARK_REFUSED = 1
#: ``spec.migrations.markExecuted`` limits (the CRD's).
MAX_MARKED = 20
VERSION = re.compile(r"^[0-9]{1,20}$")


def mark_of(
    source: dict[str, Any],
    versions: list[str],
    *,
    reason: str,
    by: str,
    replacement: str | None,
    taken: set[str],
) -> dict[str, Any]:
    """A new PostDeployMigration that records ``versions`` as executed without running them.

    Made from ``source`` (the migration that could not apply them) so that
    it goes to the same environment, through the same gates, pre-flight and
    approval rules, with the same pod: only ``spec.migrations`` is new. Its
    pre-flight must find every version pending, or it fails without
    writing anything. The source must have ended: marking a migration that
    a running Job may still apply would race with it.
    """
    from pdm_operator import conditions, retries  # noqa: PLC0415

    meta, status = source["metadata"], source.get("status") or {}
    name = meta["name"]
    finished = conditions.is_true(status.get("conditions"), model.SUCCEEDED) or (
        conditions.is_true(status.get("conditions"), model.FAILED)
    )
    if not finished:
        raise MarkRefused(
            f"pdm/{name} is {status.get('state') or 'Pending'}: mark versions executed once it "
            "has ended (a running Job may still apply them)"
        )
    bad = [v for v in versions if not VERSION.match(v)]
    if bad or not versions or len(versions) > MAX_MARKED:
        raise UsageError(
            f"give 1 to {MAX_MARKED} migration versions (digits, as db:migrate:status lists "
            f"them){': not ' + ', '.join(bad) if bad else ''}"
        )
    if not reason.strip() or len(reason) > MAX_REASON:
        raise UsageError(f"--reason says why (1 to {MAX_REASON} characters)")
    spec = copy.deepcopy(source["spec"])
    job = spec.get("job") or {}
    if job.get("command") or job.get("args"):
        raise MarkRefused(
            f"pdm/{name} replaces the chart's script (spec.job.command/args): the mark runs "
            "GitLab's gitlab:db:mark_migration_complete in /scripts/db-migrate's place, which "
            "such a Job does not have; create the PostDeployMigration by hand"
        )
    spec.pop("migrations", None)
    spec["suspend"] = False
    spec["mode"] = "Run"
    spec["preflight"] = {**(spec.get("preflight") or {}), "enabled": True}
    if "approval" in spec:  # a new plan: never the source's approval
        spec["approval"] = {"required": bool(spec["approval"].get("required"))}
    marked: dict[str, Any] = {"versions": sorted(set(versions)), "reason": reason, "by": by}
    if replacement:
        marked["replacement"] = replacement
    spec["migrations"] = {"markExecuted": marked}
    return {
        "apiVersion": model.API_VERSION,
        "kind": model.KIND,
        "metadata": {
            "name": retries.free_name(name, "mark", taken),
            "namespace": meta["namespace"],
            "labels": dict(meta.get("labels") or {}),
            "annotations": {model.ANNOTATION_MARK_OF: name},
        },
        "spec": spec,
    }


class MarkRefused(UsageError):
    """The migration is not one to mark versions executed from."""


def cmd_mark_executed(args: argparse.Namespace, out: TextIO) -> int:
    client, namespace, source = migration_named(args)
    try:
        made = mark_of(
            source,
            list(args.versions),
            reason=args.reason,
            by=client.whoami(),
            replacement=args.replacement,
            taken={m["metadata"]["name"] for m in client.list_migrations(namespace)},
        )
    except MarkRefused as e:
        print(f"refused: {e}", file=sys.stderr)
        return MARK_REFUSED
    if args.suspend:
        made["spec"]["suspend"] = True
    try:
        created = client.create_migration(namespace, made)
    except errors.ApiError as e:
        raise UsageError(f"creating the migration failed: {e.message}") from e
    versions = ", ".join(made["spec"]["migrations"]["markExecuted"]["versions"])
    out.write(
        f"pdm/{created['metadata']['name']} created: it marks {versions} as executed without "
        f"running them, after its pre-flight finds them pending (from pdm/{args.name}); "
        f"wait for it with `kubectl pdm wait {created['metadata']['name']}`\n"
    )
    return 0


# --- approve --------------------------------------------------------------------
APPROVE_REFUSED = 1


def cmd_approve(args: argparse.Namespace, out: TextIO) -> int:
    from pdm_operator import approval, timestamps  # noqa: PLC0415

    client, namespace, migration = migration_named(args)
    try:
        who = client.whoami()
        given = approval.approval_for(
            migration,
            by=who,
            at=timestamps.rfc3339(timestamps.now()),
            expected=args.plan,
        )
    except approval.Refused as e:
        print(f"refused: {e}", file=sys.stderr)
        return APPROVE_REFUSED
    for line in [*(pending_lines(migration) or []), *preflight_lines(migration)]:
        out.write(line + "\n")
    out.write(f"migration Job: {given['jobName']}\n")
    try:
        client.patch_migration_spec(namespace, args.name, {"approval": {"approved": given}})
    except errors.ApiError as e:
        raise UsageError(f"the approval was refused: {e.message}") from e
    out.write(f"pdm/{args.name}: plan {given['planHash']} approved by {who}\n")
    return 0


# --- lock, unlock, locks ----------------------------------------------------------
LOCK_REFUSED = 1
#: Tries of a guarded write whose environment changed since it was read (the
#: operator writes its status every few seconds while migrations queue).
LOCK_TRIES = 3
#: The CRD's maxLength of spec.changeLock.reason.
MAX_REASON = 1024
ENVIRONMENTS = f"{model.ENVIRONMENT_PLURAL}.{model.GROUP}"
#: Who grants the rights ``lock``, ``unlock`` and ``locks`` need (the chart's ClusterRole).
LOCKER_ROLE = (
    "cluster-scoped, so through a ClusterRoleBinding: the ClusterRole <release>-locker "
    "(pdm-operator-locker by default) grants it"
)
DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?")


class LockRefused(UsageError):
    """The environment is locked by someone else (exit 1: lock again with --force)."""


def undeclared(environment: str) -> str:
    return (
        f"environment {environment!r} is not declared (no PostDeployEnvironment "
        f"{environment!r}: `kubectl get pdenv` lists them)"
    )


def parse_duration(text: str) -> timedelta:
    """``--for``: ``2h``, ``90m``, ``1d``, ``1h30m``."""
    found = DURATION.fullmatch(text.strip())
    if not text.strip() or found is None:
        raise UsageError(f"--for {text!r} is not a duration (2h, 90m, 1d, 1h30m)")
    days, hours, minutes = (int(g or 0) for g in found.groups())
    lasts = timedelta(days=days, hours=hours, minutes=minutes)
    if not lasts:
        raise UsageError(f"--for {text!r} is no time at all: a lock needs a duration above 0")
    return lasts


def lock_until(until: str | None, lasts: str | None, now: datetime) -> datetime | None:
    """When the lock ends by itself (``--until`` or now + ``--for``); None: when unlocked.

    A time already past is refused: the lock would hold nothing, and the one
    who wrote it would believe the environment locked.
    """
    if lasts is not None:
        return now + parse_duration(lasts)
    if until is None:
        return None
    try:
        ends = timestamps.parse(until)
    except ValueError as e:
        raise UsageError(
            f"--until {until!r} is not an RFC 3339 time (2026-12-02T18:00:00Z, "
            "2026-12-02T19:00:00+01:00)"
        ) from e
    if ends.tzinfo is None:
        raise UsageError(
            f"--until {until!r} has no time zone: add Z (UTC) or an offset such as +01:00"
        )
    if ends <= now:
        raise UsageError(
            f"--until {timestamps.rfc3339(ends)} is already past (it is "
            f"{timestamps.rfc3339(now)} UTC): a lock that ended would hold nothing; give a "
            "later time, or --for a duration"
        )
    return ends


def lock_lapsed(lock: dict[str, Any], now: datetime) -> bool:
    """A lock whose ``until`` is past: it holds nothing, though it is still in the
    spec. Read as the operator reads it (``when.ChangeLock``): an ``until`` that
    cannot be read holds until unlocked."""
    from pdm_operator import when  # noqa: PLC0415

    found = when.ChangeLock.of(lock)
    return found is not None and not found.holds(now)


def describe_lock(lock: dict[str, Any], now: datetime) -> str:
    """``by alice since 2026-12-02T10:00:00Z until 2026-12-02T12:00:00Z: CR 1234``."""
    text = f"by {lock.get('by') or 'someone'}"
    if lock.get("at"):
        text += f" since {lock['at']}"
    if lock.get("until"):
        text += f" {'lapsed at' if lock_lapsed(lock, now) else 'until'} {lock['until']}"
    return f"{text}: {lock.get('reason') or 'no reason given'}"


def plan_lock(
    current: dict[str, Any] | None,
    *,
    reason: str,
    by: str,
    now: datetime,
    until: datetime | None,
    force: bool,
) -> tuple[dict[str, Any], str | None]:
    """The new ``spec.changeLock``, and a line about the lock it replaces (None: none).

    Someone else's lock that still holds is replaced only with ``force``: a
    second lock would otherwise silently take over the first one's reason
    and end, and the first one's owner would unlock it for everyone. One's
    own lock, or one that has lapsed, is replaced as asked (and shown).
    """
    reason = reason.strip()
    if not reason:
        raise UsageError("--reason must say why (a change request, an incident)")
    if len(reason) > MAX_REASON:
        raise UsageError(f"--reason is {len(reason)} characters long; at most {MAX_REASON}")
    lock: dict[str, Any] = {
        "reason": reason,
        "by": by,
        "at": timestamps.rfc3339(now),
        # null removes a replaced lock's until (a merge patch keeps what it omits).
        "until": timestamps.rfc3339(until) if until else None,
    }
    if not current:
        return lock, None
    old = describe_lock(current, now)
    if current.get("by") == by:
        return lock, f"replaces your own lock {old}"
    if lock_lapsed(current, now):
        return lock, f"replaces a lapsed lock {old}"
    if not force:
        raise LockRefused(
            f"already locked {old}. It holds until it is unlocked or lapses; to take it over "
            "in your name (your reason and end), lock again with --force"
        )
    return lock, f"replaces the lock {old} (--force)"


def refused_by_api(e: errors.ApiError, doing: str, needs: str) -> UsageError:
    """An API error as the person who ran the command can act on it."""
    if e.status == 401:
        return UsageError(
            f"{doing}: your credentials were not accepted ({e.message}): log in again"
        )
    if e.status == 0:
        return UsageError(f"{doing}: the API server could not be reached: {e.message}")
    if isinstance(e, errors.Forbidden):
        return UsageError(f"{doing} was refused: {e.message}\n  it needs {needs}")
    if isinstance(e, errors.Conflict):
        return UsageError(
            f"{doing}: the environment kept changing while it was written ({e.message}); "
            "run the command again"
        )
    return UsageError(f"{doing}: the API server answered: {e.message}")


def environment_named(client: Any, name: str, doing: str) -> dict[str, Any]:
    """The PostDeployEnvironment ``name``, which must be declared."""
    try:
        found: dict[str, Any] | None = client.get_environment(name)
    except errors.ApiError as e:
        raise refused_by_api(
            e, f"reading PostDeployEnvironment {name!r}", f"get on {ENVIRONMENTS} ({LOCKER_ROLE})"
        ) from e
    if found is None:
        raise UsageError(f"cannot {doing} {name!r}: {undeclared(name)}")
    return found


def write_guarded(
    client: Any, environment: dict[str, Any], change: dict[str, Any], doing: str, attempt: int
) -> bool:
    """Merge-patch ``change`` into the environment's spec, only if it is still the
    version read: False when it changed meanwhile (read it again and decide
    again); on the ``LOCK_TRIES``-th attempt that is an error.

    Guarded so that the lock ``lock`` replaces, or ``unlock`` removes and
    names, is the one that was read, not one set a moment later.
    """
    meta = environment.get("metadata") or {}
    name = str(meta.get("name"))
    patch = {"metadata": {"resourceVersion": meta.get("resourceVersion")}, "spec": change}
    try:
        client.patch_environment(name, patch)
    except errors.Conflict as e:
        if attempt < LOCK_TRIES:
            return False
        raise refused_by_api(e, f"{doing} {name!r}", "") from e
    except errors.ApiError as e:
        raise refused_by_api(
            e, f"{doing} {name!r}", f"patch on {ENVIRONMENTS} ({LOCKER_ROLE})"
        ) from e
    return True


def lock(client: Any, args: argparse.Namespace, out: TextIO, now: datetime) -> int:
    name = args.environment
    until = lock_until(args.until, args.lasts, now)
    try:
        by = client.whoami()
    except errors.ApiError as e:
        raise refused_by_api(
            e,
            "finding your user name (SelfSubjectReview)",
            f"create on selfsubjectreviews.authentication.k8s.io ({LOCKER_ROLE})",
        ) from e
    attempt = 0
    while True:
        attempt += 1
        environment = environment_named(client, name, "lock")
        current = (environment.get("spec") or {}).get("changeLock")
        try:
            new, replaced = plan_lock(
                current, reason=args.reason, by=by, now=now, until=until, force=args.force
            )
        except LockRefused as e:
            print(f"refused: {name}: {e}", file=sys.stderr)
            return LOCK_REFUSED
        if write_guarded(client, environment, {"changeLock": new}, "locking", attempt):
            break
    if replaced:
        out.write(f"{name}: {replaced}\n")
    ends = f"until {new['until']}" if new["until"] else f"until kubectl pdm unlock {name}"
    out.write(
        f"postdeployenvironment/{name} locked by {by} at {new['at']} {ends}: {new['reason']}\n"
        f"No run of {name} starts while it holds; a migration Job already running goes on.\n"
    )
    holder = (environment.get("status") or {}).get("holder")
    if holder:
        out.write(f"Running now: {holder} (it goes on).\n")
    return 0


def unlock(client: Any, args: argparse.Namespace, out: TextIO, now: datetime) -> int:
    name = args.environment
    attempt = 0
    while True:
        attempt += 1
        environment = environment_named(client, name, "unlock")
        current = (environment.get("spec") or {}).get("changeLock")
        if not current:
            out.write(f"postdeployenvironment/{name} is not locked: nothing to do\n")
            return 0
        if write_guarded(client, environment, {"changeLock": None}, "unlocking", attempt):
            was = "its lock had lapsed" if lock_lapsed(current, now) else "it was locked"
            out.write(
                f"postdeployenvironment/{name} unlocked ({was} {describe_lock(current, now)})\n"
            )
            return 0


def lock_rows(environments: list[dict[str, Any]], now: datetime) -> list[str]:
    """``locks``: one row per environment, its lock or ``-``, aligned as kubectl aligns."""
    rows = [["ENVIRONMENT", "LOCK", "BY", "SINCE", "UNTIL", "REASON"]]
    for env in sorted(environments, key=lambda e: str((e.get("metadata") or {}).get("name"))):
        name = str((env.get("metadata") or {}).get("name"))
        found = (env.get("spec") or {}).get("changeLock")
        if not found:
            rows.append([name, "-", "", "", "", ""])
            continue
        rows.append(
            [
                name,
                "lapsed" if lock_lapsed(found, now) else "locked",
                str(found.get("by") or ""),
                str(found.get("at") or "-"),
                str(found.get("until") or "-"),
                " ".join(str(found.get("reason") or "").split()),
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return [
        "   ".join([*(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)), r[-1]]).rstrip()
        for r in rows
    ]


def environment_client(args: argparse.Namespace) -> Any:
    from pdm_operator import kube  # noqa: PLC0415

    return kube.Kube(kube.load_config(args.kubeconfig))


def cmd_lock(args: argparse.Namespace, out: TextIO) -> int:
    return lock(environment_client(args), args, out, timestamps.now())


def cmd_unlock(args: argparse.Namespace, out: TextIO) -> int:
    return unlock(environment_client(args), args, out, timestamps.now())


def cmd_locks(args: argparse.Namespace, out: TextIO) -> int:
    client = environment_client(args)
    try:
        environments = client.list_environments()
    except errors.ApiError as e:
        raise refused_by_api(
            e, "listing PostDeployEnvironments", f"list on {ENVIRONMENTS} ({LOCKER_ROLE})"
        ) from e
    if not environments:
        out.write("no PostDeployEnvironment is declared\n")
        return 0
    out.write("\n".join(lock_rows(environments, timestamps.now())) + "\n")
    return 0


# --- rollback-check -------------------------------------------------------------
ROLLBACK_UNSAFE = 1
#: Whether the rollback is safe is not known: no history, or a record or version unread.
ROLLBACK_UNKNOWN = 3


def history_location(
    environment: str, namespace: str | None, declared: dict[str, Any] | None
) -> tuple[str, str] | str:
    """Where ``environment``'s history is kept, (namespace, ConfigMap), or why it is unknown.

    From the PostDeployEnvironment's ``status.history``, which the operator
    that records the runs writes (``envstatus.py``): never a guessed
    namespace, which read "no history, safe" for every install elsewhere.
    ``-n`` names the operator's namespace outright, for a cluster where the
    environment is not declared (an operator older than environments).
    """
    from pdm_operator import history  # noqa: PLC0415

    if namespace:
        return namespace, history.configmap_name(environment)
    if declared is None:
        return (
            f"{undeclared(environment)}, so where its runs are recorded is unknown; check the "
            "name, or name the operator's namespace with -n"
        )
    status = declared.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready" and cond.get("status") == "False":
            return (
                f"PostDeployEnvironment {environment!r} is not ready ({cond.get('reason')}: "
                f"{cond.get('message')})"
            )
    where = str(status.get("history") or "")
    found, _, name = where.partition("/")
    if not found or not name:
        return (
            f"PostDeployEnvironment {environment!r} does not say where its runs are recorded "
            "yet (status.history, written by the operator within seconds of starting): is the "
            "operator running, and does it watch one of the environment's namespaces?"
        )
    return found, name


def target_version(target: str) -> None:
    """Refuse a ``--to`` that is not a GitLab version (a usage error, exit 2)."""
    from pdm_operator import history  # noqa: PLC0415

    if history.Version.parse(target) is None:
        raise UsageError(
            f"--to {target!r} is not a GitLab version (18.6.0, v18.6.0-ee, 18.6.0-rc2, "
            "18.6.0-ee.0, 18.7.202612011206-a5c4a2e2b29.f8e5a8b3c2d, "
            "18-7-202612011206-a5c4a2e2b29)"
        )


def rollback_verdict(
    environment: str, target: str, configmap: dict[str, Any] | None, where: str
) -> tuple[int, str]:
    """Exit code and text of ``rollback-check`` from the environment's history.

    0 safe, 1 unsafe (a run above ``target`` applied migrations), 3 unknown:
    no history, or a record that cannot be read or compared with ``target``
    and nothing that makes it unsafe for certain. Never "safe" from nothing.
    """
    from pdm_operator import history  # noqa: PLC0415

    target_version(target)
    wanted = history.Version.parse(target)
    assert wanted is not None
    nothing = (
        f"Either no post-deployment migration of {environment} has applied anything yet, or "
        f"its history is elsewhere: check that {environment!r} is the migrations' "
        "spec.environment and that -n names the operator's namespace (its --lock-namespace). "
        "Do not take this as safe unless you know that no post-deployment migration ran\n"
    )
    if configmap is None:
        return ROLLBACK_UNKNOWN, (
            f"UNKNOWN: no run of environment {environment!r} is recorded: {where} does not "
            f"exist. {nothing}"
        )
    records = history.runs(configmap)
    if not records:
        return ROLLBACK_UNKNOWN, (
            f"UNKNOWN: no run of environment {environment!r} is recorded: {where} holds no "
            f"record. {nothing}"
        )
    answer = history.judge(records, wanted)
    top = history.floor(records)
    floor_text = f"; the floor is {top.version}" if top else ""
    unknown = [
        "  "
        + (
            history.why_unknown(r)
            or f"{r.describe()}: its version cannot be ordered with {target} (an auto-deploy "
            "build and a release of one minor version, or two builds of one timestamp)"
        )
        for r in answer.unknown
    ]
    if answer.above:
        lines = [
            f"UNSAFE: rolling {environment} back to {target} would run code older than "
            f"post-deployment migrations that already ran ({where}{floor_text}):"
        ]
        lines += [f"  {run.describe()}" for run in answer.above]
        if unknown:
            lines += ["and these records cannot be compared with it:", *unknown]
        return ROLLBACK_UNSAFE, "\n".join(lines) + "\n"
    if unknown:
        lines = [
            f"UNKNOWN: whether rolling {environment} back to {target} is safe cannot be told "
            f"from {where}: these records cannot be compared with it:",
            *unknown,
            f"Read them with `kubectl get configmap -n {where.replace('/', ' ')} -o yaml` and "
            "find what those runs applied and at which version (their PostDeployMigrations' "
            "status.rollback and status.pendingMigrations, the deployment records); correct or "
            "remove a record by hand only once you know.",
        ]
        return ROLLBACK_UNKNOWN, "\n".join(lines) + "\n"
    return 0, (
        f"safe: rolling {environment} back to {target} leaves no post-deployment migration "
        f"of a later version behind ({len(records)} run(s) recorded in {where}"
        f"{floor_text})\n"
    )


def cmd_rollback_check(args: argparse.Namespace, out: TextIO) -> int:
    from pdm_operator import kube  # noqa: PLC0415

    target_version(args.to)
    client = kube.Kube(kube.load_config(args.kubeconfig))
    declared = None if args.namespace else client.get_environment(args.environment)
    found = history_location(args.environment, args.namespace, declared)
    if isinstance(found, str):
        out.write(
            f"UNKNOWN: whether rolling {args.environment} back to {args.to} is safe cannot be "
            f"told: {found}. Do not take this as safe\n"
        )
        return ROLLBACK_UNKNOWN
    namespace, name = found
    code, text = rollback_verdict(
        args.environment, args.to, client.get_configmap(namespace, name), f"{namespace}/{name}"
    )
    out.write(text)
    return code


def current_namespace(kubeconfig: str | None) -> str:
    from pdm_operator import kube  # noqa: PLC0415

    return kube.current_namespace(kubeconfig)


# --- run ----------------------------------------------------------------------
def cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    from pdm_operator import runner  # noqa: PLC0415 - keeps the CI commands free of Kopf

    return runner.run(
        runner.Options(
            namespaces=list(args.namespaces),
            lock_namespace=args.lock_namespace or runner.default_lock_namespace(),
            kubeconfig=args.kubeconfig,
            liveness_port=args.liveness_port,
            workers=args.workers,
            report_threads=args.report_threads,
            report_timeout=args.report_timeout,
            metrics_port=args.metrics_port,
            log_format=args.log_format,
            stall_threshold=args.stall_threshold,
            leader_election=args.leader_election,
            leader_identity=args.leader_identity or "",
            leader_lease_duration=args.leader_lease_duration,
            leader_renew_interval=args.leader_renew_interval,
            verbose=args.verbose,
        )
    )


def _release_manager_commands(sub: Any, cluster_flags: Any) -> None:
    """retry, approve and rollback-check: the commands that act on a migration's history."""
    retry_p = sub.add_parser(
        "retry", help="create a new PostDeployMigration from a failed one (never re-runs in place)"
    )
    retry_p.add_argument("name", help="name of the failed PostDeployMigration")
    retry_p.add_argument(
        "-n", "--namespace", default=None, help="namespace (default: the context's)"
    )
    retry_p.add_argument(
        "--suspend", action="store_true", help="create it suspended, to be approved separately"
    )
    retry_p.add_argument(
        "--at",
        default=None,
        metavar="TIME",
        help="RFC 3339 time before which it does not start (spec.notBefore), e.g. "
        "2026-12-07T13:00:00Z; it still waits for the environment's windows and locks",
    )
    cluster_flags(retry_p)
    retry_p.set_defaults(func=cmd_retry)

    approve_p = sub.add_parser(
        "approve",
        help="approve the plan a PostDeployMigration shows (its Job and pending migrations)",
    )
    approve_p.add_argument("name", help="name of the PostDeployMigration")
    approve_p.add_argument(
        "-n", "--namespace", default=None, help="namespace (default: the context's)"
    )
    approve_p.add_argument(
        "--plan",
        default=None,
        metavar="HASH",
        help="approve only if the plan shown is still this one (status.preflight.planHash)",
    )
    cluster_flags(approve_p)
    approve_p.set_defaults(func=cmd_approve)

    mark_p = sub.add_parser(
        "mark-executed",
        help="record migration versions as executed without running them (a new "
        "PostDeployMigration from NAME, through its gates, pre-flight and approval)",
    )
    mark_p.add_argument("name", help="the PostDeployMigration that could not apply them")
    mark_p.add_argument("versions", nargs="+", metavar="VERSION", help="migration versions")
    mark_p.add_argument("--reason", required=True, help="why (an incident, a change request)")
    mark_p.add_argument(
        "--replacement", default=None, help="the migration or issue that replaces them"
    )
    mark_p.add_argument(
        "-n", "--namespace", default=None, help="namespace (default: the context's)"
    )
    mark_p.add_argument(
        "--suspend", action="store_true", help="create it suspended, to be approved separately"
    )
    cluster_flags(mark_p)
    mark_p.set_defaults(func=cmd_mark_executed)

    check_p = sub.add_parser(
        "rollback-check",
        help="is rolling ENV back to VERSION safe after the post-deployment migrations that ran?",
    )
    check_p.add_argument("environment", metavar="ENV", help="the environment (spec.environment)")
    check_p.add_argument("--to", required=True, metavar="VERSION", help="the GitLab version")
    check_p.add_argument(
        "-n",
        "--namespace",
        default=None,
        help="the operator's namespace, where the history is kept (default: where the "
        "PostDeployEnvironment ENV says it is, status.history)",
    )
    cluster_flags(check_p)
    check_p.set_defaults(func=cmd_rollback_check)


def _change_lock_commands(sub: Any, cluster_flags: Any) -> None:
    """lock, unlock and locks: an environment's change lock (spec.changeLock)."""
    lock_p = sub.add_parser(
        "lock",
        help="change-lock an environment: no run of it starts until it is unlocked or lapses",
    )
    lock_p.add_argument("environment", metavar="ENV", help="the PostDeployEnvironment")
    lock_p.add_argument(
        "--reason",
        required=True,
        help="why (a change request, an incident): every waiting migration shows it",
    )
    ends = lock_p.add_mutually_exclusive_group()
    ends.add_argument(
        "--until", default=None, metavar="RFC3339", help="when it lapses (2026-12-02T18:00:00Z)"
    )
    ends.add_argument(
        "--for",
        dest="lasts",
        default=None,
        metavar="DURATION",
        help="how long it holds from now (2h, 90m, 1d, 1h30m)",
    )
    lock_p.add_argument(
        "--force", action="store_true", help="replace a lock someone else set (printed first)"
    )
    cluster_flags(lock_p)
    lock_p.set_defaults(func=cmd_lock)

    unlock_p = sub.add_parser("unlock", help="remove an environment's change lock")
    unlock_p.add_argument("environment", metavar="ENV", help="the PostDeployEnvironment")
    cluster_flags(unlock_p)
    unlock_p.set_defaults(func=cmd_unlock)

    locks_p = sub.add_parser("locks", help="list the environments and their change locks")
    cluster_flags(locks_p)
    locks_p.set_defaults(func=cmd_locks)


def build_parser(prog: str = "pdm-operator") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run GitLab post-deployment migrations as Kubernetes Jobs.",
        epilog="diff exits 0 (no change), 1 (changes), >1 (error); "
        "wait exits 0 (Succeeded), 1 (Failed), 2 (timeout), 3 (error); "
        "retry exits 0 (created), 1 (refused: not failed), 2 (error); "
        "approve exits 0 (approved), 1 (refused: no plan, or not that plan), 2 (error); "
        "mark-executed exits 0 (created), 1 (refused: not ended, or a script of its own), "
        "2 (error); "
        "rollback-check exits 0 (safe), 1 (unsafe), 2 (error), "
        "3 (unknown: no history, or a record or version it cannot read); "
        "lock exits 0 (locked), 1 (refused: locked by someone else, without --force), "
        "2 (error); unlock and locks exit 0, or 2 (error).",
    )
    parser.add_argument("--version", action="version", version=f"pdm-operator {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def cluster_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG)")

    def file_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "-f", "--filename", required=True, help="PostDeployMigration manifest ('-' for stdin)"
        )
        p.add_argument(
            "-n",
            "--namespace",
            default=None,
            help="namespace (default: the manifest's, else default)",
        )
        p.add_argument(
            "--image",
            default=None,
            help="image to use instead of resolving spec.image.fromDeployment",
        )

    render_p = sub.add_parser("render", help="print the Job the operator would create (offline)")
    file_flags(render_p)
    render_p.add_argument(
        "--template",
        default=None,
        help="with spec.podTemplateFrom: a YAML file holding the chart's migrations Job "
        "or the toolbox Deployment (e.g. `helm template` output) to copy the pod from",
    )
    render_p.set_defaults(func=cmd_render)

    diff_p = sub.add_parser(
        "diff", help="dry-run the Job on the cluster and diff it with the last run"
    )
    file_flags(diff_p)
    cluster_flags(diff_p)
    diff_p.add_argument("--color", choices=["auto", "always", "never"], default="auto")
    diff_p.set_defaults(func=cmd_diff)

    wait_p = sub.add_parser("wait", help="follow a PostDeployMigration until it ends")
    wait_p.add_argument("name", help="name of the PostDeployMigration")
    wait_p.add_argument(
        "-n", "--namespace", default=None, help="namespace (default: the context's)"
    )
    wait_p.add_argument("--timeout", type=float, default=3900.0, help="seconds (default 3900)")
    wait_p.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    cluster_flags(wait_p)
    wait_p.set_defaults(func=cmd_wait)

    _release_manager_commands(sub, cluster_flags)
    _change_lock_commands(sub, cluster_flags)

    run = sub.add_parser("run", help="run the operator")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        dest="namespaces",
        help="watch this namespace (repeatable); default: all namespaces",
    )
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="watch all namespaces (the default)"
    )
    run.add_argument(
        "--lock-namespace",
        default=None,
        help="namespace of the per-environment Leases (default: $POD_NAMESPACE, else 'default')",
    )
    cluster_flags(run)
    run.add_argument(
        "--liveness-port", type=int, default=8080, help="port of GET /healthz (default 8080)"
    )
    run.add_argument(
        "--workers", type=int, default=32, help="threads for Kubernetes API calls (default 32)"
    )
    run.add_argument(
        "--report-timeout",
        type=float,
        default=5.0,
        help="seconds per GitLab/Sentry call (default 5)",
    )
    run.add_argument(
        "--report-threads",
        type=int,
        default=16,
        help="threads for GitLab/Sentry calls (default 16)",
    )
    run.add_argument(
        "--metrics-port", type=int, default=9180, help="port of GET /metrics (default 9180; 0: off)"
    )
    run.add_argument(
        "--log-format", choices=["plain", "json"], default="plain", help="log line format"
    )
    run.add_argument(
        "--stall-threshold",
        type=float,
        default=120.0,
        help="seconds an object may lag its watch before liveness fails (default 120)",
    )
    run.add_argument(
        "--leader-election",
        action="store_true",
        help="HA: act only while holding the Lease pdm-operator-leader in --lock-namespace",
    )
    run.add_argument("--leader-identity", default=None, help="default: $POD_NAME, else host-pid")
    run.add_argument("--leader-lease-duration", type=float, default=15.0, help=argparse.SUPPRESS)
    run.add_argument("--leader-renew-interval", type=float, default=5.0, help=argparse.SUPPRESS)
    run.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    run.set_defaults(func=cmd_run)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "pdm-operator") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_ERROR
    try:
        return int(args.func(args, sys.stdout))
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except errors.ApiError as e:
        print(f"error: the API server: {e.message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


def kubectl_plugin() -> int:
    """Entry point of ``kubectl-pdm``: ``kubectl pdm diff -f pdm.yaml``."""
    return main(prog="kubectl pdm")


if __name__ == "__main__":
    sys.exit(main())
