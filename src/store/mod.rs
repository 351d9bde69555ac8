//! Storage: users and sessions on PostgreSQL, MySQL/MariaDB and SQLite.
