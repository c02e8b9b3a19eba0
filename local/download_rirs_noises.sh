#!/usr/bin/env bash
# Download and unpack RIRS_NOISES (OpenSLR resource 28, about 1.3 GB: simulated and real
# room impulse responses, point-source noises) -> DIR/RIRS_NOISES; use it with
# ./run.sh --rirs-root DIR/RIRS_NOISES.
#
#   local/download_rirs_noises.sh [--dir downloads] [--url URL] [--md5 SUM]
#
# Mirrors: https://us.openslr.org/resources/28/, https://openslr.elda.org/resources/28/.
# The md5 below is the one OpenSLR publishes for rirs_noises.zip in its checksum.md5
# (also checked by public recipes); we have not downloaded it here.
set -euo pipefail
dir=downloads
url=https://www.openslr.org/resources/28/rirs_noises.zip
md5=e6f48e257286e05de56413b4779d8ffb
help_message="usage: $0 [--dir DIR] [--url URL] [--md5 SUM]"
. "$(dirname "$0")/../utils/parse_options.sh"
. "$(dirname "$0")/download_common.sh"

get_archive "$url" "$dir/rirs_noises.zip" "$dir" RIRS_NOISES "$md5"
echo "$0: done: --rirs-root $dir/RIRS_NOISES"
