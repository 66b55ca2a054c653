#!/usr/bin/env bash
# Builds the slim OpenTelemetry Collector (collector/otelcol-llmcost) when no build of the current
# sources exists. No registry here serves a Collector binary, so CI builds one from the official Go
# modules; the build takes minutes, hence the cache:
#   key    = hash of go.mod, go.sum, main.go and `go version`
#   binary = ~/.cache/otel-llmcost/otelcol-llmcost-<key>
#   link   = ~/.cache/otel-llmcost/otelcol-llmcost -> the build of the current sources
# (otel_llmcost.testing.processes.collector_binary() runs the link; OTEL_LLMCOST_COLLECTOR_BIN wins.)
# Go's module and build caches are reused, so a rebuild after a small change is quick.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
src="$here/otelcol-llmcost"
cache="${OTEL_LLMCOST_CACHE_DIR:-$HOME/.cache/otel-llmcost}"

if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
  PATH="/usr/local/go/bin:$PATH"
fi
if ! command -v go >/dev/null 2>&1; then
  echo "build.sh: Go is not installed; the Collector is built from source (go.mod asks for Go $(sed -n 's/^go //p' "$src/go.mod")). Install Go from https://go.dev/dl/ or set OTEL_LLMCOST_COLLECTOR_BIN to a built otelcol-llmcost." >&2
  exit 1
fi

key="$({ cat "$src/go.mod" "$src/go.sum" "$src/main.go"; go version; } | sha256sum | cut -c1-16)"
name="otelcol-llmcost-$key"
bin="$cache/$name"
link="$cache/otelcol-llmcost"
mkdir -p "$cache"

# One build at a time per machine: a second caller waits, then finds the binary made.
exec 9>"$cache/.build.lock"
flock 9

if [ -x "$bin" ]; then
  echo "collector: $bin is up to date (key $key)"
else
  echo "collector: building $name with $(go version | cut -d' ' -f3) (the first build takes several minutes)"
  start=$SECONDS
  (cd "$src" && go mod download && echo "collector: modules ready, compiling" \
    && go build -trimpath -ldflags='-s -w' -o "$bin.tmp" .)
  mv -f "$bin.tmp" "$bin"
  echo "collector: built in $((SECONDS - start)) s"
  # Older builds are no longer linked; keep the disk use to one binary.
  find "$cache" -maxdepth 1 -name 'otelcol-llmcost-*' ! -name "$name" -type f -delete
fi
ln -sfn "$name" "$link"
"$link" --version
