//! The kernel programs live in `main.rs` and build only for `bpfel-unknown-none`. This empty
//! library lets `capture-daemon` name the crate as a build dependency, so cargo rebuilds the
//! daemon when the programs change.
#![no_std]
