#!/usr/bin/env bash
# Installs what the test suite and the benchmarks need on a fresh Debian machine that has only the
# Rust toolchain. Idempotent: a package is installed only when one of its commands is missing,
# `apt-get update` runs at most once per call, and a machine that has everything hears nothing and
# waits for nothing.
#
#   prometheus, promtool — `make check-deploy` validates deploy/prometheus/ with promtool, and the
#                          metrics integration test scrapes a real all-in-one with prometheus.
#   redis-server         — the Redis adapters' tests run against a real server (kyufu-testservers).
#   chromium, node, npm  — the browser test of the citizen pages (crates/kyufu/tests/browser.rs)
#                          drives Debian's Chromium with playwright-core (npm ci in e2e/).
#   clamd                — the virus-scan test of intake starts its own clamd with a local test
#                          signature database (no freshclam, no network); the package's postinst
#                          may try to start a service, which fails harmlessly without systemd.
#   fonts-noto-cjk       — Japanese glyphs for the browser tests' screenshots (without a CJK font
#                          Chromium draws boxes); installed when `fc-list :lang=ja` finds none.
#   curl                 — `make bench` reads the system's /metrics.
#   wrk                  — `make bench-gateway` loads the gateway and a bare hyper server with it
#                          from outside the measured process.
#   jq, redis-cli        — `make bench-topology` reads the load tester's summary.json and Redis's
#                          INFO commandstats.
#   s3s-fs               — the S3 adapter's tests run against it (a Rust crate, installed with
#                          cargo into ~/.cargo/bin; compiles for a few minutes, once).
#   openssl              — the SMTP TLS test makes a test CA and a server certificate with it.
#   ip (iproute2)        — the gateway's forwarded-address test makes a network namespace and a
#                          veth pair (as root).
#   kubernetes-validate  — crates/kyufu/tests/deploy.rs validates deploy/k8s against the Kubernetes
#                          schemas; from PyPI (pinned) into a venv in ~/.cache/kyufu, once.
#   java, mvn            — the Kafka tests start real Apache Kafka brokers (KRaft) from jars that
#                          scripts/install-kafka.sh fetches from Maven Central into ~/.cache/kyufu
#                          (pinned version, once).
set -euo pipefail

if ! command -v s3s-fs >/dev/null 2>&1 && [[ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs" ]]; then
  echo "install-deps: compiling s3s-fs 0.14.1 (the S3 test server; a few minutes, once)"
  cargo install s3s-fs@0.14.1 --locked --features binary -j2 --quiet
fi

# command -> Debian package that provides it
declare -A PROVIDER=(
  [prometheus]=prometheus
  [promtool]=prometheus
  [redis-server]=redis-server
  [chromium]=chromium
  [node]=nodejs
  [npm]=npm
  [clamd]=clamav-daemon
  [curl]=curl
  [jq]=jq
  [redis-cli]=redis-tools
  [java]=default-jre-headless
  [mvn]=maven
  [wrk]=wrk
  [ip]=iproute2
  [openssl]=openssl
  [python3]=python3-venv
)

e2e_modules() {
  local root
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  if [[ ! -d "$root/e2e/node_modules/playwright-core" ]] && command -v npm >/dev/null 2>&1; then
    echo "install-deps: npm ci in e2e/ (playwright-core)"
    (cd "$root/e2e" && npm ci --no-audit --no-fund --silent)
  fi
}

# Debian packages for the commands that are missing.
install_packages() {
  missing=()
  for cmd in "${!PROVIDER[@]}"; do
    if ! command -v "$cmd" >/dev/null 2>&1; then
      pkg=${PROVIDER[$cmd]}
      [[ " ${missing[*]} " == *" $pkg "* ]] || missing+=("$pkg")
    fi
  done
  if ! fc-list :lang=ja 2>/dev/null | grep -q .; then
    missing+=(fonts-noto-cjk)
  fi
  ((${#missing[@]} == 0)) && return 0

  if ((EUID == 0)); then
    as_root=()
  elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
  else
    echo "install-deps: need root (or sudo) to install: ${missing[*]}" >&2
    return 1
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-deps: no apt-get here; install these yourself: ${missing[*]}" >&2
    return 1
  fi

  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${as_root[@]}" apt-get update -qq
  # No recommends: prometheus would pull in node-exporter, which the tests do not use.
  "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

  for cmd in "${!PROVIDER[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || { echo "install-deps: $cmd still missing after install" >&2; return 1; }
  done
  echo "install-deps: done"
}

# kubernetes-validate (PyPI, with the schemas inside) in its own venv.
KUBERNETES_VALIDATE_VERSION=1.37.0
kubernetes_validate() {
  local venv="$HOME/.cache/kyufu/kubernetes-validate-$KUBERNETES_VALIDATE_VERSION"
  [[ -x "$venv/bin/kubernetes-validate" ]] && return 0
  echo "install-deps: kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
}

install_packages
e2e_modules
kubernetes_validate
bash "$(dirname "${BASH_SOURCE[0]}")/install-kafka.sh"
