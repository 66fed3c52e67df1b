//! The fleet builds: `scripts/build-agents.sh` makes static musl agents for
//! x86_64 and aarch64, and the aarch64 one runs (`--sysinfo`) under
//! qemu-aarch64-static. The test builds with KATTILA_DIST_PROFILE=quick
//! (unoptimised, same target and linking) so it fits in CI; a binary already
//! in target/dist-quick is reused when it is newer than every agent source
//! file (tests/util/dist.rs). Release sizes are measured by
//! scripts/bench-agent.sh. Skips with the reason printed when the Rust
//! target, the cross C toolchain or qemu is missing.

mod util;

use std::path::Path;
use std::process::Command;

use util::dist::fleet_binary;

fn check_sysinfo(stdout: &str) {
    let v: serde_json::Value = serde_json::from_str(stdout).expect("--sysinfo prints JSON");
    assert!(v["interfaces"].as_array().unwrap().iter().any(|i| i["name"] == "lo"));
    assert!(!v["routes"].as_array().unwrap().is_empty());
    assert!(v["system"]["uptime_secs"].as_u64() > Some(0));
}

/// Whether `bin` is a static ELF64 executable: no PT_INTERP program header
/// (no dynamic loader) and no PT_DYNAMIC segment needing shared libraries.
fn is_static(bin: &Path) -> bool {
    let b = std::fs::read(bin).unwrap();
    assert_eq!(&b[..5], b"\x7fELF\x02", "an ELF64 file");
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(b[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).all(|i| {
        let p_type = u32::from_le_bytes(b[phoff + i * phentsize..][..4].try_into().unwrap());
        p_type != 3 // PT_INTERP
    })
}

#[test]
fn static_x86_64_agent_runs_sysinfo() {
    let bin = match fleet_binary("x86_64", &[]) {
        Ok(b) => b,
        Err(reason) => {
            return kattila_testsupport::skip("static_x86_64_agent_runs_sysinfo", &reason)
        }
    };
    assert!(is_static(&bin), "{} is static", bin.display());
    let size = std::fs::metadata(&bin).unwrap().len();
    eprintln!("{}: {size} bytes", bin.display());
    let out = Command::new(&bin).arg("--sysinfo").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    check_sysinfo(&String::from_utf8_lossy(&out.stdout));
}

#[test]
fn static_aarch64_agent_runs_sysinfo_under_qemu() {
    let bin = match fleet_binary("aarch64", &["qemu-aarch64-static"]) {
        Ok(b) => b,
        Err(reason) => {
            return kattila_testsupport::skip(
                "static_aarch64_agent_runs_sysinfo_under_qemu",
                &reason,
            )
        }
    };
    assert!(is_static(&bin), "{} is static", bin.display());
    let out = Command::new("qemu-aarch64-static").arg(&bin).arg("--sysinfo").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    check_sysinfo(&String::from_utf8_lossy(&out.stdout));
    let version = Command::new("qemu-aarch64-static").arg(&bin).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("kattila-agent "));
}
