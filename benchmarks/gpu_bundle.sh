#!/usr/bin/env bash
# Packs what benchmarks/gpu_check.sh needs on the GPU machine (torch there; nnU-Net, its dependencies and the data
# not) into ./.gpu_bundle (git-ignored, carried by the device tool): wheels of the plugin and of the nnU-Net
# packages the pretraining imports (this venv's versions, for CPython 3.12 on x86-64), and the phantom datasets
# preprocessed at 3d_fullres from a demo work dir (Dataset990 prepared, Dataset991 planned and preprocessed).
# SimpleITK and imagecodecs (~80 MB of wheels, over the device tool's 64 MiB) are left out: only nnU-Net's image
# readers use them, which the check never calls; gpu_check.sh puts in stand-ins that fail if anything does.
# Usage: bash benchmarks/gpu_bundle.sh [demo work dir, default nnssl_demo_work]
set -euo pipefail
work=${1:-nnssl_demo_work}
py=.venv/bin/python
out=.gpu_bundle
for d in Dataset990_PhantomUnlabelled Dataset991_PhantomBTCV; do
  test -d "$work/nnUNet_preprocessed/$d" || { echo "gpu_bundle: $work/nnUNet_preprocessed/$d missing; run 'make demo' (or pass its work dir) first" >&2; exit 1; }
done
rm -rf "$out" && mkdir -p "$out/whl" "$out/nnUNet_preprocessed"
version() { $py -m pip show "$1" | sed -n 's/^Version: //p'; }
platforms="--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
$py -m pip wheel -q --no-deps . -w "$out/whl"
for pkg in nnunetv2 dynamic_network_architectures batchgenerators batchgeneratorsv2 blosc2 nibabel ndindex; do
  $py -m pip download -q --no-deps --only-binary=:all: $platforms -d "$out/whl" "$pkg==$(version $pkg)"
done
$py -m pip wheel -q --no-deps -w "$out/whl" "acvl_utils==$(version acvl_utils)"   # published as a source archive only
for d in Dataset990_PhantomUnlabelled Dataset991_PhantomBTCV; do
  src="$work/nnUNet_preprocessed/$d" dst="$out/nnUNet_preprocessed/$d"
  mkdir -p "$dst"
  cp "$src"/*.json "$dst"/
  for f in "$src"/*_3d_fullres "$src"/gt_segmentations; do [ -e "$f" ] && cp -r "$f" "$dst"/; done
done
du -sh "$out" "$out/whl" "$out/nnUNet_preprocessed"
