#!/usr/bin/env bash
# Assembles an OCI image layout from one built binary without a container builder or any base
# image: the binary, exactly the shared libraries `ldd` says it loads (and the dynamic loader),
# /etc/passwd and /etc/group naming the non-root user 65532, /tmp, the CA bundle of this machine
# (for TLS clients that read the system roots) and an empty state directory owned by 65532.
#
#   tools/oci-layout.sh --binary target/release/regent-sidecar --name regent-sidecar \
#       --version 0.1.0 --out target/images/regent-sidecar [--revision SHA] [--source URL] \
#       [--state-dir /var/lib/regent-sidecar] [--description TEXT]
#
# Output (DIR is replaced as a whole, only once everything is written):
#   DIR/oci-layout, DIR/index.json, DIR/blobs/sha256/{layer,config,manifest}
# One layer (tar+gzip) whose entries are sorted by name with mtime 0 and uid/gid 0, except the
# state directory (uid/gid 65532). The same inputs give the same bytes, hence the same digests
# (`created` comes from SOURCE_DATE_EPOCH, default 0). The image runs as 65532:65532 with the
# binary as its entrypoint; there is no shell in it. The index names the image by VERSION
# (org.opencontainers.image.ref.name), so `skopeo copy oci:DIR:VERSION docker://…` pushes it.
set -euo pipefail

say() { echo "oci-layout: $*" >&2; }
die() {
	say "error: $*"
	exit 2
}

binary="" name="" version="" out="" revision="unknown" source="" state_dir="" description=""
while (($#)); do
	case "$1" in
	--binary | --name | --version | --out | --revision | --source | --state-dir | --description)
		(($# >= 2)) || die "$1 needs a value"
		v="$2"
		case "$1" in
		--binary) binary="$v" ;;
		--name) name="$v" ;;
		--version) version="$v" ;;
		--out) out="$v" ;;
		--revision) revision="$v" ;;
		--source) source="$v" ;;
		--state-dir) state_dir="$v" ;;
		--description) description="$v" ;;
		esac
		shift 2
		;;
	-h | --help)
		sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*) die "unknown argument $1 (see --help)" ;;
	esac
done
[[ -n $binary && -n $name && -n $version && -n $out ]] ||
	die "--binary, --name, --version and --out are required (see --help)"
[[ -f $binary && -x $binary ]] || die "$binary is not an executable file"
[[ $name =~ ^[a-z0-9][a-z0-9._-]*$ ]] || die "--name $name: use lowercase letters, digits, . _ -"
[[ -n $state_dir ]] || state_dir="/var/lib/$name"
[[ $state_dir == /* && $state_dir != *..* ]] || die "--state-dir $state_dir must be an absolute path without .."
for tool in ldd tar gzip sha256sum stat; do
	command -v "$tool" >/dev/null 2>&1 || die "$tool is needed (Debian: coreutils, tar, gzip, libc-bin)"
done
case "$(uname -m)" in
x86_64) arch=amd64 ;;
aarch64) arch=arm64 ;;
*) arch="$(uname -m)" ;;
esac

work="$(mktemp -d "${TMPDIR:-/tmp}/oci-layout.XXXXXX")"
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"
mkdir -p "$root"

# --- 1. the binary and what it loads ---------------------------------------------------------
say "[1/5] $name: resolving the shared libraries of $binary (ldd)"
entry="/usr/local/bin/$name"
install -D -m 0755 "$binary" "$root$entry"
libs=()
if ldd_out="$(ldd "$binary" 2>&1)"; then
	while IFS= read -r line; do
		line="${line#"${line%%[![:space:]]*}"}"
		case "$line" in
		*"=> not found"*) die "$name needs ${line%% *}, which ldd cannot find" ;;
		*" => /"*) lib="${line#* => }" ;;      # libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)
		/*) lib="$line" ;;                     # /lib64/ld-linux-x86-64.so.2 (0x…): the loader
		*) continue ;;                         # linux-vdso.so.1 (0x…): provided by the kernel
		esac
		libs+=("${lib%% (0x*}")
	done <<<"$ldd_out"
elif [[ $ldd_out == *"not a dynamic executable"* || $ldd_out == *"statically linked"* ]]; then
	say "      $binary is statically linked: no libraries to copy"
else
	die "ldd $binary failed: $ldd_out"
fi
for lib in "${libs[@]}"; do
	[[ -e $lib ]] || die "ldd named $lib, which does not exist"
	# Copied as a regular file at the path the binary asks for (symlinks resolved), so the
	# image does not depend on this machine's /lib -> /usr/lib layout.
	install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
	say "      + $lib"
done

# --- 2. the rest of the root filesystem --------------------------------------------------------
say "[2/5] $name: users, /tmp, CA certificates, state directory $state_dir"
mkdir -p "$root/etc" "$root/tmp" "$root/home/nonroot"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
chmod 0644 "$root/etc/passwd" "$root/etc/group"
chmod 1777 "$root/tmp"
ca=/etc/ssl/certs/ca-certificates.crt
if [[ -f $ca ]]; then
	install -D -m 0644 "$(readlink -f "$ca")" "$root$ca"
else
	say "      (no $ca on this machine: the image carries no CA bundle)"
fi
mkdir -p "$root$state_dir"
chmod 0750 "$root$state_dir"
# Directories get fixed modes too, so the layer does not depend on this machine's umask.
find "$root" -type d ! -path "$root/tmp" ! -path "$root$state_dir" -exec chmod 0755 {} +

# --- 3. the layer ------------------------------------------------------------------------------
say "[3/5] $name: writing the layer (sorted, mtime 0, uid/gid 0)"
tar_common=(--format=gnu --sort=name --mtime=@0 --numeric-owner --no-acls --no-xattrs --no-selinux)
rel_state="${state_dir#/}"
top=()
while IFS= read -r -d '' e; do top+=("${e#"$root"/}"); done < <(find "$root" -mindepth 1 -maxdepth 1 -print0 | LC_ALL=C sort -z)
LC_ALL=C tar -C "$root" "${tar_common[@]}" --owner=0 --group=0 --exclude="./$rel_state" \
	--exclude="$rel_state" -cf "$work/layer.tar" "${top[@]}"
# The state directory alone, owned by the user the image runs as (a volume mounted there
# starts out writable by it).
LC_ALL=C tar -C "$root" "${tar_common[@]}" --owner=65532 --group=65532 --no-recursion \
	-rf "$work/layer.tar" "$rel_state"
say "      compressing $(($(stat -c %s "$work/layer.tar") / 1024 / 1024)) MiB (gzip -n)"
gzip -n -6 -c "$work/layer.tar" >"$work/layer.tar.gz"

# --- 4. blobs ----------------------------------------------------------------------------------
say "[4/5] $name: config, manifest, index"
blobs="$work/layout/blobs/sha256"
mkdir -p "$blobs"
sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }
# A JSON string; refuses control characters other than newline and tab.
js() {
	local s="$1" t="${1//[$'\n\t']/}"
	[[ ! $t =~ [[:cntrl:]] ]] || die "control character in $s"
	s="${s//\\/\\\\}"
	s="${s//\"/\\\"}"
	s="${s//$'\n'/\\n}"
	s="${s//$'\t'/\\t}"
	printf '"%s"' "$s"
}
# Moves a file into blobs/sha256/<digest> and prints the digest.
blob() {
	local d
	d="$(sha "$1")"
	mv "$1" "$blobs/$d"
	echo "$d"
}

diff_id="$(sha "$work/layer.tar")"
layer_size="$(size "$work/layer.tar.gz")"
layer="$(blob "$work/layer.tar.gz")"

epoch="${SOURCE_DATE_EPOCH:-0}"
[[ $epoch =~ ^[0-9]+$ ]] || die "SOURCE_DATE_EPOCH=$epoch is not a number of seconds"
created="$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)"
[[ -n $description ]] || description="$name $version"
labels="$(
	printf '{%s:%s,%s:%s,%s:%s,%s:%s,%s:%s,%s:%s,%s:%s}' \
		"$(js org.opencontainers.image.created)" "$(js "$created")" \
		"$(js org.opencontainers.image.description)" "$(js "$description")" \
		"$(js org.opencontainers.image.licenses)" "$(js Apache-2.0)" \
		"$(js org.opencontainers.image.revision)" "$(js "$revision")" \
		"$(js org.opencontainers.image.source)" "$(js "$source")" \
		"$(js org.opencontainers.image.title)" "$(js "$name")" \
		"$(js org.opencontainers.image.version)" "$(js "$version")"
)"
printf '{"architecture":%s,"os":"linux","created":%s,"config":{"User":"65532:65532","Entrypoint":[%s],"Env":["PATH=/usr/local/bin:/usr/bin:/bin","HOME=/home/nonroot"],"WorkingDir":%s,"Volumes":{%s:{}},"Labels":%s},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created":%s,"created_by":"tools/oci-layout.sh"}]}' \
	"$(js "$arch")" "$(js "$created")" "$(js "$entry")" "$(js "$state_dir")" "$(js "$state_dir")" \
	"$labels" "$diff_id" "$(js "$created")" >"$work/config.json"
config_size="$(size "$work/config.json")"
config="$(blob "$work/config.json")"

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}],"annotations":%s}' \
	"$config" "$config_size" "$layer" "$layer_size" "$labels" >"$work/manifest.json"
manifest_size="$(size "$work/manifest.json")"
manifest="$(blob "$work/manifest.json")"

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":%s,"os":"linux"},"annotations":{"org.opencontainers.image.ref.name":%s}}]}' \
	"$manifest" "$manifest_size" "$(js "$arch")" "$(js "$version")" >"$work/layout/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' >"$work/layout/oci-layout"

# --- 5. in place -------------------------------------------------------------------------------
say "[5/5] $name: writing $out"
mkdir -p "$(dirname "$out")"
rm -rf "$out.tmp.$$"
mv "$work/layout" "$out.tmp.$$"
rm -rf "$out"
mv "$out.tmp.$$" "$out"
say "$name:$version -> $out (manifest sha256:$manifest, layer $((layer_size / 1024 / 1024)) MiB compressed, ${#libs[@]} libraries)"
