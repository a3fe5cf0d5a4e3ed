#!/usr/bin/env bash
# Speed and learning checks of dqn_atari_fast.py (and the teaching pair) on a machine with an NVIDIA GPU. From the repository root:
#
#   bash benchmarks/gpu_session.sh PHASE
#
#   setup     # once: requirements.txt into this Python (install the CUDA build of torch first, see README;
#             #   pip keeps it), and the venv of benchmarks/peers.py (CleanRL 1.2.0, SB3) in ~/.cache/dqn-peers
#   speed     # ~8 min: train SPS of --num-envs 1 (eager and --compile) and of the fast path (--env-backend
#             #   ale-vector --compile, 16 and 32 games) with benchmarks/speed.py, then CleanRL 1.2.0's
#             #   dqn_atari.py beside ours (--num-envs 1) with benchmarks/peers.py; a 1M replay memory,
#             #   learning after 20k steps, each setting for SECONDS_EACH (default 45) seconds
#   pong      # ~9 min: the fast path on Pong for MINUTES (default 7.5), then 10 evaluation games
#   learn     # starts the learning runs in the background (setsid) and returns at once
#   stop      # stops them as Ctrl-C does (models saved), then evaluates each
#   collect   # logs, TensorBoard events, models and evaluation videos into $OUT
#
# Results go to $OUT (default /tmp/dqn-gpu). WHEELS=/path: pip installs from that folder of wheels instead
# of the package index (--no-index --find-links), for a machine without one; fill it elsewhere with
# `pip download -d /path -r requirements.txt -r benchmarks/requirements-peers.txt` and
# `pip download -d /path --no-deps --ignore-requires-python cleanrl==1.2.0 rl_zoo3==2.9.2` (the same Python
# version and platform as the GPU machine). PEERS=cleanrl,sb3 adds SB3 to the comparison in `speed`.
#
# `learn` runs each entry of RUNS ("script:seed:num_envs", default: DQN and Double DQN, seeds 1 and 2,
# one game each) on ENV_ID with the extra FLAGS, for STEPS steps (default 10M, the full run: about 5 h at
# --num-envs 1 on an H200). The TensorBoard events are written as the runs go, so `collect` works at any
# time; `stop` ends them early with their models saved and evaluated. E.g. the fast path on Pong:
#   RUNS=dqn_atari:1:16 ENV_ID=PongNoFrameskip-v4 FLAGS="--env-backend ale-vector --compile" bash benchmarks/gpu_session.sh learn
# SCALE=small shrinks every phase to a few minutes' check of this script on a CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/dqn-gpu}
mkdir -p "$out" runs
small=$([ "${SCALE:-}" = small ] && echo 1 || echo 0)

case "${1:-}" in
setup)
    index=${WHEELS:+--no-index --find-links $WHEELS}
    # shellcheck disable=SC2086  # $index is a list of flags
    python -m pip install $index -r requirements.txt
    python benchmarks/peers.py --setup-only  # reads WHEELS too
    ;;
speed)
    { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
      python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"; } | tee "$out/device.txt"
    secs=${SECONDS_EACH:-45}
    IFS=';' read -r -a runs <<<"${SPEED_RUNS:---num-envs 1;--num-envs 1 --compile;--num-envs 16 --env-backend ale-vector --compile;--num-envs 32 --env-backend ale-vector --compile}"
    for flags in "${runs[@]}"; do
        # shellcheck disable=SC2086  # $flags is a list of flags
        if [ "$small" = 1 ]; then
            python benchmarks/speed.py --script dqn_atari_fast.py --total-timesteps 1500 --learning-starts 500 --buffer-size 5000 -- $flags
        else  # full replay memory, learning after 20k steps, each setting for $secs s from its start
            python benchmarks/speed.py --script dqn_atari_fast.py --total-timesteps 10000000 --learning-starts 20000 --buffer-size 1000000 --seconds "$secs" -- $flags
        fi
    done 2>&1 | grep -E '^\| |^error' | tee -a "$out/speed.md"
    # CleanRL 1.2.0 (and SB3 with PEERS=cleanrl,sb3) beside ours, one game each, timed the same way
    if [ "$small" = 1 ]; then
        size="--total-timesteps 1500 --learning-starts 500 --buffer-size 5000"
    else
        size="--total-timesteps 10000000 --learning-starts 20000 --buffer-size 1000000 --seconds $secs"
    fi
    # shellcheck disable=SC2086  # $size is a list of flags
    python benchmarks/peers.py --peers "${PEERS:-cleanrl}" --repeats 1 $size 2>&1 | tee "$out/peers.md"
    ;;
pong)
    # the fast path's learning check in one command: Pong for MINUTES (default 7.5) of training, stopped as
    # Ctrl-C does (the model is saved), then a 10-game evaluation; TensorBoard events and logs into $OUT
    minutes=$([ "$small" = 1 ] && echo 1 || echo "${MINUTES:-7.5}")
    flags=$([ "$small" = 1 ] && echo "--learning-starts 1000 --buffer-size 10000 --num-envs 2" || echo "--num-envs 16")
    # shellcheck disable=SC2086  # $flags and $FLAGS are lists of flags
    timeout -s TERM "${minutes}m" python dqn_atari_fast.py --env-id PongNoFrameskip-v4 --seed 1 --total-timesteps 10000000 \
        --checkpoint-frequency 0 $flags ${FLAGS:---env-backend ale-vector --compile} 2>&1 | tee "$out/pong.log" | grep -v '^global_step' || true
    model=$(ls -t runs/PongNoFrameskip-v4__dqn_atari_fast__1__*/dqn_atari_fast.pt | head -n 1)
    python dqn_atari_fast.py --eval-only "$model" --seed 1 --eval-episodes "$([ "$small" = 1 ] && echo 1 || echo 10)" 2>&1 | tee -a "$out/pong.log"
    mkdir -p "$out/pong" && cp "$(dirname "$model")"/events.out.tfevents.* "$model" "$out/pong/"
    ;;
learn)
    steps=$([ "$small" = 1 ] && echo 3000 || echo "${STEPS:-10000000}")
    for run in ${RUNS:-dqn_atari:1:1 dqn_atari:2:1 ddqn_atari:1:1 ddqn_atari:2:1}; do
        IFS=: read -r script seed num_envs <<<"$run"
        log="runs/${ENV_ID:-SpaceInvadersNoFrameskip-v4}-$script-$seed-$num_envs.log"
        extra=$([ "$small" = 1 ] && echo "--learning-starts 1000 --buffer-size 10000 --eval-episodes 1" || echo "")
        # shellcheck disable=SC2086  # $extra is a list of flags
        setsid nohup python "$script.py" --env-id "${ENV_ID:-SpaceInvadersNoFrameskip-v4}" --seed "$seed" \
            $([ "$script" = dqn_atari_fast ] && echo --num-envs "$num_envs") --total-timesteps "$steps" --save-model --checkpoint-frequency 0 $extra ${FLAGS:-} >"$log" 2>&1 </dev/null &
        echo $! >>runs/pids
        echo "started $script seed $seed --num-envs $num_envs: $log"
    done
    ;;
stop)
    pids=$(cat runs/pids)
    kill -TERM $pids 2>/dev/null || true  # as Ctrl-C: each run stops after its step and saves its model
    while kill -0 $pids 2>/dev/null; do sleep 2; done
    video=$(python -c "import moviepy" 2>/dev/null && echo --capture-video || echo "")  # moviepy may be missing there
    for model in runs/*/*_atari.pt; do  # the same games as the evaluation at the end of a finished run
        script=$(basename "$model" .pt)
        seed=$(basename "$(dirname "$model")" | awk -F__ '{print $3}')
        python "$script.py" --eval-only "$model" --seed "$seed" --eval-episodes "$([ "$small" = 1 ] && echo 1 || echo 10)" \
            $video >"${model%.pt}-eval.log" 2>&1 &
    done
    wait
    tail -n 2 runs/*/*-eval.log
    ;;
collect)
    # what to keep is small: no checkpoint or replay buffer leaves the machine
    for log in runs/*.log; do echo "== $log"; tail -n 3 "$log"; done
    find runs videos -type f \( -name "*.log" -o -name "events.out.tfevents.*" -o -name "*.pt" -o -name "*.mp4" \) \
        -not -path "*/checkpoint*" -not -path "*/hub/*" | while read -r f; do
        mkdir -p "$out/$(dirname "$f")" && cp "$f" "$out/$f"
    done
    du -sh "$out"
    ;;
*)
    sed -n 2,29p "$0"
    exit 2
    ;;
esac
