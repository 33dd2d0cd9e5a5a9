//! `cargo test -p exercises [filter]`: grades your attempts case by case through
//! libtest (filters such as `ttl_lru::l1` work), each case isolated with a deadline.

fn main() {
    harness::libtest::grade_main(exercises::cases)
}
