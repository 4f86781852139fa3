#!/usr/bin/env bash
# On a machine WITH Docker (a laptop): create a kind cluster, build and load
# the image, install the manifests, run the integration suite against it.
# This cannot run where there is no Docker engine (the project's CI machines),
# so it has not been run by the project's CI; there the same suite runs
# against the local control plane instead. Needs internet (kwok's manifests).
#
#   hack/kind-e2e.sh            # cluster "pdm", kept afterwards
#   KIND_CLUSTER=x hack/kind-e2e.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cluster=${KIND_CLUSTER:-pdm}
image=pdm-operator:dev
# go: the chart's tests and the Argo CD scripts' tests build helm and Argo
# CD's Lua interpreter from Go modules (hack/build-binaries.sh helm argo-lua).
for tool in docker kind kubectl go; do
  command -v "$tool" >/dev/null || { echo "kind-e2e: '$tool' is needed on PATH" >&2; exit 1; }
done
kind get clusters | grep -qx "$cluster" || kind create cluster --name "$cluster"
kubeconfig=$(mktemp)
kind get kubeconfig --name "$cluster" >"$kubeconfig"
export KUBECONFIG=$kubeconfig
docker build -t "$image" .
kind load docker-image "$image" --name "$cluster"
# Install as a platform engineer would, with the freshly built image.
overlay=$(mktemp -d)
cat >"$overlay/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [$(pwd)/manifests/overlays/cluster-wide]
images: [{name: registry.example.com/pdm-operator, newName: pdm-operator, newTag: dev}]
YAML
kubectl apply --server-side -k "$overlay"
kubectl -n pdm-operator rollout status deployment/pdm-operator --timeout=180s
# The suite starts its own operator processes per test; scale the installed
# one down so two operators never act on the same namespaces.
kubectl -n pdm-operator scale deployment/pdm-operator --replicas=0
# The suite steers migration pods with annotations (hack/kwok/stages.yaml):
# run kwok in the cluster with those Stages and one fake node, and keep test
# pods off the real node.
kwok_version=$(sed -n 's/^KWOK_VERSION=//p' hack/versions.env)
kubectl apply -f "https://github.com/kubernetes-sigs/kwok/releases/download/${kwok_version}/kwok.yaml"
kubectl apply -f hack/kwok/stages.yaml
kubectl apply -f - <<YAML
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-0
  annotations: {kwok.x-k8s.io/node: fake}
  labels: {type: kwok, kubernetes.io/hostname: kwok-node-0, kubernetes.io/os: linux}
YAML
kubectl taint nodes -l '!type' pdm-tests=off:NoSchedule --overwrite
make integration PDM_TEST_KUBECONFIG="$kubeconfig"
