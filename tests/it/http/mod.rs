//! The HTTP surface through the real router (`tower::ServiceExt::oneshot`), on every
//! configured database.

mod flows;
mod guards;
mod keys;
mod sessions;
