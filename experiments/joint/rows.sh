# Sourced by structure_table.sh and directions_table.sh: rows "label|run" -> coupling_table.py
#   rows_table OUT_JSON COMMAND ROW...   (rows whose run has no eval/test/metrics.json are left out)
rows_table() {
  local out=$1 command=$2; shift 2
  local labels=() runs=() r run
  for r in "$@"; do
    run=${r#*|}
    [ -f "$run/eval/test/metrics.json" ] || continue
    labels+=("${r%%|*}"); runs+=("$run")
  done
  ${PY:-.venv/bin/python} experiments/joint/coupling_table.py "${runs[@]}" --json "$out" \
    --labels "${labels[@]}" --command "$command" --label-columns "${LABEL_COLUMNS:-set, sampling}" \
    --note "Bars of the issue: both ratios at most 1.5, coupled agree at least 0.97, mode TV − oracle at most 0.025, GED16 − oracle at most 0.01, within 0.8 at least 0.93, worst offsets at most 0.03."
  ${PY:-.venv/bin/python} scripts/docs_tables.py
}
