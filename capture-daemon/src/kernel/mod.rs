//! The kernel side, seen from user space: loading and attaching the eBPF programs and keeping
//! their target set ([`programs`]), turning ring-buffer records into events ([`intake`]),
//! resolving `--target-cgroup`/`--target-pid` to cgroup ids ([`targets`]), and naming the
//! sockets of connections first seen mid-stream from `/proc` ([`procnet`]).

#[cfg(test)]
mod arch_check;
pub mod btf;
pub mod intake;
pub mod procnet;
pub mod programs;
pub mod targets;
