//! The `weakalign` command-line tool.

fn main() {
    println!("weakalign {}", env!("CARGO_PKG_VERSION"));
}
