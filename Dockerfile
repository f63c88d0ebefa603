# syntax=docker/dockerfile:1
# Build: a statically linked pgwarden (the gnu target with crt-static; the explicit --target keeps
# build scripts and proc macros dynamic), so the same binary runs in any PostgreSQL image it is
# copied into (Debian, Alpine/musl, distroless).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked --target x86_64-unknown-linux-gnu \
        --bin pgwarden --bin kubectl-pgwarden

# Runtime: no libc, no shell, nothing but the binary and a passwd entry for the non-root user.
# e2e/cluster's `image build pgwarden` assembles exactly these contents without Docker.
FROM scratch AS runtime
COPY e2e/images/pgwarden-rootfs/ /
COPY --from=build --chmod=1777 /tmp /tmp
COPY --from=build /src/target/x86_64-unknown-linux-gnu/release/pgwarden /usr/local/bin/pgwarden
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/pgwarden"]
