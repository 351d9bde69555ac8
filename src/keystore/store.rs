//! The key store's statements (sea-query, three dialects).

use sea_query::{Expr, ExprTrait, Query};

use super::schema::{
    ALGORITHM, CREATED_AT, GENERATION, KEYS, KID, PRIVATE_KEY, PUBLIC_JWK, PUBLISH_FROM, RETIRE_AT,
    REVOKED_AT, SIGN_FROM,
};
use crate::core::error::SentriError;
use crate::db::{Database, db_err, is_unique_violation, on_pool};

const COLUMNS: [&str; 10] = [
    KID,
    GENERATION,
    ALGORITHM,
    PRIVATE_KEY,
    PUBLIC_JWK,
    CREATED_AT,
    PUBLISH_FROM,
    SIGN_FROM,
    RETIRE_AT,
    REVOKED_AT,
];

/// One stored key; `private_key` is sealed (never the plaintext).
#[derive(Clone)]
pub(crate) struct KeyRow {
    pub(crate) kid: String,
    pub(crate) generation: i64,
    pub(crate) algorithm: String,
    pub(crate) private_key: String,
    pub(crate) public_jwk: String,
    pub(crate) created_at: i64,
    pub(crate) publish_from: i64,
    pub(crate) sign_from: i64,
    pub(crate) retire_at: Option<i64>,
    pub(crate) revoked_at: Option<i64>,
}

fn row_of<R>(row: &R) -> Result<KeyRow, SentriError>
where
    R: sqlx::Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(KeyRow {
        kid: row.try_get(KID).map_err(db_err)?,
        generation: row.try_get(GENERATION).map_err(db_err)?,
        algorithm: row.try_get(ALGORITHM).map_err(db_err)?,
        private_key: row.try_get(PRIVATE_KEY).map_err(db_err)?,
        public_jwk: row.try_get(PUBLIC_JWK).map_err(db_err)?,
        created_at: row.try_get(CREATED_AT).map_err(db_err)?,
        publish_from: row.try_get(PUBLISH_FROM).map_err(db_err)?,
        sign_from: row.try_get(SIGN_FROM).map_err(db_err)?,
        retire_at: row.try_get(RETIRE_AT).map_err(db_err)?,
        revoked_at: row.try_get(REVOKED_AT).map_err(db_err)?,
    })
}

impl Database {
    /// Every stored key, oldest generation first.
    pub(crate) async fn signing_key_rows(&self) -> Result<Vec<KeyRow>, SentriError> {
        let stmt = Query::select()
            .columns(COLUMNS)
            .from(KEYS)
            .order_by(GENERATION, sea_query::Order::Asc)
            .to_owned();
        let (sql, values) = self.build(&stmt);
        self.read(|| async {
            on_pool!(self, pool => {
                let rows = sqlx::query_with(sqlx::AssertSqlSafe(sql.clone()), values.clone())
                    .fetch_all(pool)
                    .await
                    .map_err(db_err)?;
                rows.iter().map(row_of).collect()
            })
        })
        .await
    }

    /// Inserts a key; `false` when its generation is taken (another instance won).
    pub(crate) async fn insert_signing_key(&self, row: &KeyRow) -> Result<bool, SentriError> {
        let stmt = Query::insert()
            .into_table(KEYS)
            .columns(COLUMNS)
            .values([
                Expr::val(row.kid.as_str()),
                Expr::val(row.generation),
                Expr::val(row.algorithm.as_str()),
                Expr::val(row.private_key.as_str()),
                Expr::val(row.public_jwk.as_str()),
                Expr::val(row.created_at),
                Expr::val(row.publish_from),
                Expr::val(row.sign_from),
                Expr::val(row.retire_at),
                Expr::val(row.revoked_at),
            ])
            .map_err(SentriError::internal)?
            .to_owned();
        // Instances creating the same generation at once: one insert wins, the others hit
        // the unique key (`false`). MariaDB may also answer a deadlock between the
        // duplicate inserts; the statement was rolled back, so it is run again.
        let built = self.build(&stmt);
        let attempt = || async {
            Ok(match self.try_exec(built.clone()).await? {
                Ok(_) => Ok(true),
                Err(err) if is_unique_violation(&err) => Ok(false),
                Err(err) => Err(err),
            })
        };
        self.retrying_transient(attempt, db_err).await
    }

    /// Records when a key stops being published (informational; the plan decides).
    pub(crate) async fn set_signing_key_retire_at(
        &self,
        kid: &str,
        at: i64,
    ) -> Result<(), SentriError> {
        let stmt = Query::update()
            .table(KEYS)
            .value(RETIRE_AT, at)
            .and_where(Expr::col(KID).eq(kid))
            .to_owned();
        self.exec(self.build(&stmt)).await.map(|_| ())
    }

    /// Marks a key revoked; `false` when it is unknown or already revoked.
    pub(crate) async fn revoke_signing_key(&self, kid: &str, at: i64) -> Result<bool, SentriError> {
        let stmt = Query::update()
            .table(KEYS)
            .value(REVOKED_AT, at)
            .and_where(Expr::col(KID).eq(kid))
            .and_where(Expr::col(REVOKED_AT).is_null())
            .to_owned();
        Ok(self.exec(self.build(&stmt)).await? > 0)
    }
}
