#!/usr/bin/env bash
# Download and unpack speechocean762 (OpenSLR resource 101, about 520 MB; free for
# commercial and non-commercial use) -> DIR/speechocean762/{WAVE,train,test,...}.
#
#   local/download_speechocean762.sh [--dir downloads] [--url URL] [--md5 SUM]
#
# Then: ./run.sh --corpus speechocean762 --speechocean762-root DIR/speechocean762
# Mirrors: https://us.openslr.org/resources/101/, https://openslr.elda.org/resources/101/,
# https://openslr.magicdatatech.com/resources/101/ (pass one with --url).
#
# Checksum: we found no published checksum for speechocean762.tar.gz (OpenSLR lists none
# we could see for resource 101), so none is written here. With --md5 empty the first
# complete download's sha256 is recorded in DIR/speechocean762.tar.gz.sha256 and every
# later run checks against it: this catches a truncated or changed file, not a bad first
# download. Pass --md5 when you know the right value.
set -euo pipefail
dir=downloads
url=https://www.openslr.org/resources/101/speechocean762.tar.gz
md5=
help_message="usage: $0 [--dir DIR] [--url URL] [--md5 SUM]"
. "$(dirname "$0")/../utils/parse_options.sh"
. "$(dirname "$0")/download_common.sh"

get_archive "$url" "$dir/speechocean762.tar.gz" "$dir" speechocean762/WAVE "$md5"
echo "$0: done: --speechocean762-root $dir/speechocean762"
