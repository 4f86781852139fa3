# pdm-operator image: the package and its pinned dependencies in a virtual
# environment, on a slim Python base, run as a non-root user.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# The pinned dependencies first: a layer that a change of the code reuses.
COPY requirements/runtime.lock requirements/runtime.lock
COPY hack/install.sh hack/install.sh
RUN sh hack/install.sh /opt/pdm-operator deps
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN sh hack/install.sh /opt/pdm-operator package

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="pdm-operator" \
      org.opencontainers.image.description="GitLab post-deployment migrations as Kubernetes Jobs"
COPY --from=build /opt/pdm-operator /opt/pdm-operator
ENV PATH=/opt/pdm-operator/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# A numeric user, so runAsNonRoot can verify it without /etc/passwd.
USER 65532:65532
EXPOSE 8080 9180
ENTRYPOINT ["pdm-operator", "run"]
