#!/usr/bin/env bash
# CN-Celeb1/2 (OpenSLR resource 82; also from CSLT, Tsinghua): check and unpack a local copy,
# or fetch it from OpenSLR with --download true (about 22 GB + 48 GB). Either way the archives
# are md5-checked, CN-Celeb2's three parts joined, and unpacking is resumable.
#
#   local/download_cnceleb.sh --src DIR_WITH_ARCHIVES [--dir cnceleb] [--download false] [--base-url URL]
#
#   cn-celeb_v2.tar.gz                          -> DIR/CN-Celeb_flac/{data,dev,eval}
#   cn-celeb2_v2.tar.gza{a,b,c} (or the joined) -> DIR/CN-Celeb2_flac/{data,spk.lst}
#
# Then: ./run.sh --corpus cnceleb --cnceleb-root DIR
# The md5 sums are the values public recipes (WeSpeaker) check for these archives.
set -euo pipefail
src=
dir=cnceleb
download=false
base_url=https://www.openslr.org/resources/82
help_message="usage: $0 --src DIR_WITH_ARCHIVES [--dir DIR] [--download true|false] [--base-url URL]"
. "$(dirname "$0")/../utils/parse_options.sh"
. "$(dirname "$0")/download_common.sh"

md5_cn1=7ab1b214028a7439e26608b2d5a0336c
md5_cn2=55c47cf0b6d0bf793e88bf79d5dfc660
[ -n "$src" ] || die "--src is required: the folder holding cn-celeb_v2.tar.gz and cn-celeb2_v2.tar.gza[a-c]
  (from $base_url, or pass --download true to fetch them into it)"
mkdir -p "$src"
if $download; then
  [ -f "$src/cn-celeb_v2.tar.gz" ] || fetch "$base_url/cn-celeb_v2.tar.gz" "$src/cn-celeb_v2.tar.gz"
  if [ ! -f "$src/cn-celeb2_v2.tar.gz" ]; then
    for p in a b c; do fetch "$base_url/cn-celeb2_v2.tar.gza$p" "$src/cn-celeb2_v2.tar.gza$p"; done
  fi
fi
[ -f "$src/cn-celeb_v2.tar.gz" ] || die "$src/cn-celeb_v2.tar.gz not found (CN-Celeb1); download it from $base_url
  or rerun with --download true"
verify "$src/cn-celeb_v2.tar.gz" md5 "$md5_cn1"
unpack "$src/cn-celeb_v2.tar.gz" "$dir"
[ -f "$dir/CN-Celeb_flac/dev/dev.lst" ] || die "$src/cn-celeb_v2.tar.gz did not give $dir/CN-Celeb_flac/dev/dev.lst"

cn2=$src/cn-celeb2_v2.tar.gz
if [ ! -f "$cn2" ] && [ -f "${cn2}aa" ]; then
  for p in a b c; do [ -f "${cn2}a$p" ] || die "${cn2}a$p not found (CN-Celeb2 comes in parts aa, ab, ac)"; done
  echo "$0: joining CN-Celeb2 parts into $cn2" >&2
  cat "${cn2}"a[abc] > "$cn2.tmp" && mv "$cn2.tmp" "$cn2"
fi
if [ -f "$cn2" ]; then
  verify "$cn2" md5 "$md5_cn2"
  unpack "$cn2" "$dir"
else
  echo "$0: CN-Celeb2 not found in $src: training will use CN-Celeb1 dev only" >&2
fi
echo "$0: done: --cnceleb-root $dir"
