#!/usr/bin/env bash
# VoxCeleb1/2 audio needs the request form on the VGG site (you receive a user name and
# password); this script does not download the audio. It takes the archives you downloaded,
# checks them, joins the parts, unpacks them resumably and fetches the public trial lists:
#
#   local/download_voxceleb.sh --src DIR_WITH_ARCHIVES [--dir voxceleb] [--lists true] [--check-only false]
#
#   vox1_dev_wav_parta{a,b,c,d} (or vox1_dev_wav.zip), vox1_test_wav.zip   -> DIR/voxceleb1/wav/...
#   vox2_dev_aac_parta{a..h}    (or vox2_dev_aac.zip)                      -> DIR/voxceleb2/dev/aac/...
#   veri_test2.txt, list_test_all2.txt, list_test_hard2.txt (public)      -> DIR/voxceleb1/
#
# Then: ./run.sh --corpus voxceleb1 --voxceleb1-root DIR/voxceleb1
#       ./run.sh --corpus voxceleb2 --voxceleb2-root DIR/voxceleb2 --voxceleb1-root DIR/voxceleb1
# --check-only true: count what is already unpacked under DIR against the published sizes.
#
# The md5 sums are those published with the VoxCeleb archives (as checked by public recipes,
# e.g. voxceleb_trainer); the trial lists have no published checksum, so their line counts
# are checked instead (Vox1-O cleaned 37,611; Vox1-E cleaned 579,818; Vox1-H cleaned 550,894).
set -euo pipefail
src=
dir=voxceleb
lists=true
check_only=false
list_url=https://www.robots.ox.ac.uk/~vgg/data/voxceleb/meta
help_message="usage: $0 --src DIR_WITH_ARCHIVES [--dir DIR] [--lists true|false] [--check-only true|false]"
. "$(dirname "$0")/../utils/parse_options.sh"
. "$(dirname "$0")/download_common.sh"

declare -A MD5=(
  [vox1_dev_wav.zip]=ae63e55b951748cc486645f532ba230b [vox1_test_wav.zip]=185fdc63c3c739954633d50379a3d102
  [vox2_dev_aac.zip]=bbc063c46078a602ca71605645c2a402
  [vox1_dev_wav_partaa]=e395d020928bc15670b570a21695ed96 [vox1_dev_wav_partab]=bbfaaccefab65d82b21903e81a8a8020
  [vox1_dev_wav_partac]=017d579a2a96a077f40042ec33e51512 [vox1_dev_wav_partad]=7bb1e9f70fddc7a678fa998ea8b3ba19
  [vox2_dev_aac_partaa]=da070494c573e5c0564b1d11c3b20577 [vox2_dev_aac_partab]=17fe6dab2b32b48abaf1676429cdd06f
  [vox2_dev_aac_partac]=1de58e086c5edf63625af1cb6d831528 [vox2_dev_aac_partad]=5a043eb03e15c5a918ee6a52aad477f9
  [vox2_dev_aac_partae]=cea401b624983e2d0b2a87fb5d59aa60 [vox2_dev_aac_partaf]=fc886d9ba90ab88e7880ee98effd6ae9
  [vox2_dev_aac_partag]=d160ecc3f6ee3eed54d55349531cb42e [vox2_dev_aac_partah]=6b84a81b9af72a9d9eecbb3b1f602e65
)
declare -A LINES=([veri_test2.txt]=37611 [list_test_all2.txt]=579818 [list_test_hard2.txt]=550894)

count() { find "$1" -name "$2" 2>/dev/null | wc -l; }
if $check_only; then
  echo "voxceleb1 wav files: $(count "$dir/voxceleb1" '*.wav') (published: 148,642 dev + 4,874 test = 153,516)"
  echo "voxceleb2 dev m4a/wav files: $(count "$dir/voxceleb2" '*.m4a') / $(count "$dir/voxceleb2" '*.wav') (published: 1,092,009)"
  for f in "${!LINES[@]}"; do
    [ -f "$dir/voxceleb1/$f" ] && echo "$f: $(wc -l < "$dir/voxceleb1/$f") lines (published: ${LINES[$f]})"
  done
  exit 0
fi
[ -n "$src" ] || die "--src is required: the folder holding the archives you downloaded from the VGG site
  (https://www.robots.ox.ac.uk/~vgg/data/voxceleb/, registration needed)"
[ -d "$src" ] || die "--src $src is not a directory"

# join_parts NAME: NAME.zip from NAME_parta* when the zip is not there yet (checked either way)
join_parts() {
  local name=$1 zip=$src/$1.zip
  if [ ! -f "$zip" ]; then
    local parts=("$src/${name}"_parta?)
    [ -f "${parts[0]}" ] || return 1
    for p in "${parts[@]}"; do verify "$p" md5 "${MD5[$(basename "$p")]:-}"; done
    echo "$0: joining ${#parts[@]} parts into $zip" >&2
    cat "${parts[@]}" > "$zip.tmp" && mv "$zip.tmp" "$zip"
  fi
  verify "$zip" md5 "${MD5[$name.zip]}"
}

found=0
if join_parts vox1_dev_wav; then unpack "$src/vox1_dev_wav.zip" "$dir/voxceleb1"; found=1; fi
if [ -f "$src/vox1_test_wav.zip" ]; then
  verify "$src/vox1_test_wav.zip" md5 "${MD5[vox1_test_wav.zip]}"; unpack "$src/vox1_test_wav.zip" "$dir/voxceleb1"; found=1
fi
if join_parts vox2_dev_aac; then unpack "$src/vox2_dev_aac.zip" "$dir/voxceleb2"; found=1; fi
[ $found -eq 1 ] || die "no VoxCeleb archive in $src; looked for vox1_dev_wav.zip or vox1_dev_wav_parta*,
  vox1_test_wav.zip, vox2_dev_aac.zip or vox2_dev_aac_parta*"

if $lists; then
  for f in veri_test2.txt list_test_all2.txt list_test_hard2.txt; do
    out=$dir/voxceleb1/$f
    [ -f "$out" ] || fetch "$list_url/$f" "$out"
    n=$(wc -l < "$out")
    [ "$n" -eq "${LINES[$f]}" ] || die "$out has $n lines, expected ${LINES[$f]}; delete it and rerun"
  done
fi
echo "$0: done under $dir (voxceleb1/, voxceleb2/)"
