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

# The Kafka clients that Tests/Kafka runs against ringlogd's Kafka listener: kcat and librdkafka
# from Debian, and in a virtualenv of their own (never the system's Python) kafka-python,
# confluent-kafka (which carries its own librdkafka) and the codecs kafka-python compresses with
# (python-snappy is a wrapper over cramjam, so no libsnappy). Pinned; the venv is
# $RINGLOG_KAFKA_VENV, else ~/.cache/ringlog-kafka-venv, made with ${RINGLOG_KAFKA_PYTHON:-python3}.
# Installs only what is missing or at another version; prints the venv's python.
kafka_python_requirements=(
    kafka-python==3.0.12
    confluent-kafka==2.16.1
    lz4==4.4.5
    zstandard==0.25.0
    cramjam==2.14.0
    python-snappy==0.7.3
)
ensure_kafka_clients() {
    ensure_packages kcat librdkafka-dev python3-venv
    local venv="${RINGLOG_KAFKA_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/ringlog-kafka-venv}"
    local python="$venv/bin/python"
    if ! "$python" -c 'import sys' >/dev/null 2>&1; then
        echo "creating the Kafka client venv $venv" >&2
        rm -rf "$venv"
        mkdir -p "$(dirname "$venv")"
        "${RINGLOG_KAFKA_PYTHON:-python3}" -m venv "$venv" >&2
    fi
    local missing
    missing=$("$python" - "${kafka_python_requirements[@]}" <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version
for requirement in sys.argv[1:]:
    name, wanted = requirement.split("==")
    try:
        installed = version(name)
    except PackageNotFoundError:
        installed = None
    if installed != wanted:
        print(requirement)
PY
)
    if [ -n "$missing" ]; then
        echo "installing $(echo "$missing" | tr '\n' ' ')into $venv with pip" >&2
        # shellcheck disable=SC2086
        "$python" -m pip install --quiet --disable-pip-version-check $missing >&2
    fi
    echo "$python"
}
