//! `weakalign devices`: the devices this binary can use here ([`crate::device::available`]).

use anyhow::Result;

/// Prints one line per device (and what is not built in).
pub fn run() -> Result<i32> {
    for line in crate::device::available() {
        println!("{line}");
    }
    Ok(0)
}
