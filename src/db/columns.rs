//! Reading a row of any dialect by column name: the one set of sqlx bounds the row
//! mappers of every store would otherwise repeat.

use crate::core::error::SentriError;

use super::db_err;

/// A value every enabled dialect decodes (`String`, `i64` and their `Option`s are the
/// ones sentri's tables use).
pub(crate) trait Decodable: Sized + FromPg + FromMySql + FromSqlite {}

impl<T: FromPg + FromMySql + FromSqlite> Decodable for T {}

macro_rules! dialect_decode {
    ($feature:literal, $name:ident, $db:ty) => {
        /// Decodes from this dialect when its feature is on (anything, when it is off).
        #[cfg(feature = $feature)]
        pub(crate) trait $name: for<'r> sqlx::Decode<'r, $db> + sqlx::Type<$db> {}
        #[cfg(feature = $feature)]
        impl<T: for<'r> sqlx::Decode<'r, $db> + sqlx::Type<$db>> $name for T {}
        /// Decodes from this dialect when its feature is on (anything, when it is off).
        #[cfg(not(feature = $feature))]
        pub(crate) trait $name {}
        #[cfg(not(feature = $feature))]
        impl<T> $name for T {}
    };
}

dialect_decode!("postgres", FromPg, sqlx::Postgres);
dialect_decode!("mysql", FromMySql, sqlx::MySql);
dialect_decode!("sqlite", FromSqlite, sqlx::Sqlite);

/// A row of any enabled dialect, read by column name.
pub(crate) trait Columns {
    /// Column `name` as `T`; a missing column or a wrong type is `SERVICE_UNAVAILABLE`.
    fn col<T: Decodable>(&self, name: &str) -> Result<T, SentriError>;
}

macro_rules! columns_of {
    ($feature:literal, $row:ty) => {
        #[cfg(feature = $feature)]
        impl Columns for $row {
            fn col<T: Decodable>(&self, name: &str) -> Result<T, SentriError> {
                sqlx::Row::try_get(self, name).map_err(db_err)
            }
        }
    };
}

columns_of!("postgres", sqlx::postgres::PgRow);
columns_of!("mysql", sqlx::mysql::MySqlRow);
columns_of!("sqlite", sqlx::sqlite::SqliteRow);

/// A record read from one row of any enabled dialect.
pub(crate) trait FromRow: Sized {
    /// Maps one row.
    fn from_row(row: &impl Columns) -> Result<Self, SentriError>;
}

impl super::Database {
    /// Every row of a select, mapped (an idempotent read: retried like
    /// [`read`](super::Database::read)).
    pub(crate) async fn fetch_all<T: FromRow>(
        &self,
        stmt: &sea_query::SelectStatement,
    ) -> Result<Vec<T>, SentriError> {
        let (sql, values) = self.build(stmt);
        self.read(|| async {
            super::on_pool!(self, pool => {
                let rows = sqlx::query_with(sqlx::AssertSqlSafe(sql.clone()), values.clone())
                    .fetch_all(pool)
                    .await
                    .map_err(db_err)?;
                rows.iter().map(T::from_row).collect()
            })
        })
        .await
    }

    /// The first row of a select, mapped, if any.
    pub(crate) async fn fetch_first<T: FromRow>(
        &self,
        stmt: &sea_query::SelectStatement,
    ) -> Result<Option<T>, SentriError> {
        let mut stmt = stmt.clone();
        stmt.limit(1);
        Ok(self.fetch_all(&stmt).await?.into_iter().next())
    }
}
