//! The syscall-number and `struct pt_regs` tables of `capture_common::arch` checked against
//! the kernels they describe, not against what someone typed:
//! - aarch64: the numbers against the arm64 kernel headers of Debian's
//!   `linux-libc-dev-arm64-cross` (`asm-generic/unistd.h`, expanded by
//!   `aarch64-linux-gnu-gcc -E`), the offsets against the BTF of Debian's arm64 cloud kernels
//!   (bookworm's 6.1, bullseye's 5.10; `cargo xtask cross` fetches them into
//!   `target/arm64/kernels`), read out of their `vmlinuz`;
//! - x86_64 (on x86_64 hosts): the numbers against the host's `linux-libc-dev`, the offsets
//!   against the running kernel's BTF.

use std::{
    io::{Read as _, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use capture_common::arch::{aarch64, sock_common, x86_64};

use super::btf::{Btf, Shape};
use super::programs::{KernelLayout, THREAD_SIZE, thread_size};

/// (`__NR_` name, value in the table) for every syscall number of an `arch` module.
macro_rules! syscalls {
    ($arch:ident) => {
        [
            ("read", $arch::READ),
            ("write", $arch::WRITE),
            ("close", $arch::CLOSE),
            ("readv", $arch::READV),
            ("writev", $arch::WRITEV),
            ("sendfile", $arch::SENDFILE),
            ("connect", $arch::CONNECT),
            ("accept", $arch::ACCEPT),
            ("sendto", $arch::SENDTO),
            ("recvfrom", $arch::RECVFROM),
            ("sendmsg", $arch::SENDMSG),
            ("recvmsg", $arch::RECVMSG),
            ("accept4", $arch::ACCEPT4),
        ]
    };
}

/// Under CI a missing input fails the test; elsewhere the test says what is missing and
/// passes without checking (`cargo xtask cross` provides everything).
fn missing(what: &str) -> bool {
    assert!(
        !capture_test_support::running_in_ci(),
        "{what} (under CI=true; `cargo xtask cross` installs and fetches it)"
    );
    eprintln!("SKIPPED: {what}; run `cargo xtask cross`");
    true
}

/// `__NR_<name>` for each name, as the C preprocessor `cc` expands it from `<asm/unistd.h>`.
fn header_numbers(cc: &str, names: &[&str]) -> Vec<i64> {
    let mut source = String::from("#include <asm/unistd.h>\n");
    for name in names {
        source.push_str(&format!("capture_nr_{name} = __NR_{name}\n"));
    }
    let mut child = Command::new(cc)
        .args(["-E", "-P", "-x", "c", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {cc}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(source.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{cc} -E failed");
    let text = String::from_utf8(out.stdout).unwrap();
    names
        .iter()
        .map(|name| {
            let prefix = format!("capture_nr_{name} = ");
            let value = text
                .lines()
                .find_map(|l| l.trim().strip_prefix(prefix.as_str()))
                .unwrap_or_else(|| panic!("{cc} gave no __NR_{name}:\n{text}"));
            let value = value.trim().trim_start_matches('(').trim_end_matches(')');
            value
                .parse()
                .unwrap_or_else(|_| panic!("__NR_{name} expands to {value:?}, not a number"))
        })
        .collect()
}

fn check_numbers(cc: &str, table: &[(&str, i64)]) {
    let names: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
    let found = header_numbers(cc, &names);
    let expected: Vec<(&str, i64)> = names.iter().copied().zip(found).collect();
    assert_eq!(
        table,
        expected.as_slice(),
        "syscall numbers (table vs {cc})"
    );
}

/// The `struct sock_common` offsets the programs read addresses and ports at.
fn check_sock_common(btf: &Btf<'_>, kernel: &str) {
    let found: Vec<(&str, u64)> = [
        "skc_daddr",
        "skc_rcv_saddr",
        "skc_dport",
        "skc_num",
        "skc_family",
        "skc_state",
        "skc_v6_daddr",
        "skc_v6_rcv_saddr",
    ]
    .into_iter()
    .map(|m| (m, u64::from(btf.member("sock_common", m).unwrap().offset)))
    .collect();
    let table = [
        ("skc_daddr", sock_common::DADDR),
        ("skc_rcv_saddr", sock_common::RCV_SADDR),
        ("skc_dport", sock_common::DPORT),
        ("skc_num", sock_common::NUM),
        ("skc_family", sock_common::FAMILY),
        ("skc_state", sock_common::STATE),
        ("skc_v6_daddr", u64::from(sock_common::V6_DADDR)),
        ("skc_v6_rcv_saddr", u64::from(sock_common::V6_RCV_SADDR)),
    ];
    assert_eq!(
        table.as_slice(),
        found.as_slice(),
        "{kernel}: struct sock_common"
    );
}

fn int(size: u32, signed: bool) -> Shape {
    Shape::Int { size, signed }
}

fn kernels_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/arm64/kernels")
}

/// Each unpacked arm64 kernel package: (package name, its `boot/vmlinuz-*`).
fn arm64_kernels() -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(kernels_dir()) else {
        return Vec::new();
    };
    let mut found: Vec<(String, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().ends_with(".partial"))
        .filter_map(|e| {
            let vmlinuz = std::fs::read_dir(e.path().join("boot"))
                .ok()?
                .filter_map(Result::ok)
                .map(|b| b.path())
                .find(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
                })?;
            Some((e.file_name().to_string_lossy().into_owned(), vmlinuz))
        })
        .collect();
    found.sort();
    found
}

/// The kernel's raw arm64 `Image` (Debian ships it uncompressed as `vmlinuz`, an EFI-stub
/// Image; a gzip'd one is decompressed) and the page size its header declares.
fn arm64_image(vmlinuz: &Path) -> (Vec<u8>, u32) {
    let data = std::fs::read(vmlinuz).unwrap();
    let image = if data.starts_with(&[0x1f, 0x8b]) {
        let mut image = Vec::new();
        flate2::read::GzDecoder::new(data.as_slice())
            .read_to_end(&mut image)
            .unwrap_or_else(|e| panic!("{}: bad gzip: {e}", vmlinuz.display()));
        image
    } else {
        data
    };
    // Documentation/arch/arm64/booting.rst: magic "ARM\x64" at 0x38; flags at 0x18, bits
    // 1-2 the page size (1: 4K, 2: 16K, 3: 64K).
    assert_eq!(
        image.get(0x38..0x3c),
        Some(b"ARM\x64".as_slice()),
        "{} is not an arm64 Image",
        vmlinuz.display()
    );
    let flags = u64::from_le_bytes(image[0x18..0x20].try_into().unwrap());
    let page = match (flags >> 1) & 3 {
        1 => 4096,
        2 => 16384,
        3 => 65536,
        other => panic!("{}: page size field {other}", vmlinuz.display()),
    };
    (image, page)
}

/// The kernel's BTF, found in its image (the `.BTF` section `/sys/kernel/btf/vmlinux`
/// shows): the first little-endian BTF header (magic 0xeb9f, version 1, flags 0, 24-byte
/// header) that parses and has `struct pt_regs`.
fn btf_of_image(image: &[u8], package: &str) -> Vec<u8> {
    const HEADER: [u8; 8] = [0x9f, 0xeb, 1, 0, 24, 0, 0, 0];
    let mut at = 0;
    while let Some(pos) = image[at..].windows(HEADER.len()).position(|w| w == HEADER) {
        let start = at + pos;
        let blob = &image[start..];
        if Btf::parse(blob).is_ok_and(|b| b.struct_layout("pt_regs").is_ok()) {
            let u32_at = |o: usize| u32::from_le_bytes(blob[o..o + 4].try_into().unwrap());
            let end = 24 + (u32_at(8) + u32_at(12)).max(u32_at(16) + u32_at(20));
            return blob[..end as usize].to_vec();
        }
        at = start + 1;
    }
    panic!("no BTF with struct pt_regs in {package}'s image");
}

#[test]
fn aarch64_table_matches_debian_arm64() {
    let cc = "aarch64-linux-gnu-gcc";
    let unistd = Path::new("/usr/aarch64-linux-gnu/include/asm-generic/unistd.h");
    if !unistd.exists() && missing(&format!("{} is missing", unistd.display())) {
        return;
    }
    if Command::new(cc).arg("--version").output().is_err() && missing(&format!("{cc} is missing")) {
        return;
    }
    check_numbers(cc, &syscalls!(aarch64));

    let kernels = arm64_kernels();
    // bookworm's 6.1 and bullseye's 5.10, the oldest kernel supported.
    for version in ["6.1.", "5.10."] {
        if !kernels
            .iter()
            .any(|(p, _)| p.starts_with(&format!("linux-image-{version}")))
            && missing(&format!(
                "no linux-image-{version}*-arm64 under {}",
                kernels_dir().display()
            ))
        {
            return;
        }
    }
    for (package, vmlinuz) in &kernels {
        let (image, page) = arm64_image(vmlinuz);
        let data = btf_of_image(&image, package);
        let btf = Btf::parse(&data).unwrap();
        let nr = btf.member("pt_regs", "syscallno").unwrap();
        assert_eq!(nr.offset as usize, aarch64::NR, "{package}: syscallno");
        assert_eq!(
            nr.ty,
            if aarch64::NR_IS_I32 {
                int(4, true)
            } else {
                int(8, false)
            },
            "{package}: syscallno's type"
        );
        let orig_x0 = btf.member("pt_regs", "orig_x0").unwrap();
        assert_eq!(orig_x0.offset as usize, aarch64::ARGS[0], "{package}");
        assert_eq!(orig_x0.ty, int(8, false), "{package}: orig_x0's type");
        // regs[31] sits in an anonymous union with `struct user_pt_regs user_regs`.
        let regs = btf.member("pt_regs", "regs").unwrap();
        assert_eq!(
            regs.ty,
            Shape::Array {
                elem: Box::new(int(8, false)),
                len: 31
            },
            "{package}: regs"
        );
        for (i, offset) in aarch64::ARGS.iter().enumerate().skip(1) {
            assert_eq!(*offset, regs.offset as usize + 8 * i, "{package}: x{i}");
        }
        // The programs find pt_regs at the top of the task's stack, with no padding above it
        // on arm64 (`task_pt_regs`): 16 KiB with 4K or 16K pages and no KASAN (which the
        // layout does not handle), one page with 64K pages and vmapped stacks.
        assert!(
            !btf.has_function("kasan_report").unwrap(),
            "{package} has KASAN: its stack is not {THREAD_SIZE} bytes"
        );
        let task = btf.struct_layout("task_struct").unwrap();
        assert!(
            task.offset("task_struct", "stack_vm_area").is_ok(),
            "{package}: Debian's arm64 kernels have CONFIG_VMAP_STACK"
        );
        let size = btf.struct_layout("pt_regs").unwrap().size;
        assert!(
            size as usize >= aarch64::NR + 4,
            "{package}: pt_regs is {size} bytes"
        );
        let layout = KernelLayout::from_btf_for(&data, true, page).unwrap();
        assert_eq!(layout.stack_to_regs, THREAD_SIZE - size, "{package}");
        // The same kernel built with 64K pages (as RHEL's is) has one-page stacks.
        let layout_64k = KernelLayout::from_btf_for(&data, true, 65536).unwrap();
        assert_eq!(layout_64k.stack_to_regs, 65536 - size, "{package}");
        assert_eq!(layout.socket_sk, 24, "{package}: socket.sk");
        check_sock_common(&btf, package);
        assert!(layout.task_stack > 0, "{package}: task_struct.stack");
        eprintln!(
            "{package}: {page}-byte pages, syscallno at {}, orig_x0 at {}, regs at {}, \
             pt_regs {size} bytes, at stack + {}",
            nr.offset, orig_x0.offset, regs.offset, layout.stack_to_regs
        );
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn x86_64_table_matches_host_headers_and_kernel() {
    check_numbers("cc", &syscalls!(x86_64));
    let data = std::fs::read("/sys/kernel/btf/vmlinux").unwrap();
    let btf = Btf::parse(&data).unwrap();
    let orig_ax = btf.member("pt_regs", "orig_ax").unwrap();
    assert_eq!(orig_ax.offset as usize, x86_64::NR);
    assert_eq!(
        orig_ax.ty,
        if x86_64::NR_IS_I32 {
            int(4, true)
        } else {
            int(8, false)
        }
    );
    check_sock_common(&btf, "this kernel");
    // 21 registers, at the top of a 16 KiB stack.
    let layout = KernelLayout::from_btf(&data).unwrap();
    assert_eq!(layout.stack_to_regs, THREAD_SIZE - 21 * 8);
    for (reg, offset) in ["di", "si", "dx", "r10", "r8", "r9"]
        .into_iter()
        .zip(x86_64::ARGS)
    {
        let member = btf.member("pt_regs", reg).unwrap();
        assert_eq!((reg, member.offset as usize), (reg, offset));
        assert_eq!(member.ty, int(8, false), "{reg}");
    }
}

/// arm64's THREAD_SHIFT: 14 unless vmapped stacks need a whole larger page; x86_64's is 14.
#[test]
fn stack_size_follows_arm64_pages() {
    let cases = [
        ((false, 4096, true), 16384),
        ((false, 65536, true), 16384),
        ((true, 4096, true), 16384),
        ((true, 16384, true), 16384),
        ((true, 65536, true), 65536),
        ((true, 65536, false), 16384),
    ];
    for ((arm64, page, vmap), expected) in cases {
        assert_eq!(
            thread_size(arm64, page, vmap),
            expected,
            "arm64 {arm64}, page {page}, vmap {vmap}"
        );
    }
}
