#!/usr/bin/env bash
# One short lease of a GPU, spent on what the CPU cannot do:
#
#   scripts/gpu-lease.sh OUT [DEADLINE_S]
#
# 1. every CIFAR-10 model this repo ships (resnet20 TNN with its vanilla and half-width twins and the
#    four-level TNN with its u=1 loss weighted twice beside it, the VGG-16, DenseNet-BC-100 and
#    ResNeXt-29 TNNs), trained side by side by scripts/gpu_budget.py so that all end within
#    DEADLINE_S seconds (default 440); plan.json (in both archives) records how;
# 2. NVML energy/latency profiles of resnet20 (batch 1 with CUDA graphs, batch 256).
# OUT gets r20.tar.gz, families.tar.gz, profiles.tar.gz and the logs: few files, as a lease returns.
# COMPILE=1 trains with `tnn pretrain --compile` (CUDA graphs; on an H200 the eager resnet20 sandwich
# step took 45 ms, 4.6x a vanilla step: launch-bound). TAG names the GPU in the profile files
# (default: read off nvidia-smi, e.g. h200). DEVICE=cpu GPU_BUDGET_ARGS='--limit 512 --batch-size 64'
# checks the plumbing on a CPU.
set -uo pipefail
[ $# -ge 1 ] || { sed -n 2,16p "$0"; exit 2; }
out=$(realpath -m "$1")
deadline=${2:-440}
cd "$(dirname "$0")/.." || exit 2
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
if [ -z "${TAG:-}" ] && [ "$DEVICE" = cuda ]; then
	TAG=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | grep -oiE 'h100|h200|a100|l40s|l40|l4' | head -1 |
		tr '[:upper:]' '[:lower:]')
fi
TAG=${TAG:-gpu}
mkdir -p "$out"
if [ -z "${TNN_DATA:-}" ]; then
	export TNN_DATA=/tmp/tnn-data
	if [ ! -f "$TNN_DATA/cifar-10-batches-py/test_batch" ]; then
		"$PY" -c "import PIL" 2>/dev/null || { echo "prepare_cifar10.py needs Pillow, which $PY lacks" >&2; exit 2; }
		[ -f device-data/prepare_cifar10.py ] || {
			echo "CIFAR-10 not found: set TNN_DATA to a folder holding cifar-10-batches-py, or copy" \
				"../shared/data to device-data/ (and carry it)" >&2
			exit 2
		}
		"$PY" device-data/prepare_cifar10.py "$TNN_DATA/cifar-10-batches-py" || exit 2
	fi
fi
[ "$DEVICE" = cuda ] && nvidia-smi --query-gpu=name,driver_version,power.draw,power.limit --format=csv
[ "${COMPILE:-0}" = 1 ] && GPU_BUDGET_ARGS="${GPU_BUDGET_ARGS:-} --compile"
# shellcheck disable=SC2086  # GPU_BUDGET_ARGS holds several flags
"$PY" scripts/gpu_budget.py "$out/train" --deadline "$deadline" --device "$DEVICE" ${GPU_BUDGET_ARGS:-} 2>&1 |
	tee "$out/train.log"
# An unfinished resnet20 run keeps last.pt (about 2 MB: the way to resume it); a finished run's is dead
# weight, and the families' (fp32 weights and momentum, 7-18 MB each) would push the archive past the
# 16 MiB a lease returns per file.
if [ -d "$out/train" ]; then
	(
		cd "$out/train" || exit 1
		for d in cifar10-*/; do
			[ -d "$d" ] || continue
			rm -f "$d"/.*.tmp # a save cut short by the stop (fp32, up to tens of MB)
			case "$d" in cifar10-resnet20-*) [ -f "$d/model.pt" ] && rm -f "$d/last.pt" ;; *) rm -f "$d/last.pt" ;; esac
		done
		for part in "r20:cifar10-resnet20-" "families:cifar10-vgg16- cifar10-densenet cifar10-resnext"; do
			dirs=()
			for prefix in ${part#*:}; do
				for d in "$prefix"*; do [ -d "$d" ] && dirs+=("$d"); done
			done
			tar -czf "$out/${part%%:*}.tar.gz" plan.json "${dirs[@]}" && rm -rf "${dirs[@]}"
		done
	)
fi
energy=(--device "$DEVICE")
graphs=()
if [ "$DEVICE" = cuda ]; then graphs=(--cuda-graphs); else energy+=(--energy model); fi
mkdir -p "$out/profiles"
{
	timeout 40 "$PY" -m tnn.cli profile resnet20 "${energy[@]}" --batch-size 256 --repeats 30 --windows 2 \
		--out "$out/profiles/cifar10-resnet20-$TAG-b256.json"
	timeout 40 "$PY" -m tnn.cli profile resnet20 "${energy[@]}" --batch-size 1 "${graphs[@]}" --repeats 100 \
		--windows 2 --out "$out/profiles/cifar10-resnet20-$TAG-b1.json"
	"$PY" -m tnn.cli profile-show "$out"/profiles/*.json
} 2>&1 | tee "$out/profiles.log"
tar -C "$out" -czf "$out/profiles.tar.gz" profiles && rm -rf "$out/profiles"
ls -la "$out"
