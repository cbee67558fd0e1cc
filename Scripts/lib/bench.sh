# Shared by the benchmark scripts: a scratch directory, a release ringlogd on loopback started and
# stopped by PID, JSON field extraction and medians. Source after common.sh, from the repo root.
# shellcheck shell=bash

ringlog_port=${RINGLOG_BENCH_PORT:-7502}
ringlog_pid=""
bench_scratch=""
bench_cleanups=()

# The options every benchmark script takes: --duration SECONDS (default 10), --runs N (default 3)
# and --only NAME[,NAME...]; sets duration, runs and only.
parse_bench_options() {
    duration=10
    runs=3
    only=""
    while [ $# -gt 0 ]; do
        case "$1" in
            --duration) duration="$2"; shift 2 ;;
            --runs) runs="$2"; shift 2 ;;
            --only) only=",$2,"; shift 2 ;;
            *) echo "unknown option $1" >&2; exit 64 ;;
        esac
    done
}

# Whether the scenario named $1 is to run (all of them without --only).
selected() { [ -z "$only" ] || [[ "$only" == *",$1,"* ]]; }

bench_setup() { # name
    ensure_build_dependencies
    command -v python3 >/dev/null || ensure_packages python3
    swift build -c release --product ringlogd >&2
    swift build -c release --product ringlog >&2
    bench_scratch=$(mktemp -d "/tmp/ringlog-$1-XXXXXX")
    trap bench_cleanup EXIT
}

bench_cleanup() {
    local hook
    for hook in "${bench_cleanups[@]}"; do "$hook"; done
    [ -n "$ringlog_pid" ] && kill "$ringlog_pid" 2>/dev/null && wait "$ringlog_pid" 2>/dev/null
    rm -rf "$bench_scratch"
}

start_ringlog() { # extra ringlogd arguments...
    rm -rf "$bench_scratch/ringlog"
    .build/release/ringlogd --data-dir "$bench_scratch/ringlog" --listen "127.0.0.1:$ringlog_port" --log-level warning "$@" \
        >"$bench_scratch/ringlogd.out" 2>"$bench_scratch/ringlogd.err" &
    ringlog_pid=$!
    for _ in $(seq 100); do grep -q listening "$bench_scratch/ringlogd.out" 2>/dev/null && return; sleep 0.1; done
    echo "ringlogd did not start" >&2; cat "$bench_scratch/ringlogd.err" >&2; exit 1
}

stop_ringlog() { kill "$ringlog_pid"; wait "$ringlog_pid" 2>/dev/null || true; ringlog_pid=""; }

ringlog_bench() { # workload args... (server, pid, json and quiet are added)
    local workload=$1; shift
    .build/release/ringlog bench "$workload" --server "127.0.0.1:$ringlog_port" --server-pid "$ringlog_pid" --json --quiet "$@"
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# Prints the named fields of a bench JSON summary, space separated. A field is a dotted path
# (latencyMicros.p50); a missing one prints 0.
json_fields() { # json field...
    python3 -c 'import json, sys
s = json.loads(sys.argv[1])
def get(path):
    v = s
    for k in path.split("."):
        if not isinstance(v, dict) or k not in v: return 0
        v = v[k]
    return v
print(" ".join(str(get(p)) for p in sys.argv[2:]))' "$@"
}

# Median of the numbers given as arguments (the lower middle one for an even count).
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
