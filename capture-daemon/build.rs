//! Builds the kernel programs (`capture-ebpf`) for `bpfel-unknown-none` with nightly and
//! bpf-linker, into `OUT_DIR/capture`, which `src/ebpf` embeds. aya-build sets the programs'
//! `bpf_target_arch` from the arch being built for (`CARGO_CFG_TARGET_ARCH`), so a
//! `--target aarch64-unknown-linux-gnu` build embeds the aarch64 programs (`cargo xtask cross`
//! checks it). `AYA_BUILD_SKIP=1` writes an
//! empty object instead so `cargo check`/`clippy` work without the BPF toolchain; a daemon built
//! that way refuses to start with a message saying so.
use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or_else(|| anyhow!("OUT_DIR not set"))?);
    let object = out_dir.join("capture");
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
        fs::write(&object, []).context("writing the empty eBPF placeholder")?;
        return Ok(());
    }
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .iter()
        .find(|p| p.name.as_str() == "capture-ebpf")
        .ok_or_else(|| anyhow!("capture-ebpf is not in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("capture-ebpf manifest has no parent"))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .context(
        "building the eBPF programs failed; `cargo xtask build-ebpf` installs what they need \
         (nightly rust-src, bpf-linker with LLVM 22), or set AYA_BUILD_SKIP=1 to check without them",
    )
}
