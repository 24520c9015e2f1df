#!/usr/bin/env bash
# Starts one Celery worker process per GPU visible to the container, each pinned to its GPU through
# CUDA_VISIBLE_DEVICES and taking one task at a time from the gpu queue. Exits when any of them
# exits (compose's restart policy then restarts the container), and passes SIGTERM/SIGINT on so every
# process gets Celery's warm shutdown.
#
#   SVP_WORKER_PROCESSES  processes to start (default: the number of GPUs, or 1 without a GPU)
#   SVP_GPU_QUEUE         queue to consume (default: gpu)
#   SVP_LOG_LEVEL         Celery's log level (default: INFO)
#   Extra arguments are passed to every `celery worker`.
set -euo pipefail

queue="${SVP_GPU_QUEUE:-gpu}"
level="${SVP_LOG_LEVEL:-INFO}"

count_gpus() {
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true
  else
    python -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0
  fi
}

# solo pool: the task runs in the worker process itself, so a signal reaches the training loop.
celery_worker=(celery -A worker.celery_app worker -Q "$queue" --concurrency 1 --pool solo
               --prefetch-multiplier 1 --without-gossip --loglevel "$level")

gpus="$(count_gpus)"
gpus="${gpus:-0}"
n="${SVP_WORKER_PROCESSES:-$gpus}"
[ "$n" -ge 1 ] 2>/dev/null || n=1

if [ "$n" -eq 1 ]; then
  # One process: replace the shell, so the process manager signals Celery directly.
  exec "${celery_worker[@]}" -n "gpu0@%h" "$@"
fi

# Device ids to hand out: those the container was given, else 0..gpus-1.
devices=()
if [ -n "${CUDA_VISIBLE_DEVICES:-}" ] && [ "${CUDA_VISIBLE_DEVICES}" != "all" ]; then
  IFS=',' read -r -a devices <<< "${CUDA_VISIBLE_DEVICES}"
fi
if [ "${#devices[@]}" -eq 0 ]; then
  for ((i = 0; i < (gpus > 0 ? gpus : n); i++)); do devices+=("$i"); done
fi

pids=()
stop_all() {
  trap - TERM INT
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
trap 'stop_all; exit 0' TERM INT

for ((i = 0; i < n; i++)); do
  device="${devices[$((i % ${#devices[@]}))]}"
  CUDA_VISIBLE_DEVICES="$device" "${celery_worker[@]}" -n "gpu${i}@%h" "$@" &
  pids+=("$!")
  echo "svp-worker: started gpu${i} (pid $!) on CUDA device ${device}"
done

# Any worker ending ends the container: a half-staffed container would hide a broken GPU.
set +e
wait -n "${pids[@]}"
status=$?
echo "svp-worker: a worker exited with status ${status}; stopping the others" >&2
stop_all
exit "$status"
