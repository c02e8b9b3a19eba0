#!/usr/bin/env bash
# Download and unpack MUSAN (OpenSLR resource 17, about 11 GB: music, speech, noise)
# -> DIR/musan/{music,speech,noise}; use it with ./run.sh --musan-root DIR/musan.
#
#   local/download_musan.sh [--dir downloads] [--url URL] [--md5 SUM]
#
# Mirrors: https://us.openslr.org/resources/17/, https://openslr.elda.org/resources/17/.
# The md5 below is the value that public recipes (WeSpeaker, voxceleb_trainer) check for
# musan.tar.gz; we have not downloaded the archive here to confirm it ourselves.
set -euo pipefail
dir=downloads
url=https://www.openslr.org/resources/17/musan.tar.gz
md5=0c472d4fc0c5141eca47ad1ffeb2a7df
help_message="usage: $0 [--dir DIR] [--url URL] [--md5 SUM]"
. "$(dirname "$0")/../utils/parse_options.sh"
. "$(dirname "$0")/download_common.sh"

get_archive "$url" "$dir/musan.tar.gz" "$dir" musan/noise "$md5"
echo "$0: done: --musan-root $dir/musan"
