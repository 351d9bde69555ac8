//! Scale-out (issue #18): the database key store shared by several instances, and
//! password hashes that upgrade themselves (Argon2id).

#[cfg(feature = "argon2")]
mod argon2;
mod keystore;
mod processes;
