# Sourced by local/download_*.sh: resumable fetch, checksum check, resumable unpacking.
#
#   fetch URL DEST           wget -c (or curl -C -) into DEST; a partial DEST is resumed.
#                            No network / unreachable host -> a message saying what to fetch by hand.
#   verify FILE ALGO SUM     ALGO md5|sha256. SUM empty: the first download's sha256 is recorded in
#                            FILE.sha256 and later runs check against it (trust on first use).
#   unpack ARCHIVE DIR       tar.gz/tgz/zip into DIR; DIR/.unpacked.<archive> is written only after
#                            a complete extraction, so an interrupted unpack is redone, a finished one skipped.
#   get_archive URL ARCHIVE DIR SUBDIR MD5
#                            all of the above for one corpus archive: done at once when DIR/SUBDIR is
#                            already unpacked; else fetch, verify (MD5 empty: trust on first use),
#                            unpack, and check that the archive held SUBDIR.

die() { echo "$(basename "$0"): $*" >&2; exit 1; }

fetch() {
  local url=$1 dest=$2 rc=0 tool=curl
  mkdir -p "$(dirname "$dest")"
  echo "$(basename "$0"): fetching $url -> $dest (resumes a partial file)" >&2
  if command -v wget >/dev/null 2>&1 && [[ $url != file://* ]]; then
    tool=wget
    wget -c --tries=3 --timeout=30 -O "$dest" "$url" || rc=$?
  elif command -v curl >/dev/null 2>&1; then
    curl -fL --retry 3 --connect-timeout 30 -C - -o "$dest" "$url" || rc=$?
    # curl says 33 when the server cannot resume a file that is already complete
    if [ $rc -eq 33 ] && [ -s "$dest" ]; then rc=0; fi
  else
    die "neither wget nor curl is installed; download $url into $dest by hand and rerun"
  fi
  if [ $rc -ne 0 ]; then
    [ -s "$dest" ] || rm -f "$dest"
    local why="the server refused it (wrong URL? try a mirror with --url)"
    # wget 4 / curl 6, 7, 28: name resolution, connection or timeout failures
    if { [ $tool = wget ] && [ $rc -eq 4 ]; } || { [ $tool = curl ] && [[ " 6 7 28 " == *" $rc "* ]]; }; then
      why="no network, or the host is unreachable"
    fi
    die "download of $url failed ($tool exit status $rc): $why.
  Fetch it by hand (any mirror) into $dest and rerun this script: it resumes and verifies the file."
  fi
}

verify() {
  local file=$1 algo=$2 want=$3 got
  [ -f "$file" ] || die "$file not found"
  echo "$(basename "$0"): checking the $algo of $file" >&2
  if [ -z "$want" ]; then
    algo=sha256
    if [ -f "$file.sha256" ]; then
      want=$(cut -d' ' -f1 "$file.sha256")
    else
      got=$(sha256sum "$file" | cut -d' ' -f1)
      echo "$got  $(basename "$file")" > "$file.sha256"
      echo "$(basename "$0"): no published checksum is known for $(basename "$file"); recorded its sha256 $got" \
           "in $file.sha256 (later runs check against it)" >&2
      return 0
    fi
  fi
  got=$(${algo}sum "$file" | cut -d' ' -f1)
  if [ "$got" != "$want" ]; then
    die "$algo of $file is $got, expected $want: the file is incomplete or corrupt.
  Delete it and rerun (or fetch it again by hand)."
  fi
}

unpack() {
  local archive=$1 dir=$2
  local stamp=$dir/.unpacked.$(basename "$archive")
  if [ -f "$stamp" ] && [ "$stamp" -nt "$archive" ]; then
    echo "$(basename "$0"): $archive already unpacked into $dir ($stamp)" >&2; return 0
  fi
  mkdir -p "$dir"
  echo "$(basename "$0"): unpacking $archive into $dir" >&2
  case $archive in
    *.tar.gz|*.tgz) tar -xzf "$archive" -C "$dir" ;;
    *.tar)          tar -xf "$archive" -C "$dir" ;;
    *.zip)          unzip -q -o "$archive" -d "$dir" ;;
    *) die "do not know how to unpack $archive" ;;
  esac || die "unpacking $archive failed; rerun to start the extraction again"
  date -u +%Y-%m-%dT%H:%M:%SZ > "$stamp"
}

get_archive() {
  local url=$1 archive=$2 dir=$3 subdir=$4 md5=$5
  if [ -f "$dir/.unpacked.$(basename "$archive")" ] && [ -d "$dir/$subdir" ]; then
    echo "$(basename "$0"): $dir/$subdir is ready"; return 0
  fi
  fetch "$url" "$archive"
  verify "$archive" md5 "$md5"
  unpack "$archive" "$dir"
  [ -d "$dir/$subdir" ] || die "$archive did not contain $subdir"
}
