# Shared by the scripts in Scripts/: find the repository, install missing system packages.
# shellcheck shell=bash

repo_root() { cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd; }

# Installs Debian packages that are missing; uses sudo when not root.
ensure_packages() {
    local missing=()
    local package
    for package in "$@"; do
        dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "installing ${missing[*]} with apt-get" >&2
    $sudo apt-get install -y "${missing[@]}" >/dev/null 2>&1 || {
        $sudo apt-get update >/dev/null
        $sudo apt-get install -y "${missing[@]}" >/dev/null
    }
}

# What building RingLog needs beyond the Swift toolchain.
ensure_build_dependencies() {
    ensure_packages liburing-dev pkg-config
}
