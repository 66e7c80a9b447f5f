#!/usr/bin/env bash
# Instruction counts of a fixed routing workload (core/examples/route_workload.rs:
# the broker driven directly, no sockets, no clock) under valgrind's callgrind,
# compared with the baseline in bench/callgrind-baseline.txt.
#
#   scripts/callgrind.sh                   count, print, compare with the baseline
#   scripts/callgrind.sh --max-ratio 1.05  also fail if Ir per message grew by more than 5 %
#   scripts/callgrind.sh --update          write the result as the new baseline
#   scripts/callgrind.sh --annotate        also print the 25 costliest functions
#   scripts/callgrind.sh --shards 4        the same workload on 4 brokers joined as shards:
#                                          Ir per PUBLISH and per delivered copy, messages
#                                          crossing shards per PUBLISH; not compared with the
#                                          baseline (one shard) nor written to it
#
# Only the workload is counted (--toggle-collect on its function), not the
# setup. Counts are exact for one binary; they move with the compiler and
# the dependencies' versions, so compare like with like (the baseline says
# what it was built with). Needs valgrind (installed with apt-get if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

MAX_RATIO=""
UPDATE=0
ANNOTATE=0
SHARDS=1
while [ $# -gt 0 ]; do
  case "$1" in
    --max-ratio) MAX_RATIO="$2"; shift ;;
    --update) UPDATE=1 ;;
    --annotate) ANNOTATE=1 ;;
    --shards) SHARDS="$2"; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "callgrind.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

if [ "$SHARDS" != 1 ] && { [ $UPDATE = 1 ] || [ -n "$MAX_RATIO" ]; }; then
  echo "callgrind.sh: the baseline is for one shard: --update and --max-ratio do not go with --shards $SHARDS" >&2
  exit 2
fi

if ! command -v valgrind >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends valgrind >/dev/null
fi

BASELINE=bench/callgrind-baseline.txt
TARGET="${CARGO_TARGET_DIR:-target}"
cargo build --release --locked -p culex-core --example route_workload >&2
BIN="$TARGET/release/examples/route_workload"
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out" \
  --collect-atstart=no --toggle-collect='route_workload::workload*' \
  "$BIN" --shards "$SHARDS" > "$OUT/stdout" 2> "$OUT/stderr" || { cat "$OUT/stderr" >&2; exit 1; }
IR=$(sed -n 's/^==[0-9]*== Collected : \([0-9]*\)$/\1/p' "$OUT/stderr")
WORK=$(cat "$OUT/stdout")
[ -n "$IR" ] || { echo "callgrind.sh: no instruction count in valgrind's output" >&2; cat "$OUT/stderr" >&2; exit 1; }
PUBLISHES=$(echo "$WORK" | sed -n 's/.*publishes=\([0-9]*\).*/\1/p')
DELIVERIES=$(echo "$WORK" | sed -n 's/.*deliveries=\([0-9]*\).*/\1/p')
CROSSED=$(echo "$WORK" | sed -n 's/.*crossed=\([0-9]*\).*/\1/p')

python3 - "$IR" "$PUBLISHES" "$DELIVERIES" "$WORK" "$BASELINE" "$UPDATE" "$MAX_RATIO" "$CROSSED" <<'PY'
import subprocess, sys
ir, publishes, deliveries = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
work, baseline_path, update, max_ratio = sys.argv[4], sys.argv[5], sys.argv[6] == "1", sys.argv[7]
crossed = sys.argv[8]
per_msg, per_copy = ir / publishes, ir / deliveries
print(f"workload: {work}")
print(f"total Ir: {ir:,}")
print(f"Ir per PUBLISH: {per_msg:,.0f}   Ir per delivered copy: {per_copy:,.0f}")
if crossed:
    print(f"messages crossing shards per PUBLISH: {int(crossed) / publishes:.2f} (not compared with the baseline)")
    sys.exit(0)

def read(path):
    try:
        with open(path) as f:
            return dict(line.strip().split("=", 1) for line in f if "=" in line and not line.startswith("#"))
    except FileNotFoundError:
        return None

base = read(baseline_path)
if base is not None:
    if base.get("workload") != work:
        print(f"baseline workload differs ({base.get('workload')}): ratios are not comparable")
    ratio = per_msg / float(base["ir_per_publish"])
    print(f"baseline ({base.get('source', '?')}, {base.get('rustc', '?')}): "
          f"{float(base['ir_per_publish']):,.0f} Ir per PUBLISH; now/baseline = {ratio:.3f}")
    if max_ratio and ratio > float(max_ratio):
        print(f"callgrind.sh: Ir per PUBLISH grew {ratio:.3f}x, above {max_ratio}", file=sys.stderr)
        sys.exit(1)
if update:
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    source = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip()
    with open(baseline_path, "w") as f:
        f.write("# scripts/callgrind.sh --update: instruction counts of core/examples/route_workload.rs\n")
        f.write(f"workload={work}\nir_total={ir}\nir_per_publish={per_msg:.0f}\nir_per_delivery={per_copy:.0f}\n")
        f.write(f"rustc={rustc}\nsource={source}\n")
    print(f"baseline written to {baseline_path}")
PY

if [ $ANNOTATE = 1 ]; then
  callgrind_annotate --threshold=100 "$OUT/callgrind.out" 2>/dev/null | sed -n '/file:function/,$p' | head -27
fi
