//! Password hashing (bcrypt on the blocking pool).
