//! Rebuild when the `bpf-linker` on PATH changes: it is an undeclared input of the link step.
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
