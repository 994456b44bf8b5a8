# Vantage image for machines that reach an image registry. Without one, use
# `cargo xtask docker`: it builds the same FROM scratch image from a locally
# built static binary.
#
#   docker build -t vantage:latest .
#
# Stage 1 builds a static (musl) binary with the eBPF object embedded: the
# agent's build.rs builds agent-ebpf with the nightly toolchain and
# bpf-linker, whatever the userspace target.
FROM rust:1.95-bookworm AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
RUN rustup target add x86_64-unknown-linux-musl \
 && rustup toolchain install nightly --profile minimal --component rust-src \
 && cargo install bpf-linker --version 0.10.0 --locked
WORKDIR /src
COPY . .
RUN cargo build --release --locked --target x86_64-unknown-linux-musl -p vantage \
 && install -m 0755 target/x86_64-unknown-linux-musl/release/vantage /vantage

# Stage 2: nothing but the binary. It runs as root only to hold the five
# capabilities docker-compose.yml grants; everything else is dropped there.
FROM scratch
COPY --from=builder /vantage /vantage
ENV HOST_PROC=/host/proc HOST_SYS=/host/sys HOST_ROOT=/rootfs DATA_DIR=/var/lib/vantage
LABEL org.opencontainers.image.title="vantage" \
      org.opencontainers.image.description="Low-overhead host agent"
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s CMD ["/vantage", "probe"]
ENTRYPOINT ["/vantage"]
CMD ["run"]
