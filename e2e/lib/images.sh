# Images without a registry (sourced by e2e/cluster): build a rootfs, wrap it as a docker-archive
# with e2e/lib/mkimage.py, import it into containerd's k8s.io namespace. Tarballs are cached in
# $IMAGE_CACHE and rebuilt only when their inputs change.

PAUSE_IMAGE=pgwarden.local/pause:1.0
POSTGRES_IMAGE=pgwarden.local/postgres:$PG_MAJOR
PGWARDEN_IMAGE=pgwarden.local/pgwarden:dev
# Bump to force a rebuild of the PostgreSQL rootfs when the recipe below changes.
POSTGRES_ROOTFS_RECIPE=2
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# The release binary of the project, static (see the Makefile's `release` target).
PGWARDEN_RELEASE_BINARY=${PGWARDEN_RELEASE_BINARY:-$PGWARDEN_CACHE/cargo-target/x86_64-unknown-linux-gnu/release/pgwarden}

mkimage() { python3 "$E2E_DIR/lib/mkimage.py" "$@"; }

image_build_pause() {
    local key out
    key=$(sha256sum "$E2E_DIR/images/pause.c" | cut -c1-12)
    out=$IMAGE_CACHE/pause-$key.tar
    if [ -f "$out" ]; then
        log "pause image: cached"
    else
        local root
        root=$(mktemp -d)
        gcc -static -O2 -s -o "$root/pause" "$E2E_DIR/images/pause.c"
        tar -C "$root" --numeric-owner --owner=0 --group=0 -cf "$root.tar" pause
        mkdir -p "$IMAGE_CACHE"
        mkimage --rootfs-tar "$root.tar" --tag "$PAUSE_IMAGE" --out "$out" --entrypoint '["/pause"]'
        rm -rf "$root" "$root.tar"
    fi
    ln -sf "$out" "$IMAGE_CACHE/pause.tar"
}

# debootstrap bookworm (minbase) with postgresql-$PG_MAJOR and pgBackRest; user postgres is uid/gid 999 as in the
# official image, created before the package so the package keeps it. No cluster is created.
postgres_rootfs() {
    local tarball=$IMAGE_CACHE/postgres-$PG_MAJOR-rootfs-r$POSTGRES_ROOTFS_RECIPE.tar
    if [ -f "$tarball" ]; then
        echo "$tarball"
        return 0
    fi
    local root=$PGWARDEN_CACHE/tmp/postgres-rootfs
    rm -rf "$root"
    mkdir -p "$root" "$IMAGE_CACHE"
    log "debootstrap bookworm into $root (about 2 min)" >&2
    debootstrap --variant=minbase bookworm "$root" "$DEBIAN_MIRROR" >"$PGWARDEN_CACHE/tmp/debootstrap.log" 2>&1 ||
        die "debootstrap failed; see $PGWARDEN_CACHE/tmp/debootstrap.log"
    chroot "$root" groupadd -r -g 999 postgres
    chroot "$root" useradd -r -g postgres -u 999 -d /var/lib/postgresql -s /bin/bash postgres
    mkdir -p "$root/etc/postgresql-common"
    echo "create_main_cluster = false" >"$root/etc/postgresql-common/createcluster.conf"
    # Nothing may start services inside the chroot.
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
    chmod +x "$root/usr/sbin/policy-rc.d"
    mount -t proc proc "$root/proc"
    (
        trap 'umount "$root/proc"' EXIT
        chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            "postgresql-$PG_MAJOR" "postgresql-client-$PG_MAJOR" pgbackrest ca-certificates >>"$PGWARDEN_CACHE/tmp/debootstrap.log" 2>&1
    ) || die "installing postgresql-$PG_MAJOR failed; see $PGWARDEN_CACHE/tmp/debootstrap.log"
    rm -f "$root/usr/sbin/policy-rc.d"
    chroot "$root" apt-get clean
    rm -rf "$root/var/lib/apt/lists"/* "$root/var/cache/apt"/*.bin "$root/usr/share/doc" "$root/usr/share/man"
    # The socket directory must be writable by postgres in a read-only-root-friendly place.
    mkdir -p "$root/var/run/postgresql"
    chroot "$root" chown postgres:postgres /var/run/postgresql /var/lib/postgresql
    tar -C "$root" --numeric-owner -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$root"
    echo "$tarball"
}

image_build_postgres() {
    local rootfs out
    rootfs=$(postgres_rootfs)
    out=$IMAGE_CACHE/postgres-$PG_MAJOR-r$POSTGRES_ROOTFS_RECIPE.image.tar
    if [ -f "$out" ]; then
        log "postgres image: cached"
    else
        mkimage --rootfs-tar "$rootfs" --tag "$POSTGRES_IMAGE" --out "$out" --user 999:999 \
            --env "PATH=/usr/lib/postgresql/$PG_MAJOR/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
            --env "PGDATA=/var/lib/postgresql/data" --cmd '["postgres"]'
    fi
    ln -sf "$out" "$IMAGE_CACHE/postgres.tar"
}

# The same contents as the Dockerfile's runtime stage: e2e/images/pgwarden-rootfs (passwd, group,
# tmp) plus the static release binary. No libc of its own, which proves the binary is static.
image_build_pgwarden() {
    [ -x "$PGWARDEN_RELEASE_BINARY" ] || make -C "$REPO_DIR" release
    local root key out
    root=$(mktemp -d)
    cp -a "$E2E_DIR/images/pgwarden-rootfs/." "$root/"
    mkdir -p "$root/usr/local/bin" "$root/tmp"
    chmod 1777 "$root/tmp"
    cp "$PGWARDEN_RELEASE_BINARY" "$root/usr/local/bin/pgwarden"
    tar -C "$root" --numeric-owner --owner=0 --group=0 --sort=name --mtime=@0 -cf "$root.tar" .
    key=$(sha256sum "$root.tar" | cut -c1-12)
    out=$IMAGE_CACHE/pgwarden-$key.image.tar
    [ -f "$out" ] || mkimage --rootfs-tar "$root.tar" --tag "$PGWARDEN_IMAGE" --out "$out" \
        --user 65532:65532 --entrypoint '["/usr/local/bin/pgwarden"]'
    rm -rf "$root" "$root.tar"
    ln -sf "$out" "$IMAGE_CACHE/pgwarden.tar"
}

ctr_k8s() { ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }

image_import() {
    local name=$1 tarball=$IMAGE_CACHE/$1.tar
    [ -f "$tarball" ] || die "image $name is not built (e2e/cluster image build $name)"
    ctr_k8s images import --no-unpack=false "$tarball" >/dev/null
    log "imported $name ($(readlink -f "$tarball" | xargs basename))"
}

image_cmd() {
    local action=${1:-} name=${2:-all} names
    case "$name" in
    all) names="pause postgres pgwarden" ;;
    pause | postgres | pgwarden) names=$name ;;
    *) die "unknown image '$name' (pause | postgres | pgwarden | all)" ;;
    esac
    case "$action" in
    build) for n in $names; do
        phase "image build $n"
        "image_build_$n"
    done ;;
    import) for n in $names; do
        phase "image import $n"
        image_import_everywhere "$n"
    done ;;
    *) die "usage: e2e/cluster image build|import pause|postgres|pgwarden|all" ;;
    esac
    phase_end
}
