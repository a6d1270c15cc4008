# syntax=docker/dockerfile:1
#
# The capture-daemon image: capture-daemon and capture-collector, release builds, on a
# distroless runtime that holds the two binaries, glibc and libgcc, and no shell.
#
# The build installs its toolchain exactly as `cargo xtask build-ebpf` does
# (xtask/src/setup.rs): nightly with rust-src for the eBPF programs, the LLVM 22 development
# packages, and bpf-linker 0.13.0 built against that LLVM. The tests of xtask/src/image.rs
# hold these pins to setup.rs, and the binary paths to the chart and the kind manifests.
#
#   docker build -t capture-daemon:dev .
#
# The chart runs /usr/local/bin/capture-daemon as uid 0 with four capabilities (see
# charts/capture-daemon/README.md); the image's own user is nonroot, which is what the
# collector runs as.

ARG RUST_VERSION=1.95
ARG LLVM_VERSION=22
ARG BPF_LINKER_VERSION=0.13.0
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM rust:${RUST_VERSION}-bookworm AS toolchain
ARG LLVM_VERSION
ARG BPF_LINKER_VERSION
# bpf-linker links against LLVM; its major version must match nightly rustc's LLVM.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        llvm-${LLVM_VERSION}-dev libpolly-${LLVM_VERSION}-dev libzstd-dev zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*
# The eBPF programs are built for bpfel-unknown-none with -Z build-std=core.
RUN rustup toolchain install nightly --profile minimal --component rust-src
RUN env LLVM_PREFIX=/usr/lib/llvm-${LLVM_VERSION} \
        "LLVM_SYS_${LLVM_VERSION}1_PREFIX=/usr/lib/llvm-${LLVM_VERSION}" \
    cargo install bpf-linker --version ${BPF_LINKER_VERSION} \
        --no-default-features --features llvm-${LLVM_VERSION}

FROM toolchain AS builder
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p capture-daemon -p capture-collector \
    && mkdir -p /out \
    && cp target/release/capture-daemon target/release/capture-collector /out/

FROM ${RUNTIME_IMAGE} AS runtime
COPY --from=builder /out/capture-daemon /out/capture-collector /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/capture-daemon"]
