mod common;
mod db;
mod store;
