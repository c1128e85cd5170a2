#!/usr/bin/env bash
# Builds the images the container end-to-end suite uses, by hand: static
# binaries of capstan and the test operator, each alone in a FROM scratch
# image (nothing is pulled).
#
#   hack/e2e-images/build.sh [TAG]     # default tag: dev
#
# Then, for example:
#   docker network create capstan-e2e
#   docker run -d --name store --network capstan-e2e --network-alias store \
#     --sysctl net.ipv6.conf.lo.disable_ipv6=0 --sysctl net.ipv6.conf.all.disable_ipv6=0 \
#     capstan-e2e-store:dev run --listen 0.0.0.0:27017 --data-dir /data \
#     --metrics-bind-address 0 --health-probe-bind-address 0
#   docker run -d --network capstan-e2e capstan-e2e-operator:dev \
#     --mongo-uri 'mongodb://store:27017/?directConnection=true' --replica r1 --modes leader
set -euo pipefail
cd "$(dirname "$0")/../.."
tag=${1:-dev}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

build() { # name package repo
  mkdir -p "$work/$1"
  CGO_ENABLED=0 go build -o "$work/$1/$1" "$2"
  printf 'FROM scratch\nCOPY %s /%s\nENTRYPOINT ["/%s"]\n' "$1" "$1" "$1" >"$work/$1/Dockerfile"
  docker build -q -t "$3:$tag" "$work/$1"
  echo "built $3:$tag"
}
build capstan ./cmd/capstan capstan-e2e-store
build operator ./test/e2e/operator capstan-e2e-operator
