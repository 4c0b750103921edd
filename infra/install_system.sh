#!/usr/bin/env bash
# Installs the Debian packages streamscore needs, only those missing. Idempotent; apt-get update runs at most once.
set -euo pipefail

declare -A need=(
  [java]=openjdk-17-jdk-headless
  [mvn]=maven
  [redis-server]=redis-server
  [chromium]=chromium
  [chromedriver]=chromium-driver
  [prometheus]=prometheus
  [promtool]=prometheus
  [valgrind]=valgrind
  [cmake]=cmake
  [g++]=g++
)
missing=()
for bin in "${!need[@]}"; do
  command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/bin/$bin" ] || missing+=("${need[$bin]}")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "[install] system packages present"
  exit 0
fi
pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "[install] missing: $pkgs" >&2
  echo "[install] install them with your package manager (Debian: sudo apt-get install $pkgs)" >&2
  exit 1
fi
echo "[install] apt-get install $pkgs"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
