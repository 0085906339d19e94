//! Building this crate depends on the `bpf-linker` binary, which cargo cannot express: rebuild
//! whenever it changes (as the aya template does), and fail with a hint when it is missing.
use which::which;

fn main() {
    match which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(_) => {
            println!(
                "cargo::error=bpf-linker not found on PATH: run `cargo xtask build` once to set up the eBPF toolchain"
            );
        }
    }
}
