#!/usr/bin/env bash
# Builds the Debian package of the `culex` binary (tokio):
# $CARGO_TARGET_DIR/debian/culex_<version>_<arch>.deb (target/ by default).
#
# The package is staged by hand and built with `dpkg-deb --build`: the
# release binary as /usr/sbin/culex, the files of packaging/deb/ (the
# configuration, the systemd unit, the maintainer scripts, logrotate, the
# man page, the copyright), and the documentation. Needs dpkg-dev
# (dpkg-shlibdeps, for the libraries the binary links) and binutils
# (strip). Prints the path of the package on stdout; the rest goes to
# stderr. What the package installs and why: docs/packaging.md.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '%s\n' "$*" >&2; }

for tool in dpkg-deb dpkg-shlibdeps strip gzip; do
  command -v "$tool" >/dev/null || { say "deb.sh: $tool is missing (apt-get install dpkg-dev binutils)"; exit 1; }
done

target="${CARGO_TARGET_DIR:-target}"
case "$target" in /*) ;; *) target="$PWD/$target" ;; esac
version="$(cargo pkgid --locked -p culex-tokio | sed 's/.*[@#]//')"
arch="$(dpkg --print-architecture)"
# Reproducible: every date in the package is the last commit's.
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}"
maintainer="${DEB_MAINTAINER:-Culex maintainers <$(git log -1 --format=%ae 2>/dev/null || echo root@localhost)>}"

say "deb.sh: building culex $version (release)"
cargo build --release --locked --quiet -p culex-tokio --bin culex

out="$target/debian"
stage="$out/culex_${version}_${arch}"
rm -rf "$stage"
mkdir -p "$stage/DEBIAN"
src=packaging/deb

put() { # put MODE SOURCE DEST: a file into the staged tree
  install -D -m "$1" "$2" "$stage/$3"
}
put 0755 "$target/release/culex" usr/sbin/culex
# What dh_strip removes: debugging symbols, the compiler's notes.
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$stage/usr/sbin/culex"
put 0644 "$src/culex.conf" etc/culex/culex.conf
put 0644 "$src/conf.d-README" etc/culex/conf.d/README
put 0644 "$src/logrotate" etc/logrotate.d/culex
put 0644 "$src/culex.service" lib/systemd/system/culex.service
for script in postinst prerm postrm; do
  put 0755 "$src/$script" "DEBIAN/$script"
done
(cd "$stage" && find etc -type f | sort | sed 's|^|/|') >"$stage/DEBIAN/conffiles"

doc="$stage/usr/share/doc/culex"
mkdir -p "$doc" "$stage/usr/share/man/man8"
sed "s/@VERSION@/$version/" "$src/culex.8" | gzip -9n >"$stage/usr/share/man/man8/culex.8.gz"
for file in README.md docs/config.md docs/persistence.md docs/bridges.md docs/packaging.md docs/http-api.md; do
  gzip -9n <"$file" >"$doc/$(basename "$file").gz"
done

# The crates linked into the binary, with their licenses, into the
# copyright file (proc-macros run at build time and are not linked).
crates="$(cargo tree --locked -p culex-tokio -e normal --prefix none --format '{p}|{l}' \
  | grep -v -e '(\*)' -e '(proc-macro)' -e '^culex' | sort -u \
  | sed -E 's/^([^ ]+) v([^|]+)\|(.*)$/  \1 \2: \3/')"
first="$(git log --max-parents=0 --format=%cd --date=format:%Y 2>/dev/null | tail -n 1)"
last="$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y)"
years="${first:-$last}"
[ "$years" = "$last" ] || years="$years-$last"
awk -v crates="$crates" -v years="$years" '$0 == "@CRATES@" { print crates; next } { sub(/@YEARS@/, years); print }' \
  "$src/copyright" >"$doc/copyright"
chmod 0644 "$doc/copyright"

commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
{
  printf 'culex (%s) unstable; urgency=medium\n\n' "$version"
  printf '  * Built from the Culex source tree at commit %s.\n\n' "$commit"
  printf ' -- %s  %s\n' "$maintainer" "$(date -R -u -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$doc/changelog.gz"

# The libraries the binary links, as dpkg-shlibdeps names their packages
# (it reads a control file: a minimal one, aside).
shlibs_dir="$out/shlibs"
rm -rf "$shlibs_dir"
mkdir -p "$shlibs_dir/debian"
printf 'Source: culex\n\nPackage: culex\nArchitecture: any\n' >"$shlibs_dir/debian/control"
shlibs="$(cd "$shlibs_dir" && dpkg-shlibdeps -O -e "$stage/usr/sbin/culex" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')"
rm -rf "$shlibs_dir"
[ -n "$shlibs" ] || { say "deb.sh: dpkg-shlibdeps found no library for culex"; exit 1; }

cat >"$stage/DEBIAN/control" <<EOF
Package: culex
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $(du -sk --exclude=DEBIAN "$stage" | cut -f1)
Depends: adduser, $shlibs
Suggests: mosquitto-clients
Section: net
Priority: optional
Description: MQTT 3.1 and 3.1.1 broker, a replacement for Mosquitto
 Culex speaks MQTT 3.1 and 3.1.1 to the letter of the standard, reads
 Mosquitto's configuration file and command line, and answers Mosquitto's
 clients the way Mosquitto does.
 .
 Retained messages and persistent sessions are committed to disk before
 they are acknowledged. Bridges, TLS, WebSocket, password and ACL files work
 as in Mosquitto. Beyond Mosquitto, it can record which clients are
 connected in Redis and drop JSON payloads whose expiry time has passed.
 .
 This package runs the broker as a systemd service, in local only mode
 (127.0.0.1 and ::1, port 1883) until configured otherwise.
EOF

(cd "$stage" && find . -type f ! -path './DEBIAN/*' -printf '%P\n' | sort | xargs md5sum) >"$stage/DEBIAN/md5sums"
chmod 0644 "$stage/DEBIAN/control" "$stage/DEBIAN/conffiles" "$stage/DEBIAN/md5sums"
find "$stage" -type d -exec chmod 0755 {} +
find "$stage" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

deb="$out/culex_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >&2
echo "$deb"
