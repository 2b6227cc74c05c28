#!/bin/bash
#MSUB -N scb-chip-7-a1
#MSUB -l nodes=1:ppn=24,walltime=2:00:00
#MSUB -j oe
#MSUB -o /perm/runs/chip.7.a1/job.out
# scbundle remote_id 7 stage chip attempt 1: 9 components on 3 ranks
# ---- scbundle job body: pre phase, multi-prog steps, summary, exit marker ----
set -u
RUN=/perm/runs/chip.7.a1
TOOLS=/perm/tools/x
PY=python3
# The tool bootstrap (remote/sc_boot.py) and the digests of this installation's tools, as
# prepare knew them: every tool is verified here, at the job's start, before anything runs.
SCB_BOOT='<the bootstrap>'
SCB_DIGESTS='sc_runner.py=<sha256>'
cd "$RUN" || exit 2
rm -f job.exit summary.json
trap 'rc=$?; echo "$rc" > "$RUN/job.exit.tmp" && mv -f "$RUN/job.exit.tmp" "$RUN/job.exit"' EXIT
"$PY" -S -c "$SCB_BOOT" "$TOOLS" "$SCB_DIGESTS" --dir "$RUN" --check >/dev/null || {
  echo "scbundle job "scb-chip-7-a1": the tools or the run directory failed verification (above): nothing was run" >&2; exit 3; }
# The runner starts no component in the last minutes of the walltime and stops one that
# would run past it, so a rank that runs out of time leaves its unfinished work marked.
export SCB_JOB_START=$(date +%s.%N)
export SCB_DEADLINE=$(( ${SCB_JOB_START%.*} + 7200 ))
echo scbundle job scb-chip-7-a1 remote_id 7 starts "$(date -u +%Y-%m-%dT%H:%M:%SZ)" on "$(hostname)"
"$PY" -S -c "$SCB_BOOT" "$TOOLS" "$SCB_DIGESTS" --dir "$RUN" sc_runner.py pre "$RUN" || exit $?
# 1 multi-prog step(s), concurrent, each on its own nodes of the
# allocation (-N/--relative) and only its own CPUs (--exact: 22.05 runs steps one after
# another without it).
pids=()
srun -N 1 --relative=0 -n 3 -c 2 --exact -l --multi-prog multiprog/part-000.conf &
pids+=($!)
rc=0
for pid in "${pids[@]}"; do wait "$pid" || rc=$?; done
"$PY" -S -c "$SCB_BOOT" "$TOOLS" "$SCB_DIGESTS" --dir "$RUN" sc_runner.py summarize "$RUN" || rc=$?
echo scbundle job scb-chip-7-a1 ends "$(date -u +%Y-%m-%dT%H:%M:%SZ)" rc=$rc
exit $rc

