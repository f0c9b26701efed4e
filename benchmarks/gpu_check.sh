#!/usr/bin/env bash
# The GPU checks of the FLUX-scale path in one go (random-init bf16 flux-dev; no weights needed), each stage under
# its own time limit so that one failure does not hide the others. Results: one JSON / log file per stage in
# OUT_DIR (default runs/gpu_check), and a summary on stdout.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]
#   ONLY="train_step fsdp_train" bash benchmarks/gpu_check.sh     # some stages only
#
# Stages: (1) PRW training-step cost vs one LoRA (target <= 1.05x, DESIGN.md section 4); (2) sampling with the
# source K/V cache vs recomputing the source at 1024^2 (target <= 0.6x, same image); (3) flux-dev training steps
# through the real LightningModule + Trainer at 512^2 + source, batch 4 (step time, peak memory); (4) the FSDP
# strategy on one GPU: `cologen train` for 4 steps with adapters-only checkpoints, then a resumed run to 6 steps;
# the efficiency stages, each against today's default in the same process (targets: README "Performance"):
# (5) train_fast: selective checkpointing + compiled blocks, bf16 exact math (target >= 5 samples/s, >= 2.0x);
# (6) train_fp8: the same with FP8 frozen-base matmuls (>= 7 samples/s, loss within the stated tolerance);
# (7) train_24gb: int8 weight-only base, batch 1, full checkpointing (peak <= 22 GiB, loss within 2 %);
# (8) sample_compile: cached 1024^2 editing with compiled blocks (same image: max abs diff);
# (9) sample_fast: compiled blocks + FP8 (<= 0.6x today's time, PSNR printed);
# (10) demo_cuda: the one-GPU study, `cologen demo --device cuda` (small preset, 64 px, 3 training seeds, staged vs
# co-training with across-seed intervals; target <= 10 minutes); its report is OUT_DIR/demo_cuda/report.md.
#   ONLY=demo_cuda bash benchmarks/gpu_check.sh
#   ONLY="train_fast train_fp8 train_24gb sample_compile sample_fast" bash benchmarks/gpu_check.sh
set -u
OUT_DIR=${1:-runs/gpu_check}
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-python3}

stage() {  # stage NAME LIMIT_S COMMAND...   (ONLY="name1 name2" runs just those stages)
  local name=$1 limit=$2
  shift 2
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then return; fi
  local t0=$(date +%s)
  timeout "$limit" "$@" >"$OUT_DIR/$name.out" 2>"$OUT_DIR/$name.err"
  local rc=$?
  echo "== $name: rc=$rc in $(( $(date +%s) - t0 )) s"
  tail -n 3 "$OUT_DIR/$name.out"
  [ $rc -eq 0 ] || tail -n 15 "$OUT_DIR/$name.err"
}

$PY - <<'EOF' | tee "$OUT_DIR/env.txt"
import torch, lightning, diffusers
print("torch", torch.__version__, "lightning", lightning.__version__, "diffusers", diffusers.__version__)
print("device", torch.cuda.get_device_name(0), "memory GiB", round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
EOF

stage speed 130 $PY -m benchmarks.speed --preset flux-dev --device cuda --resolution 512 --batch 4 --rank 128 \
  --experts 5 --steps 3 --rounds 3 --warmup 2 --json
stage cache_speed 110 $PY -m benchmarks.cache_speed --preset flux-dev --device cuda --resolution 1024 --steps 28 --json
stage train_step 120 $PY -m benchmarks.train_step --preset flux-dev --resolution 512 --batch 4 --rank 128 \
  --experts 5 --warmup 2 --steps 5 --json
FSDP_RUN="$OUT_DIR/fsdp_run"
rm -rf "$FSDP_RUN"
FSDP_ARGS=(model.preset=small data.resolution=64 data.batch_size=4 train.global_batch=4 train.accelerator=gpu
  train.precision=bf16-mixed train.strategy=fsdp train.checkpoint_every=2 train.val_every=2 train.log_every=1
  "output_dir=$FSDP_RUN")
stage fsdp_train 80 $PY -m lit_cologen.cli train experiments/presets/tiny.yaml "${FSDP_ARGS[@]}" train.max_steps=4 --no-progress
rm -f "$FSDP_RUN/final/DONE" "$FSDP_RUN/final/done.json"
stage fsdp_resume 70 $PY -m lit_cologen.cli train experiments/presets/tiny.yaml "${FSDP_ARGS[@]}" train.max_steps=6 --no-progress
stage fsdp_checkpoint 30 $PY - "$FSDP_RUN" <<'EOF'
import json, sys, pathlib, torch
run = pathlib.Path(sys.argv[1])
ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
keys = list(ckpt["state_dict"])
print(json.dumps({"global_step": ckpt.get("global_step"), "state_keys": len(keys),
                  "base_keys": sum(k.startswith("transformer.base.") for k in keys),
                  "adapter_files": sorted(p.name for p in (run / "final").glob("*"))}))
EOF

TRAIN=(--preset flux-dev --resolution 512 --batch 4 --rank 128 --experts 5 --warmup 3 --steps 5 --compare --json)
stage train_fast 420 $PY -m benchmarks.train_step "${TRAIN[@]}" --checkpointing selective --checkpoint-ratio 0.5 --compile
stage train_fp8 420 $PY -m benchmarks.train_step "${TRAIN[@]}" --checkpointing selective --checkpoint-ratio 0.5 --compile --fp8
stage train_24gb 300 $PY -m benchmarks.train_step --preset flux-dev --resolution 512 --batch 1 --rank 128 --experts 5 \
  --warmup 2 --steps 3 --compare --json --checkpointing full --base-quantization int8
SAMPLE=(--preset flux-dev --device cuda --resolution 1024 --steps 28 --json)
stage sample_compile 300 $PY -m benchmarks.cache_speed "${SAMPLE[@]}" --compile
stage sample_fast 300 $PY -m benchmarks.cache_speed "${SAMPLE[@]}" --compile --fp8
stage demo_cuda 600 $PY -m lit_cologen.cli demo --device cuda --out "$OUT_DIR/demo_cuda" --no-dreambench --no-progress
