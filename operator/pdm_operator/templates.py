"""Where the migration pod's wiring comes from: what GitLab's chart already runs (pure).

A GitLab toolbox cannot migrate anything without the chart's wiring: the image
ENTRYPOINT renders ``$CONFIG_TEMPLATE_DIRECTORY/*.erb`` into
``$CONFIG_DIRECTORY`` (so the container must not set ``command``), the
``certificates`` and ``configure`` init containers copy the CA bundle and the
projected secrets (rails secrets, one psql password per database, redis,
gitaly, object storage…) into Memory emptyDirs, and the ``<release>-migrations``
ConfigMap carries ``database.yml.erb``. Rather than have users hand-copy
80 to 120 lines of it, ``spec.podTemplateFrom`` names an object that already has
it, and this module turns that object's pod template into the pod template of
a PDM Job:

``migrationsJob``
    The chart's own migrations Job (``charts/gitlab/charts/migrations/
    templates/_jobspec.yaml``, chart 9.x): labelled ``app: migrations,
    release: <release>`` (``gitlab.standardLabels`` in ``templates/
    _application.tpl``), named ``<release>-migrations-<7 hex>``
    (``migrations.jobname``), no TTL, so the current one stays in the
    namespace. Its ``migrations`` container runs ``args: [/bin/bash, -c,
    "set -e; /scripts/wait-for-deps; /scripts/db-migrate"]`` (values.yaml
    ``scriptTpl``) with no ``command``. A regular deploy renders it with
    ``gitlab.migrations.extraEnv.SKIP_POST_DEPLOYMENT_MIGRATIONS=true``
    (``doc/installation/upgrade.md``); ``gitlab.extraEnv`` puts that into
    the ``env`` of the init containers too. The variable is removed from every
    container here (see :func:`without_skip`).

``toolboxDeployment``
    The toolbox Deployment's pod template (``charts/gitlab/charts/toolbox/
    templates/deployment.yaml``): nearly the same wiring, but its ``toolbox``
    container runs a sleep loop, its tmp volume may be a PVC (which a Job
    next to the Deployment must not share), and it lacks
    ``BYPASS_SCHEMA_VERSION``. Without that variable ``/scripts/wait-for-deps``
    waits until *every* migration is applied (chart docs,
    ``doc/charts/gitlab/webservice/_index.md``, "BYPASS_SCHEMA_VERSION"),
    which for a post-deployment migration Job is forever. So the args become
    the chart's migration script, the PVC an emptyDir, and the variable is
    added as the migrations Job has it.

What belongs to the source object and not to a PDM Job is stripped: its
metadata and status, the Job controller's selector and ``controller-uid`` /
``job-name`` labels, ``pod-template-hash``, Helm's bookkeeping labels and
``checksum/*`` annotations, ``nodeName``. ``app`` and ``release`` stay on the
pod: NetworkPolicies and dashboards select migration pods by them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from pdm_operator import images, model
from pdm_operator.model import Body

KIND_JOB = "Job"
KIND_DEPLOYMENT = "Deployment"

#: The chart's migration script (``scriptTpl`` in
#: ``charts/gitlab/charts/migrations/values.yaml``, chart 9.x, for a primary
#: site), run through ``args`` so that the image ENTRYPOINT still renders the
#: configuration first.
CHART_MIGRATION_ARGS: tuple[str, ...] = (
    "/bin/bash",
    "-c",
    "set -e;\n/scripts/wait-for-deps;\n/scripts/db-migrate;\n",
)

#: The migrations Job's fixed env (``_jobspec.yaml``): where the ENTRYPOINT
#: finds the templates and writes the configuration, and the switch that lets
#: ``wait-for-deps`` pass while migrations are pending (which they are: this
#: Job is what applies them).
CHART_MIGRATION_ENV: tuple[tuple[str, str], ...] = (
    ("CONFIG_TEMPLATE_DIRECTORY", "/var/opt/gitlab/templates"),
    ("CONFIG_DIRECTORY", "/srv/gitlab/config"),
    ("BYPASS_SCHEMA_VERSION", "true"),
)

DEFAULT_JOB_CONTAINER = "migrations"  # .Chart.Name of the migrations subchart
DEFAULT_DEPLOYMENT_CONTAINER = "toolbox"  # .Chart.Name of the toolbox subchart

#: Labels that say who made the source object, not what the pod is.
SOURCE_LABELS = frozenset(
    {
        "controller-uid",
        "batch.kubernetes.io/controller-uid",
        "job-name",
        "batch.kubernetes.io/job-name",
        "pod-template-hash",
        "heritage",  # gitlab.standardLabels: {{ .Release.Service }}
        "chart",  # gitlab.standardLabels: <chart>-<version>
        "helm.sh/chart",
        "app.kubernetes.io/managed-by",
        "app.kubernetes.io/version",
    }
)
#: The label of the chart's batched-background-migrations wait Job, which also
#: carries ``app: migrations, release: <release>`` (chart MR 5372).
BBM_CHECK_LABEL = "gitlab.com/batched-background-migrations-check"
#: Pod spec fields that only make sense on the source's own pods.
SOURCE_POD_FIELDS = ("nodeName",)


@dataclass(frozen=True)
class Template:
    """A pod template ready to become a PDM Job's, and where it came from."""

    kind: str  # Job | Deployment
    name: str
    uid: str
    container: str  # the migration container's name in ``spec``
    image: str  # the migration container's image in the source (the stale check)
    metadata: Body  # labels and annotations, cleaned
    spec: Body  # the pod spec, cleaned

    def status(self) -> Body:
        """What ``status.podTemplate`` records: enough to find the source again."""
        return {"kind": self.kind, "name": self.name, "uid": self.uid, "image": self.image}


@dataclass(frozen=True)
class Missing:
    """The source cannot give a template; ``reason`` is the condition's."""

    reason: str  # TemplateNotFound | TemplateAmbiguous | ContainerNotFound
    message: str


def default_selector(release: str) -> str:
    """The chart's labels on its migrations Job (``gitlab.standardLabels``)."""
    return f"app=migrations,release={release}"


def job_selector(source: Body) -> str:
    """``migrationsJob.selector``, else the chart's labels for ``release``."""
    return str(source.get("selector") or default_selector(str(source["release"])))


def without_skip(env: list[Body] | None) -> list[Body]:
    """``env`` without SKIP_POST_DEPLOYMENT_MIGRATIONS, in any form.

    Rails reads the variable for presence, not value: ``Gitlab::Database.
    add_post_migrate_path_to_rails`` (gitlabhq ``lib/gitlab/database.rb``)
    starts with ``return if ENV['SKIP_POST_DEPLOYMENT_MIGRATIONS'] && !force``,
    and the older ``config/initializers/0_post_deployment_migrations.rb`` with
    ``unless ENV['SKIP_POST_DEPLOYMENT_MIGRATIONS']``. "false", "0" and ""
    all skip ``db/post_migrate``. The only value that runs them is no value.
    """
    return [copy.deepcopy(e) for e in env or [] if e.get("name") != model.SKIP_PDM_ENV]


def scrub_skip(pod_spec: Body) -> Body:
    """Remove the skip variable from every container and init container's env."""
    out = copy.deepcopy(pod_spec)
    for key in ("initContainers", "containers"):
        for c in out.get(key) or []:
            if "env" in c:
                c["env"] = without_skip(c["env"])
                if not c["env"]:
                    del c["env"]
    return out


#: What the migration container prints (to stderr, before anything else runs)
#: when it finds the variable in its environment; never its value.
SKIP_MARKER = (
    f"pdm-operator: {model.SKIP_PDM_ENV} was set in the pod and is unset before the migrations"
)

#: The shell line the migration container runs first (see :func:`unset_skip`).
UNSET_SKIP = (
    f'if [ -n "${{{model.SKIP_PDM_ENV}+set}}" ]; then '
    f"echo '{SKIP_MARKER}' >&2; fi; unset {model.SKIP_PDM_ENV}"
)

#: ``<shell> -c SCRIPT``: the forms whose script gets :data:`UNSET_SKIP` as its
#: first line; any other command line is run through ``/bin/bash -c``.
SHELLS = frozenset({"/bin/bash", "bash", "/bin/sh", "sh"})


def runs_own_script(command: list[str] | None) -> bool:
    """Whether ``command`` is ``<shell> -c SCRIPT`` with the script in it (args ignored),
    other than the wrapper :func:`unset_skip` writes, which runs its args."""
    argv = list(command or [])
    return (
        len(argv) >= 3
        and argv[0] in SHELLS
        and argv[1] == "-c"
        and argv[2] != f'{UNSET_SKIP}; exec "$@"'
    )


def unset_skip(command: list[str] | None, args: list[str] | None) -> tuple[list[str], list[str]]:
    """``command`` and ``args`` that unset SKIP_POST_DEPLOYMENT_MIGRATIONS before they run.

    Scrubbing ``env`` (:func:`scrub_skip`) is not enough: a ConfigMap or
    Secret in ``envFrom`` (the chart's ``extraEnvFrom``), the image's own
    ``ENV``, or a file the CNG ENTRYPOINT exports (``gitlab-ruby/scripts/
    exec-env`` exports each file of ``/etc/gitlab/environment``) brings it
    back, and Rails skips ``db/post_migrate`` whenever it is present. So the
    container's own shell unsets it, after the ENTRYPOINT and before
    anything else: the ENTRYPOINT still runs first, as it must (CNG
    ``gitlab-toolbox/Dockerfile``: ``ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]``,
    which renders the configuration and ends in ``exec /scripts/exec-env "$@"``,
    which ends in ``exec "$@"``), so no ``command`` is added where there was none.

    ``<shell> -c SCRIPT`` (in ``command``, ``args`` or across both, as the
    chart and ``command: [/bin/sh, -c]`` have it) gets the line before its
    script; any other command line becomes ``/bin/bash -c 'UNSET; exec "$@"'
    -- ...`` around it, in ``command`` if it was there, else in ``args``.
    Applied twice it changes nothing (the pre-flight re-applies it over the
    migration Job's container). With neither, the image's CMD runs, which
    cannot be wrapped; the chart's Job and the toolbox copy always have args.
    """
    command, args = list(command or []), list(args or [])
    argv = [*command, *args]
    if len(argv) >= 3 and argv[0] in SHELLS and argv[1] == "-c":
        if not argv[2].startswith(UNSET_SKIP):
            argv[2] = f"{UNSET_SKIP}\n{argv[2]}"
        return argv[: len(command)], argv[len(command) :]
    if not argv:
        return command, args
    wrapper = ["/bin/bash", "-c", f'{UNSET_SKIP}; exec "$@"', "--"]
    if command:
        return [*wrapper, *command], args
    return [], [*wrapper, *args]


def skip_sources(container: Body) -> list[str]:
    """Where SKIP_POST_DEPLOYMENT_MIGRATIONS can reach ``container`` from, in words.

    ``env`` never carries it (:func:`without_skip`), so a pod that printed
    :data:`SKIP_MARKER` got it from one of these: each ConfigMap and Secret in
    ``envFrom`` whose prefix could make the name, then the image's own ENV
    (or what its ENTRYPOINT exports). For the Warning that names them.
    """
    found = []
    for source in container.get("envFrom") or []:
        if not model.SKIP_PDM_ENV.startswith(str(source.get("prefix") or "")):
            continue
        for key, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
            if key in source:
                found.append(f"{kind} {(source[key] or {}).get('name', '')} (envFrom)")
    return [*found, "the image's ENV (or what its ENTRYPOINT exports)"]


def is_bbm_check(job: Body) -> bool:
    """The chart's batched-background-migrations wait Job: ``app: migrations`` too, but
    it only waits for background migrations, so it is never a template."""
    return BBM_CHECK_LABEL in ((job.get("metadata") or {}).get("labels") or {})


def newest_job(jobs: list[Body], selector: str) -> Body | Missing:
    """The chart's current migrations Job among ``jobs`` (already selected).

    The chart keeps one Job per release (Helm deletes the previous one when
    the name's hash changes), but a failed upgrade or a manual copy can leave
    more: the newest wins. Two equally new ones cannot be told apart, and the
    operator will not guess which wiring runs an irreversible migration.
    Jobs the operator made itself are never a template, nor is the chart's
    batched-background-migrations check (:func:`is_bbm_check`), whatever the
    selector matched.
    """
    live = [j for j in jobs if not j.get("metadata", {}).get("deletionTimestamp")]
    candidates = [
        j
        for j in live
        if (j.get("metadata", {}).get("labels") or {}).get(model.LABEL_MANAGED_BY) != "pdm-operator"
        and not is_bbm_check(j)
    ]
    if not candidates:
        checks = sorted(j["metadata"]["name"] for j in live if is_bbm_check(j))
        only = (
            f"; only the batched background migrations check ({', '.join(checks)}, label "
            f"{BBM_CHECK_LABEL}) matches, and it is never a template"
            if checks
            else ""
        )
        return Missing(
            "TemplateNotFound",
            f"no migrations Job matches {selector!r} (spec.podTemplateFrom.migrationsJob){only}: "
            "the chart's migrations Job of this release is not there (not deployed yet, or "
            "deleted after its run by an install tool). Use "
            "podTemplateFrom.toolboxDeployment where the chart's Job is not kept "
            "(docs/usage.md, Chart values)",
        )
    newest = max(c["metadata"].get("creationTimestamp") or "" for c in candidates)
    tied = sorted(
        c["metadata"]["name"]
        for c in candidates
        if (c["metadata"].get("creationTimestamp") or "") == newest
    )
    if len(tied) > 1:
        return Missing(
            "TemplateAmbiguous",
            f"Jobs {', '.join(tied)} match {selector!r} and are equally new; narrow "
            "spec.podTemplateFrom.migrationsJob.selector to one of them",
        )
    return next(c for c in candidates if c["metadata"]["name"] == tied[0])


def _container_names(pod_spec: Body) -> list[str]:
    return [str(c.get("name")) for c in pod_spec.get("containers") or []]


def _cleaned(kind: str, source: Body, container: str) -> Template | Missing:
    meta = source.get("metadata") or {}
    pod_template = (source.get("spec") or {}).get("template") or {}
    pod_spec = copy.deepcopy(pod_template.get("spec") or {})
    if container not in _container_names(pod_spec):
        return Missing(
            "ContainerNotFound",
            f"{kind} {meta.get('name')!r} has no container {container!r} "
            f"(spec.podTemplateFrom); it has {_container_names(pod_spec)}",
        )
    for key in SOURCE_POD_FIELDS:
        pod_spec.pop(key, None)
    pod_meta = pod_template.get("metadata") or {}
    labels = {k: v for k, v in (pod_meta.get("labels") or {}).items() if k not in SOURCE_LABELS}
    annotations = {
        k: v
        for k, v in (pod_meta.get("annotations") or {}).items()
        if not k.startswith("checksum/")
    }
    image = next(
        str(c.get("image") or "") for c in pod_spec["containers"] if c.get("name") == container
    )
    return Template(
        kind=kind,
        name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""),
        container=container,
        image=image,
        metadata={"labels": labels, "annotations": annotations},
        spec=scrub_skip(pod_spec),
    )


def from_job(job: Body, container: str = DEFAULT_JOB_CONTAINER) -> Template | Missing:
    """The chart's migrations Job, as it is: its args, env and wiring are the migration."""
    return _cleaned(KIND_JOB, job, container)


def from_deployment(
    deployment: Body, container: str = DEFAULT_DEPLOYMENT_CONTAINER
) -> Template | Missing:
    """The toolbox Deployment, turned into what the chart's migrations Job would be."""
    found = _cleaned(KIND_DEPLOYMENT, deployment, container)
    if isinstance(found, Missing):
        return found
    spec = found.spec
    for c in spec["containers"]:
        if c.get("name") != container:
            continue
        c.pop("command", None)
        c["args"] = list(CHART_MIGRATION_ARGS)
        # A toolbox has no reason to be probed as a Job; a probe would only
        # restart a long migration.
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            c.pop(probe, None)
        c["env"] = merge_by(
            "name", c.get("env"), [{"name": "BYPASS_SCHEMA_VERSION", "value": "true"}]
        )
    for volume in spec.get("volumes") or []:
        if "persistentVolumeClaim" in volume:
            # The toolbox's tmp PVC is ReadWriteOnce and in use by the toolbox pod.
            del volume["persistentVolumeClaim"]
            volume["emptyDir"] = {}
    return found


def from_object(obj: Body, source: Body) -> Template | Missing:
    """A template from an object read offline (``pdm-operator render --template``)."""
    if "migrationsJob" in source:
        return from_job(obj, str(source["migrationsJob"].get("container") or DEFAULT_JOB_CONTAINER))
    return from_deployment(
        obj, str(source["toolboxDeployment"].get("container") or DEFAULT_DEPLOYMENT_CONTAINER)
    )


def stale(template: Template, source_image: str, resolved_image: str) -> str | None:
    """Why the template's wiring is not the deployed version's, or None when it is.

    The chart renders the migrations Job and the toolbox Deployment from the
    same ``image.repository:tag``. A migrations Job that runs another image
    belongs to an earlier ``helm upgrade``: its ConfigMap, secrets and env are
    that release's, and running it with the new image would mix two versions.
    """
    want = {images.normalized(source_image), images.normalized(resolved_image)}
    if images.normalized(template.image) in want:
        return None
    return (
        f"{template.kind} {template.name!r} (spec.podTemplateFrom) runs {template.image!r}, "
        f"but the deployed toolbox image is {source_image!r}: the chart has not been applied "
        "for this version yet; waiting for its migrations Job of this version"
    )


def merge_by(key: str, base: list[Body] | None, overrides: list[Body] | None) -> list[Body]:
    """``base`` with each of ``overrides`` replacing the item of the same ``key``, else appended."""
    out = [copy.deepcopy(e) for e in base or []]
    index: dict[Any, int] = {e.get(key): i for i, e in enumerate(out)}
    for e in overrides or []:
        k = e.get(key)
        if k in index:
            out[index[k]] = copy.deepcopy(e)
        else:
            index[k] = len(out)
            out.append(copy.deepcopy(e))
    return out
