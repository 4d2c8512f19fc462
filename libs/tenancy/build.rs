//! Rebuilds this crate when a migration is added or changed: the migrations
//! are embedded by `sqlx::migrate!`, which cannot see new files on its own.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
