#!/usr/bin/env bash
# The GPU half of the study, in stages short enough for one brief lease of a GPU machine each.
#
#   scripts/gpu-study.sh OUT STAGE [STAGE ...]
#
# Runs from a checkout with nothing but python3, torch, numpy (and nvidia-ml-py for NVML energy): the
# `tnn` package is imported from the checkout, gymnasium and stable-baselines3 are not needed. CIFAR-10
# is read from $TNN_DATA; when that is unset and device-data/prepare_cifar10.py exists (this project's
# development machines copy ../shared/data there), it is decoded into /tmp/tnn-data first. Everything a
# stage writes lands under OUT/<stage>/, and OUT/<stage>.tar.gz packs it (checkpoints, profiles, logs)
# so that it travels as one file.
#
# Stages (minutes on one H100 are estimates until a run records them):
#   smoke     CUDA paths end to end: bf16/channels-last training throughput, a 1-epoch pretrain on
#             4,096 images, a resnet20 profile at batch 256 with NVML energy (2 windows a level) (~1)
#   profiles  resnet20 and vgg16 at batch 1 (CUDA graphs) and batch 256, NVML energy          (~4)
#   resnet20  the resnet20 TNN                                                                 (~5)
#   twins     its vanilla twin and the standalone half-width network                          (~5)
#   families  VGG-16, ResNeXt-29 8x16d and DenseNet-BC-100 TNNs (fewer epochs)               (~10)
#
# TAG names the device in the profile files (default: read off nvidia-smi, e.g. h100 or h200). EPOCHS, BATCH and LR override the
# resnet20/twins recipe (default 30 epochs, batch 512, lr 0.4).
set -euo pipefail
[ $# -ge 2 ] || { sed -n 2,22p "$0"; exit 2; }
out=$(realpath -m "$1")
shift
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
tnn() { "$PY" -m tnn.cli "$@"; }

EPOCHS=${EPOCHS:-30}
BATCH=${BATCH:-512}
LR=${LR:-0.4}
DEVICE=${DEVICE:-cuda}
if [ -z "${TAG:-}" ] && [ "$DEVICE" = cuda ]; then  # the device in the profiles' file names (h100, h200, ...)
	TAG=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | grep -oiE 'h100|h200|a100|l40s|l40|l4' | head -1 |
		tr '[:upper:]' '[:lower:]' || true)
fi
TAG=${TAG:-gpu}
# a CPU dry run of this script (DEVICE=cpu LIMIT=512 EPOCHS=1) checks its plumbing, not its numbers
LIMIT=${LIMIT:-0}
recipe=(--dataset cifar10 --epochs "$EPOCHS" --batch-size "$BATCH" --lr "$LR" --warmup-epochs 2
	--label-smoothing 0.1 --device "$DEVICE" --limit "$LIMIT")
energy=(--device "$DEVICE")
[ "$DEVICE" = cuda ] || energy+=(--energy model)

prepare_data() {
	if [ -z "${TNN_DATA:-}" ]; then
		export TNN_DATA=/tmp/tnn-data
		if [ ! -f "$TNN_DATA/cifar-10-batches-py/test_batch" ]; then
			if [ -f device-data/prepare_cifar10.py ]; then
				"$PY" -c "import PIL" 2>/dev/null || { echo "prepare_cifar10.py needs Pillow, which $PY lacks" >&2; exit 2; }
				"$PY" device-data/prepare_cifar10.py "$TNN_DATA/cifar-10-batches-py"
			else
				echo "CIFAR-10 not found: set TNN_DATA to a folder holding cifar-10-batches-py" >&2
				exit 2
			fi
		fi
	fi
}

stage_smoke() {
	tnn bench train --device "$DEVICE" --models resnet20 --batch-size "$BATCH" --steps 20
	tnn pretrain --arch resnet20 --dataset cifar10 --epochs 1 --limit 4096 --batch-size "$BATCH" \
		--device "$DEVICE" --out "$1/resnet20-1epoch"
	tnn profile resnet20 "${energy[@]}" --batch-size 256 --repeats 20 --windows 2 --out "$1/resnet20-b256.json"
	tnn profile-show "$1/resnet20-b256.json"
}

stage_profiles() {
	local graphs=()
	[ "$DEVICE" = cuda ] && graphs=(--cuda-graphs)
	for model in resnet20 vgg16; do
		tnn profile "$model" "${energy[@]}" --batch-size 1 "${graphs[@]}" --repeats 200 \
			--out "$1/cifar10-$model-$TAG-b1.json"
		tnn profile "$model" "${energy[@]}" --batch-size 256 --repeats 100 --out "$1/cifar10-$model-$TAG-b256.json"
	done
	tnn profile-show "$1"/*.json
}

stage_resnet20() {
	tnn pretrain --arch resnet20 "${recipe[@]}" --out "$1/cifar10-resnet20-tnn"
}

stage_twins() {
	tnn pretrain --arch resnet20 --variant vanilla "${recipe[@]}" --out "$1/cifar10-resnet20-vanilla"
	tnn pretrain --arch resnet20 --variant vanilla --model-kwargs '{"widths": [8, 16, 32]}' "${recipe[@]}" \
		--out "$1/cifar10-resnet20-half"
}

stage_families() {  # each run capped (FAMILY_LIMIT_S, default 170 s) so that the stage ends within one command
	local e=$((EPOCHS * 2 / 3))
	for arch in vgg16 resnext29_8x16d densenet_bc_100; do
		timeout "${FAMILY_LIMIT_S:-170}" "$PY" -m tnn.cli pretrain --arch "$arch" "${recipe[@]}" --epochs "$e" \
			--out "$1/cifar10-$arch-tnn" || echo "cifar10-$arch-tnn: stopped or failed (exit $?); its last.pt is left out"
	done
}

for stage in "$@"; do
	declare -F "stage_$stage" >/dev/null || { echo "unknown stage $stage (smoke profiles resnet20 twins families)" >&2; exit 2; }
done
prepare_data
for stage in "$@"; do
	fn=stage_$stage
	dir=$out/$stage
	mkdir -p "$dir"
	start=$(date +%s)
	# a failing stage still packs what it wrote, and the next stages still run
	{ "$fn" "$dir" 2>&1 || echo "stage $stage failed (exit $?)"; echo "stage $stage: $(($(date +%s) - start)) s"; } |
		tee "$dir/log.txt"
	# last.pt (fp32 weights and momentum) and a save cut short (.*.tmp) would push the archive past 16 MiB
	tar -C "$out" --exclude=last.pt --exclude='.*.tmp' -czf "$out/$stage.tar.gz" "$stage"
done
