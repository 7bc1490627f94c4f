#!/bin/sh
# alive.sh READY_FILE MAX_AGE_S: the liveness of a processing loop (the bridge, the consumer).
# Alive while READY_FILE.waiting exists (an outage is being waited out, however long: not stuck), or while
# READY_FILE was written within MAX_AGE_S seconds (the loop rewrites it as it polls). Anything else, e.g. a
# loop that has not polled for longer than Kafka keeps a silent member in its group, is stuck.
set -eu
ready=$1
max_age_s=$2
if [ -e "$ready.waiting" ]; then
  exit 0
fi
if [ ! -e "$ready" ]; then
  echo "$ready does not exist: the loop has not polled yet" >&2
  exit 1
fi
age_s=$(( $(date +%s) - $(stat -c %Y "$ready") ))
if [ "$age_s" -ge "$max_age_s" ]; then
  echo "$ready was last written ${age_s} s ago (limit ${max_age_s} s): the loop is stuck" >&2
  exit 1
fi
