//! `sqlx::migrate!` embeds `migrations/` when the crate compiles; Cargo does not know that, so a
//! migration added or changed on its own would leave a build without it. This tells Cargo.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
