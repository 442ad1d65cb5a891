#!/usr/bin/env bash
# Puts ONNX Runtime's shared library (and, for ORT_FLAVOR=gpu, the CUDA libraries it
# loads) into DEST (default .ort/), from the pinned, hash-checked PyPI wheels listed in
# scripts/ort-$ORT_FLAVOR.txt. Only the shared libraries are kept. DEST appears only
# when complete.
set -euo pipefail

flavor=${ORT_FLAVOR:-cpu}
dest=${1:-.ort}
here=$(cd "$(dirname "$0")" && pwd)
pins="$here/ort-$flavor.txt"
[ -f "$pins" ] || { echo "setup-ort: ORT_FLAVOR must be cpu or gpu, not '$flavor'" >&2; exit 2; }
command -v python3 >/dev/null || { echo "setup-ort: python3 with pip is needed to fetch ONNX Runtime" >&2; exit 2; }

arch=$(uname -m)
if [ "$flavor" = gpu ] && [ "$arch" != x86_64 ]; then
    echo "setup-ort: ORT_FLAVOR=gpu is pinned for x86_64 only (this is $arch)" >&2; exit 2
fi

work=$(mktemp -d "${dest%/}.XXXXXX.part")
trap 'rm -rf "$work"' EXIT

echo "setup-ort: downloading ONNX Runtime ($flavor, $arch) from PyPI"
python3 -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
    --python-version 3.11 --implementation cp \
    --platform "manylinux_2_28_$arch" --platform "manylinux_2_27_$arch" \
    --platform "manylinux_2_17_$arch" --platform "manylinux2014_$arch" \
    --platform "manylinux2010_$arch" --platform "manylinux1_$arch" \
    --platform "manylinux_2_5_$arch" \
    -r "$pins" -d "$work/wheels"

mkdir "$work/lib"
python3 - "$work/wheels" "$work/lib" <<'PY'
import pathlib, re, shutil, sys, zipfile
wheels, lib = map(pathlib.Path, sys.argv[1:])
wanted = re.compile(r"^(onnxruntime/capi/libonnxruntime[^/]*\.so[^/]*|nvidia/[^/]+/lib/lib[^/]+\.so[^/]*)$")
for wheel in sorted(wheels.glob("*.whl")):
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            if wanted.match(name):
                with zf.open(name) as src, open(lib / pathlib.PurePath(name).name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
PY

versioned=$(cd "$work/lib" && ls libonnxruntime.so.1.* | head -n 1)
ln -s "$versioned" "$work/lib/libonnxruntime.so"
echo "$flavor ${versioned#libonnxruntime.so.}" > "$work/lib/FLAVOR"

rm -rf "$dest"
mv "$work/lib" "$dest"
echo "setup-ort: $dest/$versioned ($flavor) ready"
