#!/usr/bin/env bash
# Build the local control plane from upstream Go modules:
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl  (k8s.io/kubernetes)
#   etcd                                                              (go.etcd.io/etcd/server/v3)
#   kwok                                                              (sigs.k8s.io/kwok)
#   helm (only when asked: `build-binaries.sh helm`)                  (helm.sh/helm/v4)
#   argo-lua (only when asked): Argo CD's Lua VM for manifests/argocd (hack/argo-lua)
#   argo-notify (only when asked): Argo CD's trigger expressions (hack/argo-notify)
#
# Each component lands in its own cache directory keyed by its version and the
# Go toolchain version, e.g. ~/.cache/pdm-operator/bin/kubernetes-v1.37.2-go1.26.8/,
# and is only rebuilt when that key changes. Prints the directories on stdout
# (one per line: NAME=DIR), progress on stderr.
#
# Why a wrapper module: upstream k8s.io/kubernetes points its ~30 staging
# modules (k8s.io/api, k8s.io/client-go, ...) at ./staging with replace
# directives, so `go install k8s.io/kubernetes/cmd/...@v` is refused and a
# dependent module sees the staging modules at v0.0.0. The wrapper requires
# k8s.io/kubernetes and replaces every staging module with its published
# v0.X.Y twin; the list is generated from the go.mod the proxy serves, so it
# follows upstream when the version changes. etcd's server module has relative
# replaces for the same reason.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

log() { printf '[build-binaries] %s\n' "$*" >&2; }
die() { printf '[build-binaries] error: %s\n' "$*" >&2; exit 1; }

command -v go >/dev/null 2>&1 || die "Go is not installed (need Go >= 1.24 on PATH to build the control plane)."
go_version=$(go env GOVERSION)
cache=${PDM_CACHE_DIR:-$HOME/.cache/pdm-operator}
bin_root="$cache/bin"
work_root="$cache/build"
mkdir -p "$bin_root" "$work_root"
# One build at a time per cache (tests and `make run` may start together).
exec 9>"$cache/build.lock"
if ! flock -n 9; then
  log "another build holds $cache/build.lock; waiting for it"
  flock 9
fi

export CGO_ENABLED=0 GOFLAGS=-mod=mod
jobs=${PDM_BUILD_JOBS:-2}

check_proxy() {
  local mod=$1
  if ! go list -m -json "$mod" >/dev/null 2>"$work_root/proxy-check.err"; then
    cat "$work_root/proxy-check.err" >&2
    die "cannot reach the Go module proxy for $mod (GOPROXY=$(go env GOPROXY)); the control plane is built from modules and needs it."
  fi
}

# go build with a progress line: packages compiled so far out of the total.
build_with_progress() {
  local label=$1 outdir=$2; shift 2
  local total
  total=$(go list -deps "$@" 2>/dev/null | wc -l || echo "?")
  log "$label: compiling ~$total packages with -p $jobs (first build only; cached afterwards)"
  local start=$SECONDS
  go build -p "$jobs" -v -trimpath -tags "${BUILD_TAGS:-}" -ldflags "${LDFLAGS:-}" -o "$outdir/" "$@" 2>&1 |
    awk -v label="$label" -v total="$total" -v start="$start" '
      # package paths have no spaces; anything else is a compiler message
      / / { print > "/dev/stderr"; next }
      { n++; if (n % 200 == 0) { printf "[build-binaries] %s: %d/%s packages\n", label, n, total > "/dev/stderr"; fflush("/dev/stderr") } }'
  local rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || die "$label: go build failed (exit $rc)"
  log "$label: done in $((SECONDS - start))s"
}

stamp_ok() { [ -f "$1/.complete" ]; }

# --- Kubernetes -------------------------------------------------------------
# The version the binaries report (upstream's hack/lib/version.sh sets the
# same keys); without it they say v0.0.0-master and version checks misfire.
k8s_ldflags() {
  local v=$1 major minor date ld="-s -w"
  major=$(echo "$v" | sed 's/^v\([0-9]*\)\..*/\1/')
  minor=$(echo "$v" | sed 's/^v[0-9]*\.\([0-9]*\)\..*/\1/')
  date=$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$(go mod download -json "k8s.io/kubernetes@$v" | sed -n 's/.*"Info": "\(.*\)".*/\1/p')")
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=${date:-1970-01-01T00:00:00Z}"
  done
  echo "$ld"
}

build_kubernetes() {
  local v=$KUBERNETES_VERSION
  local out="$bin_root/kubernetes-$v-$go_version"
  local kout="$bin_root/kubelet-$v-$go_version"
  if stamp_ok "$out"; then echo "KUBERNETES_BIN=$out"; return; fi
  # Asked for the kubelet too and it is not cached: one go build for all five,
  # so its link and its own packages overlap the control plane's.
  local with_kubelet=0 cmds=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
  if [ "${WITH_KUBELET:-0}" = 1 ] && ! stamp_ok "$kout"; then with_kubelet=1 cmds+=(kubelet); fi
  check_proxy "k8s.io/kubernetes@$v"
  local w="$work_root/kubernetes-$v"
  rm -rf "$w" && mkdir -p "$w"
  local upstream_mod staging_v
  upstream_mod=$(go mod download -json "k8s.io/kubernetes@$v" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  [ -f "$upstream_mod" ] || die "could not download the go.mod of k8s.io/kubernetes@$v"
  # v1.37.2 -> v0.37.2: the published tags of the staging modules.
  staging_v="v0.${v#v1.}"
  {
    echo "module pdm-operator.local/kubernetes-build"
    echo
    echo "go 1.24.0"
    echo
    echo "require k8s.io/kubernetes $v"
    echo
    # Every replace of upstream: staging paths become published versions,
    # anything else is carried over as it is.
    awk -v sv="$staging_v" '
      /^replace \(/ { inblock = 1; next }
      inblock && /^\)/ { inblock = 0; next }
      inblock && /=>/ {
        if ($3 ~ /^\.\/staging\//) printf "replace %s => %s %s\n", $1, $1, sv;
        else { sub(/^[ \t]+/, ""); print "replace " $0 }
      }
      /^replace [^(]/ { print }' "$upstream_mod"
    echo
    for c in "${cmds[@]}"; do
      echo "tool k8s.io/kubernetes/cmd/$c"
    done
  } >"$w/go.mod"
  log "kubernetes $v: wrapper module with $(grep -c '^replace' "$w/go.mod") replaces (from upstream go.mod); resolving modules"
  (cd "$w" && go mod tidy) || die "go mod tidy failed for the kubernetes wrapper module"
  local ld
  ld=$(k8s_ldflags "$v")
  mkdir -p "$out"
  (cd "$w" && LDFLAGS=$ld BUILD_TAGS=selinux,notest,grpcnotrace build_with_progress "kubernetes $v" "$out" \
    "${cmds[@]/#/k8s.io/kubernetes/cmd/}")
  "$out/kube-apiserver" --version >&2
  if [ "$with_kubelet" = 1 ]; then
    mkdir -p "$kout" && mv "$out/kubelet" "$kout/kubelet"
    "$kout/kubelet" --version >&2
    touch "$kout/.complete"
  fi
  touch "$out/.complete"
  echo "KUBERNETES_BIN=$out"
}

# --- kubelet (the real node) --------------------------------------------------
# Same wrapper module as the control plane (most packages are shared, so the
# build cache makes it a few minutes), its own cache directory, so a machine
# that only needs the control plane never pays for it.
build_kubelet() {
  local v=$KUBERNETES_VERSION
  local out="$bin_root/kubelet-$v-$go_version"
  if stamp_ok "$out"; then echo "KUBELET_BIN=$out"; return; fi
  local w="$work_root/kubernetes-$v"
  if [ ! -f "$w/go.mod" ]; then
    # The wrapper module is made by the control plane's build.
    rm -f "$bin_root/kubernetes-$v-$go_version/.complete"
    build_kubernetes >/dev/null
  fi
  grep -q 'cmd/kubelet' "$w/go.mod" || {
    echo "tool k8s.io/kubernetes/cmd/kubelet" >>"$w/go.mod"
    (cd "$w" && go mod tidy) || die "go mod tidy failed after adding the kubelet"
  }
  local ld
  ld=$(k8s_ldflags "$v")
  mkdir -p "$out"
  (cd "$w" && LDFLAGS=$ld BUILD_TAGS=selinux,notest,grpcnotrace build_with_progress "kubelet $v" "$out" \
    k8s.io/kubernetes/cmd/kubelet)
  "$out/kubelet" --version >&2
  touch "$out/.complete"
  echo "KUBELET_BIN=$out"
}

# --- etcd -------------------------------------------------------------------
build_etcd() {
  local v=$ETCD_VERSION
  local out="$bin_root/etcd-$v-$go_version"
  if stamp_ok "$out"; then echo "ETCD_BIN=$out"; return; fi
  check_proxy "go.etcd.io/etcd/server/v3@$v"
  local w="$work_root/etcd-$v"
  rm -rf "$w" && mkdir -p "$w"
  cat >"$w/go.mod" <<MOD
module pdm-operator.local/etcd-build

go 1.24.0

require go.etcd.io/etcd/server/v3 $v

tool go.etcd.io/etcd/server/v3
MOD
  log "etcd $v: resolving modules"
  (cd "$w" && go mod tidy) || die "go mod tidy failed for the etcd wrapper module"
  mkdir -p "$out"
  (cd "$w" && LDFLAGS="-s -w" BUILD_TAGS="" build_with_progress "etcd $v" "$out" go.etcd.io/etcd/server/v3)
  # go names the binary after the last path element that is not a major version suffix
  for b in v3 server; do [ -f "$out/$b" ] && mv "$out/$b" "$out/etcd"; done
  "$out/etcd" --version >&2
  touch "$out/.complete"
  echo "ETCD_BIN=$out"
}

# --- go install of an upstream command ----------------------------------------
# NAME VERSION MODULE COMMAND VERSION_VAR: `go install MODULE/COMMAND@VERSION`
# into its own cache directory, with VERSION_VAR (the variable upstream's
# release build sets) set to VERSION. Prints NAME_BIN=<dir>.
go_install_tool() {
  local name=$1 v=$2 module=$3 cmd=$4 version_var=$5
  local var out
  var="$(echo "$name" | tr '[:lower:]-' '[:upper:]_')_BIN"
  out="$bin_root/$name-$v-$go_version"
  if stamp_ok "$out"; then echo "$var=$out"; return; fi
  check_proxy "$module@$v"
  mkdir -p "$out"
  log "$name $v: go install"
  local start=$SECONDS
  GOBIN="$out" go install -p "$jobs" -trimpath -ldflags "-s -w -X $version_var=$v" \
    "$module/$cmd@$v" || die "go install $module/$cmd@$v failed"
  log "$name $v: done in $((SECONDS - start))s"
  touch "$out/.complete"
  echo "$var=$out"
}

# --- kwok -------------------------------------------------------------------
build_kwok() {
  go_install_tool kwok "$KWOK_VERSION" sigs.k8s.io/kwok cmd/kwok sigs.k8s.io/kwok/pkg/consts.Version
}

# --- helm -------------------------------------------------------------------
# The chart's tests (lint, template, install/upgrade/uninstall) use the helm
# CLI; like kwok it is a plain `go install` of the upstream module, with the
# version variable upstream's Makefile sets.
build_helm() {
  go_install_tool helm "$HELM_VERSION" helm.sh/helm/v4 cmd/helm helm.sh/helm/v4/internal/version.version
}

# --- argo-lua ---------------------------------------------------------------
# The interpreter Argo CD runs resource customizations in (gopher-lua, set up
# as Argo CD sets it up); built from hack/argo-lua, keyed by its source.
build_argo_lua() {
  local src="$here/argo-lua" key
  key=$(cat "$src/main.go" "$src/go.mod" "$src/go.sum" | sha256sum | cut -c1-12)
  local out="$bin_root/argo-lua-$key-$go_version"
  if stamp_ok "$out"; then echo "ARGO_LUA_BIN=$out"; return; fi
  mkdir -p "$out"
  log "argo-lua: go build"
  (cd "$src" && go build -trimpath -ldflags "-s -w" -o "$out/argo-lua" .) || die "go build of hack/argo-lua failed"
  touch "$out/.complete"
  echo "ARGO_LUA_BIN=$out"
}

# --- argo-notify ------------------------------------------------------------
# Argo CD's notification trigger expressions (antonmedv/expr and expr-lang/expr,
# as the notifications engine runs them) and Go templates; built from
# hack/argo-notify, keyed by its source.
build_argo_notify() {
  local src="$here/argo-notify" key
  key=$(cat "$src/main.go" "$src/go.mod" "$src/go.sum" | sha256sum | cut -c1-12)
  local out="$bin_root/argo-notify-$key-$go_version"
  if stamp_ok "$out"; then echo "ARGO_NOTIFY_BIN=$out"; return; fi
  mkdir -p "$out"
  log "argo-notify: go build"
  (cd "$src" && go build -trimpath -ldflags "-s -w" -o "$out/argo-notify" .) || die "go build of hack/argo-notify failed"
  touch "$out/.complete"
  echo "ARGO_NOTIFY_BIN=$out"
}

# One or more of: all (the control plane), kubernetes, kubelet, etcd, kwok, helm, argo-lua, argo-notify.
case " $* " in *" kubelet "*) export WITH_KUBELET=1 ;; esac
for what in "${@:-all}"; do
  case "$what" in
    all) build_etcd; build_kwok; build_kubernetes ;;
    kubernetes) build_kubernetes ;;
    kubelet) build_kubelet ;;
    etcd) build_etcd ;;
    kwok) build_kwok ;;
    helm) build_helm ;;
    argo-lua) build_argo_lua ;;
    argo-notify) build_argo_notify ;;
    *) die "unknown component: $what (all|kubernetes|kubelet|etcd|kwok|helm|argo-lua|argo-notify)" ;;
  esac
done
