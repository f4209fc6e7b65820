#!/usr/bin/env bash
# `make image`: container images of `regent` and `regent-sidecar`, named as the chart's defaults
# (charts/regent/values.yaml): ghcr.io/regent-dev/regent:<version> and
# ghcr.io/regent-dev/regent-sidecar:<version>, <version> being the workspace's (Cargo.toml).
#
# With a working container builder (docker with a daemon, podman or buildah) both targets of
# docker/Dockerfile are built and tagged locally. Without one (no daemon, no network for base
# images) the release binaries are built with cargo and each is assembled into an OCI image
# layout by tools/oci-layout.sh under target/images/<name>/; see docs/deploying.md → "Images"
# for pushing either.
#
# Environment:
#   IMAGE_BUILDER   docker | podman | buildah | offline (default: the first that works, else offline)
#   IMAGE_REGISTRY  default ghcr.io/regent-dev
#   IMAGE_VERSION   default the workspace version
#   IMAGE_PROFILE   offline only: cargo profile of the binaries (release, default; or debug)
#   RUST_IMAGE, SIDECAR_BASE, SERVER_BASE   base image overrides for docker/Dockerfile (pin digests)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { echo "image: $*" >&2; }

# [workspace.package] of the root Cargo.toml: version and repository.
workspace_key() {
	awk -v key="$1" '
		/^\[/ { in_pkg = ($0 == "[workspace.package]") }
		in_pkg && $1 == key && $2 == "=" { gsub(/"/, "", $3); print $3; exit }
	' Cargo.toml
}
version="${IMAGE_VERSION:-$(workspace_key version)}"
[[ -n $version ]] || { say "error: no version in Cargo.toml's [workspace.package]"; exit 2; }
source_url="$(workspace_key repository)"
registry="${IMAGE_REGISTRY:-ghcr.io/regent-dev}"
revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
if [[ $revision != unknown ]] && ! git diff --quiet HEAD 2>/dev/null; then
	say "note: the work tree has uncommitted changes; revision label $revision does not describe them"
fi
SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"
export SOURCE_DATE_EPOCH

works() {
	case "$1" in
	docker) command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 ;;
	podman) command -v podman >/dev/null 2>&1 && podman info >/dev/null 2>&1 ;;
	buildah) command -v buildah >/dev/null 2>&1 && buildah info >/dev/null 2>&1 ;;
	offline) true ;;
	*) return 1 ;;
	esac
}
builder="${IMAGE_BUILDER:-}"
if [[ -z $builder ]]; then
	for b in docker podman buildah offline; do
		if works "$b"; then
			builder="$b"
			break
		fi
	done
	if [[ $builder == offline ]]; then
		why="no container builder"
		command -v docker >/dev/null 2>&1 && why="docker is installed but \`docker info\` fails (no daemon?)"
		say "$why: assembling OCI image layouts offline instead"
	fi
elif ! works "$builder"; then
	say "error: IMAGE_BUILDER=$builder does not work here"
	exit 2
fi
say "version $version, revision $revision, builder $builder"

build_args=(--build-arg "VERSION=$version" --build-arg "REVISION=$revision" --build-arg "SOURCE=$source_url")
for arg in RUST_IMAGE SIDECAR_BASE SERVER_BASE; do
	[[ -z ${!arg:-} ]] || build_args+=(--build-arg "$arg=${!arg}")
done

case "$builder" in
docker | podman | buildah)
	for name in regent-sidecar regent; do
		tag="$registry/$name:$version"
		say "building $tag (docker/Dockerfile, target $name)"
		case "$builder" in
		docker) DOCKER_BUILDKIT=1 docker build -f docker/Dockerfile --target "$name" "${build_args[@]}" -t "$tag" . ;;
		podman) podman build -f docker/Dockerfile --target "$name" "${build_args[@]}" -t "$tag" . ;;
		buildah) buildah build -f docker/Dockerfile --target "$name" "${build_args[@]}" -t "$tag" . ;;
		esac
	done
	say "done: $registry/regent:$version and $registry/regent-sidecar:$version"
	say "push: $builder push $registry/regent:$version; $builder push $registry/regent-sidecar:$version"
	;;
offline)
	CARGO="${CARGO:-cargo}"
	target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
	profile="${IMAGE_PROFILE:-release}"
	case "$profile" in
	release) profile_args=(--release) bin_dir="$target_dir/release" ;;
	debug) profile_args=() bin_dir="$target_dir/debug" ;;
	*) say "error: IMAGE_PROFILE=$profile: use release or debug"; exit 2 ;;
	esac
	say "building the $profile binaries (cargo build ${profile_args[*]} --locked -p regent-bundle-server -p regent-sidecar --bins)"
	"$CARGO" build "${profile_args[@]}" --locked -p regent-bundle-server -p regent-sidecar --bins
	out_root="$target_dir/images"
	tools/oci-layout.sh --binary "$bin_dir/regent-sidecar" --name regent-sidecar --version "$version" \
		--revision "$revision" --source "$source_url" --out "$out_root/regent-sidecar" \
		--description "Regent ext_authz sidecar: Rego policy for Envoy and Istio"
	# The offline regent image has the binary and its libraries only, no git: the authoring
	# commands (build, sign, verify, keygen, test, eval, check, rollout) and inject-webhook run
	# from it, but `regent serve` and `regent hook` run git; deploy the server from
	# docker/Dockerfile's `regent` target.
	tools/oci-layout.sh --binary "$bin_dir/regent" --name regent --version "$version" \
		--revision "$revision" --source "$source_url" --out "$out_root/regent" \
		--description "Regent policy authors' CLI (offline layout: no git, so not for regent serve)"
	say "done: OCI image layouts $out_root/regent-sidecar and $out_root/regent (tag $version)"
	say "push: skopeo copy oci:$out_root/regent-sidecar:$version docker://$registry/regent-sidecar:$version"
	say "      (regent's offline layout has no git: build the server image where a builder exists)"
	;;
*)
	say "error: unknown IMAGE_BUILDER=$builder (docker, podman, buildah or offline)"
	exit 2
	;;
esac
